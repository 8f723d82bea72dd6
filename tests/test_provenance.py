"""Reuse keyed on what determines a run's numbers: the modules that compute them, the
numeric libraries, the data and the model; not docs, the CLI or the tracking code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from xlinfluence import provenance, tracking
from xlinfluence.config import TrainConfig

from .conftest import SETTING, run_cli

PACKAGE = provenance.PACKAGE


@pytest.fixture
def package_copy(tmp_path) -> Path:
    return Path(shutil.copytree(PACKAGE, tmp_path / "xlinfluence"))


def _digests(root: Path) -> dict[str, str]:
    return {step: provenance.source_digest(step, root) for step in provenance.NUMBERS_SOURCES}


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_edits_outside_the_numbers_modules_keep_every_steps_digest(package_copy):
    before = _digests(package_copy)
    for name in ("cli.py", "tracking/runs.py", "render.py", "config/base.py", "checks.py",
                 "server/team.py", "analysis/report.py", "analysis/plots.py",
                 "steps/retrain.py"):  # fmt: skip
        _append(package_copy / name, "\n# a comment, a help text, a logging change\n")
    assert _digests(package_copy) == before


def test_an_edit_to_a_numbers_module_changes_the_steps_it_feeds(package_copy):
    before = _digests(package_copy)
    _append(package_copy / "tracin" / "engine.py", "\n# the engine changed\n")
    after = _digests(package_copy)
    assert {s for s in before if before[s] != after[s]} == {"influence", "main"}
    _append(package_copy / "data" / "select.py", "\n# the selection changed\n")
    assert all(
        a != b for a, b in zip(_digests(package_copy).values(), before.values(), strict=True)
    )


def test_an_equivalence_carries_runs_of_an_older_source_forward(tmp_path, monkeypatch):
    """Entries chain: a source shown equal to one that was shown equal to today's is
    accepted; an entry shown against code that has changed since, with no check linking it
    to today's, accepts nothing."""
    today = provenance.source_digest("train")
    listed = tmp_path / "numbers_equivalent.json"
    entries = [
        {"source": "0" * 16, "to": "a" * 16, "shown_by": "a check at an older commit"},
        {"source": "a" * 16, "to": today, "shown_by": "a check at this commit"},
        {"source": "2" * 16, "to": "b" * 16, "shown_by": "a check since outdated"},
    ]
    listed.write_text(json.dumps({"train": entries}))
    monkeypatch.setattr(provenance, "EQUIVALENT_FILE", listed)
    provenance.accepted.cache_clear()
    try:
        assert provenance.equivalents("train") == sorted(["0" * 16, "a" * 16])
        assert provenance.numbers_version("train", "0" * 16) in provenance.accepted("train")
        for stale in ("1" * 16, "2" * 16, "b" * 16):
            assert provenance.numbers_version("train", stale) not in provenance.accepted("train")
        assert provenance.numbers_version("influence") in provenance.accepted("influence")
    finally:
        provenance.accepted.cache_clear()


def test_a_docs_or_cli_change_does_not_make_main_recompute(main_runs, monkeypatch):
    """The whole package's hash (the old reuse key) changes; every step is still reused."""
    monkeypatch.setattr(tracking.runs, "code_version", lambda: "edited-docs-and-cli")
    before = {r.info.run_id for r in MlflowClient().search_runs(["0"])}
    code, output = run_cli("main", *SETTING)
    assert code == 0, output
    new = [r for r in MlflowClient().search_runs(["0"]) if r.info.run_id not in before]
    assert [r.data.tags[tracking.STEP_TAG] for r in new] == ["main"]
    for step in ("train", "influence", "analyze"):
        assert new[0].data.tags[f"{tracking.REUSED_TAG}.{step}"] == main_runs[step]


def test_train_runs_record_what_fixed_their_numbers(main_runs):
    tags = MlflowClient().get_run(main_runs["train"]).data.tags
    assert tags[provenance.NUMBERS_TAG] in provenance.accepted("train")
    assert tags[provenance.LIBRARIES_TAG].startswith("torch=")
    assert tags[provenance.MODEL_TAG] == "tiny"
    assert len(tags[provenance.DATA_TAG]) == 16


def _local_config(path: Path) -> TrainConfig:
    return TrainConfig(
        dataset="local", data_path=str(path), languages="en,de", train_per_language="6",
        test_per_language=2, model="tiny",
        column_map="id=uid,language=lang,label=topic,pair_id=group,text=sentence",
    )  # fmt: skip


def _write_local(path: Path, edited: str = "") -> Path:
    rows = [
        {"uid": f"{lang}{i}", "lang": lang, "topic": ["a", "b"][i % 2], "group": f"g{i}",
         "sentence": f"{lang} sentence {i}{edited if i == 0 else ''}"}
        for lang in ("en", "de") for i in range(10)
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reuse_follows_the_datas_digest_not_its_path(tracking_env, tmp_path):
    data = _write_local(tmp_path / "here" / "data.jsonl")
    config = _local_config(data)
    with mlflow.start_run() as run:  # a finished train run as the train step leaves it
        mlflow.log_params(config.to_params())
        mlflow.set_tags(
            {tracking.STEP_TAG: "train"}
            | provenance.tags("train")
            | tracking._expected_digests(config)
        )
    experiment = run.info.experiment_id
    assert tracking.find_reusable(config, experiment_id=experiment) == run.info.run_id
    moved = _write_local(tmp_path / "elsewhere" / "copy.jsonl")  # the same data, another path
    assert tracking.find_reusable(_local_config(moved), experiment_id=experiment) == run.info.run_id
    edited = _write_local(tmp_path / "edited" / "data.jsonl", edited=" (corrected)")
    assert tracking.find_reusable(_local_config(edited), experiment_id=experiment) is None
