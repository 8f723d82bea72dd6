"""A study that outlasts its machine: an lds study killed midway, exported, imported into a
fresh store elsewhere and continued ends with an uninterrupted study's tables, having run
only the retrainings the bundle did not hold."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from xlinfluence import provenance, tracking
from xlinfluence.study import bundle, verify
from xlinfluence.study import tables as study_tables
from xlinfluence.study.export import IMPORTED_TAG

from ..conftest import SETTING, run_cli, run_step

pytestmark = pytest.mark.slow

STUDY = [*SETTING, "--experiment", "lds", "--experiment-values", "dot-all",
         "--subsets", "3", "--retrain-seeds", "2", "--workers", "2"]  # fmt: skip
N_RETRAININGS = 6


def _use_store(path: Path, monkeypatch) -> str:
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return uri


def _experiment_run(runs: list) -> str:
    parents = [
        r for r in runs
        if tracking.run_params(r).get("experiment") and tracking.PARENT_TAG not in r.data.tags
    ]  # fmt: skip
    return max(parents, key=lambda r: r.info.start_time).info.run_id


def _is_retraining(run) -> bool:
    return bool(tracking.run_params(run).get("remove"))  # logged shell-quoted: '' is "''"


def _retrainings(status: str | None = None) -> list:
    runs = MlflowClient().search_runs(["0"], max_results=1000)
    return [r for r in runs if _is_retraining(r) and (status is None or r.info.status == status)]


def _tables(run_id: str) -> pd.DataFrame:
    table = pd.read_csv(tracking.download(run_id, "experiment/comparison.csv"))
    return table.sort_values(["method", "target", "test_language"]).reset_index(drop=True)


def _kill_midway(root: Path, uri: str) -> None:
    """Start the study as a user would and SIGKILL it (and every process it started) once
    two retrainings have finished."""
    env = os.environ | {"MLFLOW_TRACKING_URI": uri, "XLINFLUENCE_CACHE": str(root / "cache")}
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    log = root / "killed-study.log"
    with log.open("w") as out:
        study = subprocess.Popen(
            [sys.executable, "-m", "xlinfluence.cli", "main", *STUDY], cwd=root, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 600
    try:
        while len(_retrainings("FINISHED")) < 2:
            said = log.read_text()[-2000:]
            assert study.poll() is None, f"the study ended before it could be killed:\n{said}"
            assert time.monotonic() < deadline, "no retraining finished in 10 minutes"
            time.sleep(1)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group may have ended already
            os.killpg(study.pid, signal.SIGKILL)
        study.wait()


def test_killed_study_exported_imported_and_continued_equals_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XLINFLUENCE_CACHE", str(tmp_path / "cache"))

    _use_store(tmp_path / "whole.db", monkeypatch)
    run_step("main", *STUDY)
    whole = _tables(_experiment_run(MlflowClient().search_runs(["0"])))

    killed_uri = _use_store(tmp_path / "killed.db", monkeypatch)
    _kill_midway(tmp_path, killed_uri)
    killed_run = _experiment_run(MlflowClient().search_runs(["0"]))
    assert MlflowClient().get_run(killed_run).info.status == "RUNNING"  # SIGKILL marks nothing
    finished = len(_retrainings("FINISHED"))
    assert 2 <= finished < N_RETRAININGS
    code, output = run_cli("study", "export", "--run", killed_run, "--to", str(tmp_path / "b"))
    assert code == 0, output
    assert f"{N_RETRAININGS - finished} setting(s) not finished yet" in output

    # a fresh store on another path, in an experiment named as docs/cluster.md does
    _use_store(tmp_path / "elsewhere" / "fresh.db", monkeypatch)
    (tmp_path / "elsewhere").mkdir(exist_ok=True)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "carried")
    code, output = run_cli("study", "import", str(tmp_path / "b"))
    assert code == 0, output
    experiment = MlflowClient().get_experiment_by_name("carried").experiment_id
    imported = MlflowClient().search_runs([experiment], max_results=1000)
    assert sum(1 for r in imported if _is_retraining(r)) == finished
    code, again = run_cli("study", "import", str(tmp_path / "b"))  # idempotent
    assert code == 0 and "0 run(s) imported" in again

    run_step("main", *STUDY)
    runs = MlflowClient().search_runs([experiment], max_results=1000)
    launched = [r for r in runs if _is_retraining(r) and IMPORTED_TAG not in r.data.tags]
    assert len(launched) == N_RETRAININGS - finished  # only the missing retrainings ran
    fresh_steps = [
        r for r in runs
        if r.data.tags.get(tracking.STEP_TAG) in ("train", "influence", "analyze")
        and not _is_retraining(r) and IMPORTED_TAG not in r.data.tags
    ]  # fmt: skip
    assert fresh_steps == []  # the base pipeline came from the bundle
    continued_run = _experiment_run(runs)
    pd.testing.assert_frame_equal(_tables(continued_run), whole)

    # the bundle grows by what the continued study added, and then tables on its own
    with pytest.raises(bundle.BundleError, match=f"holds {finished} of the study's 6"):
        study_tables.compute(tmp_path / "b")
    code, output = run_cli("study", "export", "--run", continued_run, "--to", str(tmp_path / "b"))
    assert code == 0, output
    assert f"{N_RETRAININGS - finished} run(s) added" in output  # imported runs keep their names
    _, from_bundle = study_tables.compute(tmp_path / "b")
    table = from_bundle["comparison"].sort_values(["method", "target", "test_language"])
    pd.testing.assert_frame_equal(table.reset_index(drop=True), whole, check_dtype=False)

    # this checkout computes the bundle's numbers bit for bit; after a neutral refactor
    # (a new source digest) that verdict lists the bundle's code as equivalent
    verdict = verify.verify(tmp_path / "b", retrainings=1)
    assert verdict.holds and len(verdict.equal) == 4, verdict.summary()  # train, influence,
    listed = tmp_path / "numbers_equivalent.json"  # analyze, a retraining
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(provenance, "EQUIVALENT_FILE", listed)
        patch.setattr(provenance, "source_digest", lambda step, root=None: "refactored")
        assert set(verify.record(tmp_path / "b", verdict)) == {"train", "influence", "analyze"}
    assert "study verify b" in listed.read_text()
    # the analysis alone, against the bundle's own scores: seconds, no fine-tuning
    verdict = verify.verify(tmp_path / "b", steps=("analyze",))
    assert verdict.holds and [v.split()[0] for v in verdict.equal] == ["analyze"]
    with pytest.raises(bundle.BundleError, match="name some of those"):
        verify.verify(tmp_path / "b", steps=("retrain",))

    # one flipped byte in one retraining's outputs: the whole bundle is refused, nothing made
    outputs = next((tmp_path / "b" / "runs").glob("*/artifacts/evaluation/*.parquet"))
    data = bytearray(outputs.read_bytes())
    data[len(data) // 2] ^= 0xFF
    outputs.write_bytes(bytes(data))
    _use_store(tmp_path / "third.db", monkeypatch)
    code, output = run_cli("study", "import", str(tmp_path / "b"))
    assert code != 0 and "does not match its checksum" in output.strip().splitlines()[-1]
    assert MlflowClient().search_runs([tracking.active_experiment_id()]) == []


def test_a_damaged_or_foreign_bundle_is_refused_in_one_line(tmp_path, monkeypatch):
    root = tmp_path / "b"
    bundle.write_sealed({"format": bundle.FORMAT, "version": 99, "files": {}}, root / "bundle.json")
    code, output = run_cli("study", "import", str(root))
    assert code != 0 and "version 99" in output.strip().splitlines()[-1]

    header = {"format": bundle.FORMAT, "version": bundle.VERSION,
              "files": {"manifests/train.parquet": "0" * 64}}  # fmt: skip
    bundle.write_sealed(header, root / "bundle.json")
    code, output = run_cli("study", "import", str(root))
    assert code != 0 and "manifests/train.parquet is missing" in output

    sealed = json.loads((root / "bundle.json").read_text())
    sealed["content"]["files"] = {}
    (root / "bundle.json").write_text(json.dumps(sealed))
    code, output = run_cli("study", "import", str(root))
    assert code != 0 and "does not match its checksum" in output

    (root / "bundle.json").write_text((root / "bundle.json").read_text()[:40])
    code, output = run_cli("study", "import", str(root))
    assert code != 0 and "truncated" in output
