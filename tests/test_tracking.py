"""The per-run artifact cache: finished runs are read once, unfinished ones afresh, and two
processes asking at once fetch once."""

from __future__ import annotations

import multiprocessing
import os
import time

import mlflow
import pytest

from xlinfluence import tracking
from xlinfluence.errors import DiskFullError, RunLookupError


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


def _fetch_slowly(counter, real_fetch):
    """_fetch that records each call (one line per process) and takes a while, so two
    processes asking at once overlap."""

    def fetch(run_id, artifact_path, dst):
        with counter.open("a") as out:
            out.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        return real_fetch(run_id, artifact_path, dst)

    return fetch


def _download_in_child(run_id, cache, counter, found):
    from xlinfluence.tracking import downloads

    downloads._fetch = _fetch_slowly(counter, downloads._fetch)
    path = tracking.download(run_id, "note.txt", cache_root=cache)
    found.put(path.read_text())


def test_two_processes_fetch_a_finished_artifact_once(tracking_env, tmp_path):
    """Two processes asking at once: one downloads and publishes under the lock, the other
    waits and reads what it published; nothing is fetched twice or replaced mid-read."""
    with mlflow.start_run() as run:
        _log("scores", tmp_path)
    cache, counter = tmp_path / "cache", tmp_path / "fetches"
    context = multiprocessing.get_context("fork")
    found = context.Queue()
    children = [context.Process(target=_download_in_child,
                                args=(run.info.run_id, cache, counter, found))
                for _ in range(2)]  # fmt: skip
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    assert sorted(found.get(timeout=5) for _ in children) == ["scores", "scores"]
    assert len(counter.read_text().splitlines()) == 1


def test_a_full_disk_while_downloading_says_so(tracking_env, tmp_path, small_disk):
    """On a 64 KiB tmpfs, a 1 MiB artifact cannot be cached: the error names the full disk,
    the space needed and the fix, not a missing artifact."""
    with mlflow.start_run() as run:
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(2**20))
        mlflow.log_artifact(str(big))
    with pytest.raises(DiskFullError, match=r"no space left on the disk holding .*small.* "
                       r"\(1\.0 MiB needed, 0\.\d MiB free\); free space there"):  # fmt: skip
        tracking.download(run.info.run_id, "big.bin", cache_root=small_disk)
    assert not any(small_disk.rglob("*.bin"))  # nothing half-written left to be taken as done
