"""Fan-out of independent train runs (ground-truth retrainings) through MLflow Projects.

A study needs tens to hundreds of retrainings. Each is an ordinary train run submitted
with `mlflow.projects.run(synchronous=False)`, `workers` at a time, on MLflow's local
backend, on Slurm (tracking/slurm.py) or on MLflow's Kubernetes backend (docs/cluster.md).
A finished run with the same parameters and code is reused, so a stopped experiment
resumes with the retrainings it already has; on Slurm, whose jobs outlive the experiment,
a restarted experiment also waits for the jobs still queued or running instead of
launching them again, and resubmits a failed one into its own run, which resumes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from xlinfluence import tracking
from xlinfluence.config import TrainConfig
from xlinfluence.errors import XlinfluenceError
from xlinfluence.tracking.slurm import SlurmRun

log = logging.getLogger(__name__)
MEMORY_PER_WORKER_GIB = 6  # one e5-small retraining at batch 16 stays under this
_ENDED = ("FINISHED", "FAILED", "KILLED")  # MLflow RunStatus names of a run that ended
#: backends whose jobs outlive the experiment that launched them -> their submitted run,
#: which finds its job again from the run's tags
REATTACHABLE = {"slurm": SlurmRun}


def default_workers(cores: int | None = None, memory_gib: float | None = None) -> int:
    """Concurrent retrainings this machine bears: two torch processes on two cores slow
    each other many-fold, so one per two cores, and one per MEMORY_PER_WORKER_GIB."""
    cores = cores or os.cpu_count() or 1
    if memory_gib is None:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return max(1, min(cores // 2, int(memory_gib // MEMORY_PER_WORKER_GIB)))


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Torch threads for each of `workers` local processes, so they share the cores."""
    return max(1, (cores or os.cpu_count() or 1) // workers)


def workers_of(config) -> int:
    """A MainConfig's workers, 0 resolved to what this machine bears; on a cluster
    backend, to every retraining at once (the scheduler queues them)."""
    if config.workers:
        return config.workers
    return default_workers() if config.backend == "local" else 10**6


def cheap_base(config) -> TrainConfig:
    """The base pipeline's train config as a cheap retraining (outputs only), with torch
    threads shared among the local workers unless `threads` is set."""
    workers = workers_of(config)
    threads = config.threads or (
        threads_per_worker(workers) if config.backend == "local" and workers > 1 else 0
    )
    return dataclasses.replace(
        config.without_experiment().train(),
        save_checkpoints=False,
        threads=threads,
        removal_steps=config.removal_steps,
    )


def run_settings(config, settings: dict[str, TrainConfig], project: Path, parent) -> dict[str, str]:
    """run_all with the experiment's workers and backend; tags each retraining on `parent`."""
    runs = run_all(
        settings,
        project,
        workers=workers_of(config),
        backend=config.backend,
        backend_config=config.backend_config,
    )
    parent.set_tags({f"{tracking.SETTING_TAG}.{name}": run for name, run in runs.items()})
    return runs


def run_all(
    configs: dict[str, TrainConfig],
    project: Path,
    *,
    workers: int,
    backend: str = "local",
    backend_config: str = "",
) -> dict[str, str]:
    """Run or reuse every config under the active run; name -> train run ID.

    Raises XlinfluenceError naming every failed retraining once all have ended (the
    finished ones stay and are reused when the experiment is run again)."""
    experiment_id = tracking.active_run_experiment_id()
    if backend != "local" and tracking.store_is_local():
        raise XlinfluenceError(
            f"backend={backend!r} runs retrainings on other machines, which cannot reach the "
            f"local store {tracking.setup()}; set MLFLOW_TRACKING_URI to a tracking "
            "server they reach (`xlinfluence server start`, docs/team.md)."
        )
    done: dict[str, str] = {}
    pending: list[str] = []
    running: dict[str, object] = {}
    into: dict[str, str] = {}  # name -> an unfinished run of an earlier launch, resumed
    for name, config in configs.items():
        reused = tracking.find_reusable(config, experiment_id=experiment_id)
        if reused:
            done[name] = reused
            continue
        earlier = _launched_before(config, experiment_id, backend)
        if earlier is not None and earlier.get_status() == "RUNNING":
            running[name] = earlier  # still queued or running: waited for, not relaunched
            continue
        if earlier is not None:
            into[name] = earlier.run_id
        pending.append(name)
    if done or running or into:
        log.info(
            "of %d retrainings: %d finished (reused), %d still running from an earlier "
            "launch, %d resumed in their runs", len(configs), len(done), len(running), len(into),
        )  # fmt: skip
    failed: list[str] = []
    config_file = _backend_config(backend_config)
    with (
        tqdm(total=len(configs), initial=len(done), desc="retrainings") as bar,
        _cancel_on_error(running),
    ):
        while pending or running:
            batch = pending[: max(0, workers - len(running))]
            if batch:  # on Slurm one job array
                del pending[: len(batch)]
                submitted = tracking.submit_all(
                    [(configs[name], into.get(name)) for name in batch], project,
                    experiment_id, backend=backend, backend_config=config_file,
                )  # fmt: skip
                running.update(zip(batch, submitted, strict=True))
            statuses = {name: submitted.get_status() for name, submitted in running.items()}
            finished = {n: status for n, status in statuses.items() if status in _ENDED}
            if not finished:
                time.sleep(1.0)
                continue
            for name, status in finished.items():
                submitted = running.pop(name)
                if status == "FINISHED":
                    done[name] = submitted.run_id
                else:
                    _end_in_store(submitted.run_id, status)
                    where = getattr(submitted, "describe", lambda: "")()
                    failed.append(f"{name} (run {submitted.run_id}{', ' + where if where else ''})")
                bar.update(1)
    if failed:
        raise XlinfluenceError(
            f"{len(failed)} retraining(s) failed: {', '.join(failed[:5])}"
            f"{' ...' if len(failed) > 5 else ''}; their errors are in the runs' logs. The "
            f"{len(done)} finished ones are reused when the experiment is run again."
        )
    return {name: done[name] for name in configs}


@contextmanager
def _cancel_on_error(running: dict[str, object]):
    """On an error or Ctrl-C, cancel the retrainings still running (they end KILLED; the
    finished ones stay and are reused)."""
    try:
        yield
    except BaseException:
        for submitted in running.values():
            submitted.cancel()
        raise


def _launched_before(config: TrainConfig, experiment_id: str, backend: str):
    """A job this backend launched for `config` in an earlier run of the experiment and
    that has not finished (a backend whose jobs outlive the experiment: Slurm), or None."""
    job = REATTACHABLE.get(backend)
    if job is None:
        return None
    run = tracking.find_launched(config, experiment_id=experiment_id, tag=job.TAG)
    return None if run is None else job.of(run)


def _end_in_store(run_id: str, status: str) -> None:
    """A retraining whose process died before its entry point started (`mlflow run`
    refusing its arguments, a missing environment) leaves the run MLflow created for it
    RUNNING in the store for good; end it as its process ended, so the UI does not show a
    study's dead retrainings as running."""
    tracking.end_if_running(run_id, status)


def _backend_config(path: str) -> dict | None:
    """The backend config file as a dict (MLflow reads Kubernetes' from JSON)."""
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise XlinfluenceError(
            f"backend_config={path!r} could not be read as JSON ({err}); give the backend's "
            "config file (docs/cluster.md)."
        ) from err
