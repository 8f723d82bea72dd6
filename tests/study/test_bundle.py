"""The bundle format: texts kept as digests and checked on the way back, sealed files,
whole-or-nothing runs, run IDs remapped."""

from __future__ import annotations

import pandas as pd
import pytest

from xlinfluence.study import bundle
from xlinfluence.study.export import remap


def _manifest(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "id": [f"en-{i}" for i in range(len(texts))], "language": "en", "label": 0,
        "pair_id": [f"p{i}" for i in range(len(texts))], "text": texts, "text_pair": None,
    })  # fmt: skip


def test_texts_leave_as_digests_and_come_back_only_unchanged():
    original = _manifest(["a sentence", "another one"])
    digested = bundle.digest_manifest(original)
    assert "text" not in digested.columns and "text_pair" not in digested.columns
    assert digested[bundle.TEXT_DIGEST].str.len().eq(64).all()
    restored = bundle.restore_texts(digested, original.iloc[::-1], "training")
    assert restored["text"].tolist() == ["a sentence", "another one"]  # the bundle's order

    edited = _manifest(["a sentence", "another one, corrected"])
    with pytest.raises(bundle.BundleError, match="1 of the bundle's training texts differ"):
        bundle.restore_texts(digested, edited, "training")
    with pytest.raises(bundle.BundleError, match="lacks 1 of the bundle's training rows"):
        bundle.restore_texts(digested, original.iloc[:1], "training")


def test_a_pair_and_its_halves_have_different_digests():
    assert bundle.text_digest("a", "b") != bundle.text_digest("a b", None)
    assert bundle.text_digest("a", None) == bundle.text_digest("a", float("nan"))


def test_a_run_is_added_whole_or_not_at_all(tmp_path):
    root = tmp_path / "b"
    staged = tmp_path / "staged"
    (staged / "evaluation").mkdir(parents=True)
    (staged / "evaluation" / "epoch-1.parquet").write_bytes(b"outputs")
    bundle.write_run(root, {"run_id": "r1", "role": "retraining"}, staged)
    assert bundle.has_run(root, "r1") and not staged.exists()
    record = bundle.read_sealed(root / "runs" / "r1" / "run.json", root)
    assert record["files"] == {"evaluation/epoch-1.parquet": bundle.sha256_file(
        root / "runs" / "r1" / "artifacts" / "evaluation" / "epoch-1.parquet")}  # fmt: skip

    class Interrupted(Exception):
        pass

    def interrupted(*_):
        raise Interrupted

    broken = tmp_path / "broken"
    broken.mkdir()
    monkey = pytest.MonkeyPatch()
    monkey.setattr(bundle, "write_sealed", interrupted)
    with pytest.raises(Interrupted):
        bundle.write_run(root, {"run_id": "r2", "role": "retraining"}, broken)
    monkey.undo()
    assert not bundle.has_run(root, "r2")
    assert [p.name for p in (root / "runs").iterdir()] == ["r1"]  # no half run left


def test_run_ids_are_remapped_wherever_they_stand():
    old, new = "a" * 32, "b" * 32
    record = {
        "params": {"remove": f"tracin:{old}:en:de:25", "seed": "3"},
        "tags": {"xlinfluence.upstream_run_id": old},
        "metrics": [["x", 1.0, 1, 0]],
    }
    moved = remap(record, {old: new})
    assert moved["params"]["remove"] == f"tracin:{new}:en:de:25"
    assert moved["tags"]["xlinfluence.upstream_run_id"] == new
    assert moved["metrics"] == record["metrics"] and moved["params"]["seed"] == "3"
