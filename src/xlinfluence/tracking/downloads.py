"""Reading a run's artifacts onto this machine: the per-run download cache and listings.

Kept apart because every step reads its upstream runs' artifacts this way, and the
cache's rules (only a FINISHED run's artifacts are cached; a folder counts only once its
download completed) are one concern of their own.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from xlinfluence.errors import DiskFullError, RunLookupError, is_disk_full
from xlinfluence.tracking.store import refused


def download(run_id: str, artifact_path: str, *, cache_root: Path | None = None) -> Path:
    """Download a run's artifact (file or folder) once into a per-run local cache.

    The cache (XLINFLUENCE_CACHE, default ~/.cache/xlinfluence) makes repeated and
    multi-process reads free; a folder is only used once its download completed, and it is
    published under a lock on the run's cache folder (filelock), so two processes fetch it
    once and neither deletes what the other reads. Only a
    FINISHED run's artifacts are cached: an unfinished run (one being resumed in place) can
    still change them, so those are downloaded afresh each time, into a temporary folder.
    """
    root = cache_root or default_cache()
    target = root / run_id / artifact_path
    done = target.parent / f".{target.name}.complete"
    if done.exists() and target.exists():
        return target
    if _status(run_id) != "FINISHED":
        return _fetch(run_id, artifact_path, Path(tempfile.mkdtemp(dir=_uncached())))
    # One process publishes a run's artifact; another that wants it meanwhile waits, then
    # finds it complete: nothing is replaced while someone may be reading it.
    with FileLock(_ensure(root / run_id) / ".lock"):
        if done.exists() and target.exists():
            return target
        staging = Path(tempfile.mkdtemp(dir=root / run_id, prefix=".download-"))
        try:
            local = _fetch(run_id, artifact_path, staging)
            if target.exists():  # an incomplete download of a process that died
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            target.parent.mkdir(parents=True, exist_ok=True)
            local.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        done.touch()
    return target


def default_cache() -> Path:
    """XLINFLUENCE_CACHE, default ~/.cache/xlinfluence."""
    return Path(os.environ.get("XLINFLUENCE_CACHE", Path.home() / ".cache" / "xlinfluence"))


@functools.cache
def _uncached() -> Path:
    """This process's folder for the artifacts of unfinished runs (never cached), removed
    when the process exits, a stop signal included (stopping.py)."""
    folder = Path(tempfile.mkdtemp(prefix="xlinfluence-run-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _status(run_id: str) -> str:
    try:
        return MlflowClient().get_run(run_id).info.status
    except MlflowException as err:
        raise refused(err) or RunLookupError(
            f"run {run_id} cannot be read ({err}); check the run ID."
        ) from err


def _fetch(run_id: str, artifact_path: str, dst: Path) -> Path:
    """The artifact downloaded under dst (removed again if the download fails)."""
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
            )
        )
    except (MlflowException, OSError) as err:
        shutil.rmtree(dst, ignore_errors=True)
        if isinstance(err, MlflowException) and (error := refused(err)):
            raise error from err
        needed = _artifact_bytes(run_id, artifact_path)  # MLflow hides why it failed
        free = shutil.disk_usage(_existing(dst)).free
        if is_disk_full(err) or (needed and needed >= free):
            raise DiskFullError(
                f"no space left on the disk holding {dst.parent} while downloading "
                f"{artifact_path!r} of run {run_id} ({_size(needed)} needed, {_size(free)} "
                "free); free space there, or point XLINFLUENCE_CACHE (the cache) and TMPDIR "
                "(unfinished runs) at a larger disk, and run the step again: nothing was lost."
            ) from err
        if needed:
            raise RunLookupError(
                f"run {run_id}'s artifact {artifact_path!r} ({_size(needed)}) could not be "
                f"downloaded to {dst.parent} ({err}); check that the store's artifact location "
                "is reachable from here, and run the step again."
            ) from err
        raise RunLookupError(
            f"run {run_id} has no artifact {artifact_path!r} ({err}); the run is incomplete "
            "or from an older version: re-run it."
        ) from err


def _existing(path: Path) -> Path:
    """The nearest folder of path that exists (what disk_usage can measure)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _artifact_bytes(run_id: str, path: str) -> int:
    """The size of a run's artifact, file or folder (0: none, or the store cannot say)."""
    try:
        entries = MlflowClient().list_artifacts(run_id, path)
        if not entries:  # a file lists itself from its folder
            parent = str(Path(path).parent) if "/" in path else None
            entries = [e for e in MlflowClient().list_artifacts(run_id, parent) if e.path == path]
    except MlflowException:
        return 0
    return sum(_artifact_bytes(run_id, e.path) if e.is_dir else (e.file_size or 0) for e in entries)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def download_partial(run_id: str, artifact_path: str, dst: Path) -> Path | None:
    """A possibly unfinished run's artifact (file or folder), copied under dst; None if the
    run has none.

    Not cached: an interrupted run's artifacts are what a resume is about to extend.
    """
    if artifact_path not in artifact_names(run_id, str(Path(artifact_path).parent)):
        return None
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
            )
        )
    except MlflowException:
        return None


def artifact_names(run_id: str, folder: str) -> list[str]:
    """Paths of the artifacts directly in a run's folder ('.' for the top); [] if none."""
    try:
        listed = MlflowClient().list_artifacts(run_id, None if folder in ("", ".") else folder)
    except MlflowException:
        return []
    return [info.path for info in listed]


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
