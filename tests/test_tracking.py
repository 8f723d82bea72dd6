"""The per-run artifact cache: finished runs are read once, unfinished ones afresh."""

from __future__ import annotations

import mlflow
import pytest

from xlinfluence import tracking
from xlinfluence.errors import RunLookupError


def _log(text: str, tmp_path) -> None:
    path = tmp_path / "note.txt"
    path.write_text(text)
    mlflow.log_artifact(str(path))


def test_an_unfinished_runs_artifacts_are_not_cached(tracking_env, tmp_path):
    cache = tmp_path / "cache"
    with mlflow.start_run() as run:
        _log("first", tmp_path)
        assert tracking.download(run.info.run_id, "note.txt", cache_root=cache).read_text() == (
            "first"
        )
        _log("second", tmp_path)  # a run resumed in place may rewrite what it logged
        seen = tracking.download(run.info.run_id, "note.txt", cache_root=cache)
        assert seen.read_text() == "second"
        assert not (cache / run.info.run_id).exists()
    finished = tracking.download(run.info.run_id, "note.txt", cache_root=cache)
    assert finished == cache / run.info.run_id / "note.txt"
    assert finished.read_text() == "second"


def test_an_unknown_run_or_artifact_is_named(tracking_env, tmp_path):
    with pytest.raises(RunLookupError, match="check the run ID"):
        tracking.download("0" * 32, "note.txt", cache_root=tmp_path)
    with mlflow.start_run() as run:
        pass
    with pytest.raises(RunLookupError, match="has no artifact 'missing.txt'"):
        tracking.download(run.info.run_id, "missing.txt", cache_root=tmp_path)
