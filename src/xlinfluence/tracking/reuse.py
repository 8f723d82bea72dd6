"""Launching a step as an MLflow project run, or reusing a finished run that matches.

`submit` is the one way every step and retraining is launched; `find_reusable` decides
which finished run stands in for a new one (same parameters, a numbers version this
checkout accepts, the same data and model digests; see `xlinfluence.provenance`).
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.entities import Run
from mlflow.environment_variables import MLFLOW_EXPERIMENT_NAME
from mlflow.exceptions import ExecutionException
from mlflow.tracking import MlflowClient

from xlinfluence import provenance
from xlinfluence.config import StepConfig
from xlinfluence.errors import XlinfluenceError
from xlinfluence.tracking.downloads import default_cache
from xlinfluence.tracking.runs import REUSED_TAG, STEP_TAG, _step_of, run_params


def run_or_reuse(config: StepConfig, project: Path) -> str:
    """Run the step's entry point as a child of the active run, unless a match is finished.

    A reused run is recorded on the parent as a tag, so its lineage stays visible.
    """
    parent = mlflow.active_run()
    experiment_id = parent.info.experiment_id
    with _computing(config, experiment_id):
        reused = find_reusable(config, experiment_id=experiment_id)
        if reused:
            mlflow.set_tag(f"{REUSED_TAG}.{config.step}", reused)
            return reused
        return submit(config, project, experiment_id).run_id


@contextmanager
def _computing(config: StepConfig, experiment_id: str):
    """Held while a step with these parameters is looked up and, if need be, run: two
    identical pipelines started together on this machine compute each step once, the
    second waiting for the first and then reusing its run. A file lock in the cache
    folder, named by the store, experiment, step and reuse key (across machines sharing a
    server, two identical runs may still both compute; their results are equal)."""
    key = json.dumps([mlflow.get_tracking_uri(), experiment_id, config.step,
                      _reuse_key(config.to_params())], sort_keys=True)  # fmt: skip
    locks = default_cache() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(locks / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock"):
        yield


def submit(
    config: StepConfig,
    project: Path,
    experiment_id: str,
    *,
    synchronous: bool = True,
    backend: str = "local",
    backend_config: dict | None = None,
    run_id: str | None = None,
):
    """The step's entry point as an MLflow project run in this environment (the one way
    every step and retraining is launched); returns MLflow's SubmittedRun. run_id: run it
    in that existing run, which resumes (MLflow's local backend; submit_all passes it to
    the Slurm backend)."""
    try:
        with _experiment_by_id_only():
            return mlflow.projects.run(
                uri=str(project),
                entry_point=config.step,
                parameters=config.to_params(),
                experiment_id=experiment_id,
                env_manager="local",
                backend=backend,
                backend_config=backend_config,
                synchronous=synchronous,
                run_id=run_id,
            )
    except ExecutionException as err:
        if synchronous:
            raise XlinfluenceError(
                f"the '{config.step}' step failed ({err}); its error is printed above and its "
                "run is marked FAILED in the tracking store."
            ) from err
        raise XlinfluenceError(
            f"could not submit a '{config.step}' run to the '{backend}' backend ({err}); "
            "check backend_config (docs/cluster.md)."
        ) from err


def submit_all(
    entries: list[tuple[StepConfig, str | None]],
    project: Path,
    experiment_id: str,
    *,
    backend: str,
    backend_config: dict | None,
) -> list:
    """Several (config, run ID or None) submitted asynchronously at once: on Slurm one job
    array (one sbatch call however many there are), elsewhere one `submit` each."""
    if backend != "slurm":
        return [
            submit(config, project, experiment_id, synchronous=False, backend=backend,
                   backend_config=backend_config, run_id=run_id)
            for config, run_id in entries
        ]  # fmt: skip
    from xlinfluence.tracking.slurm import SlurmBackend

    with _experiment_by_id_only():
        return SlurmBackend().run_array(
            str(project), [(c.step, c.to_params(), run_id) for c, run_id in entries], None,
            backend_config or {}, mlflow.get_tracking_uri(), experiment_id,
        )  # fmt: skip


@contextmanager
def _experiment_by_id_only():
    """Hide MLFLOW_EXPERIMENT_NAME while MLflow launches a run. Its local backend starts
    an asynchronous run as `mlflow run` with MLFLOW_EXPERIMENT_ID set, and that command
    refuses an inherited name beside it ("Specify only one of 'experiment-name' or
    'experiment-id'"), which failed every retraining of a study named that way. The
    experiment is passed by ID, so the child needs no name."""
    name = os.environ.pop(MLFLOW_EXPERIMENT_NAME.name, None)
    try:
        yield
    finally:
        if name is not None:
            os.environ[MLFLOW_EXPERIMENT_NAME.name] = name


def active_run_experiment_id() -> str:
    """The experiment of the run open in this process (a step's or an experiment's)."""
    return mlflow.active_run().info.experiment_id


def end_if_running(run_id: str, status: str) -> None:
    """End a run the store still shows RUNNING (one whose process died before it could)."""
    client = MlflowClient()
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status)


#: Parameters that change how a step runs, not what it computes: a run differing only in
#: them is reused (so a study resumed with other workers or on another machine keeps its
#: finished retrainings). data_path says where the data is; what it holds is keyed by the
#: train run's data digest.
HOW_NOT_WHAT = ("threads", "accelerate_config", "data_path")


def _reuse_key(params: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k not in HOW_NOT_WHAT}


def find_reusable(config: StepConfig, *, experiment_id: str) -> str | None:
    """The newest FINISHED run of this step with the same parameters and numbers, if any.

    Parameters are compared in canonical string form (so '1e-3' matches '0.001'), which
    includes upstream run IDs; the run's numbers version must be one this checkout accepts
    (`provenance.accepted`), and the data and model digests of a train run (of a main
    run's train child) those this config selects now.
    """
    wanted = _reuse_key(config.to_params())
    client = MlflowClient()
    digests: dict[str, str] | None = None
    for version in sorted(provenance.accepted(config.step)):
        runs = client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`{STEP_TAG}` = '{config.step}' and attributes.status = 'FINISHED' "
                f"and tags.`{provenance.NUMBERS_TAG}` = '{version}'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=50000,
        )
        for run in runs:
            if not _same_params(run, config, wanted):
                continue
            if digests is None:
                digests = _expected_digests(config)
            if _digests_match(run, digests):
                return run.info.run_id
    return None


def find_launched(config: StepConfig, *, experiment_id: str, tag: str) -> Run | None:
    """The newest unfinished run of this step with the same parameters that carries `tag`:
    a job a cluster backend launched (waiting, running, or ended without finishing), which
    a restarted experiment takes up again instead of launching a duplicate. Such a run may
    not have started yet, so it is found by MLflow's entry-point tag and the parameters
    MLflow logged when it created it."""
    wanted = _reuse_key(config.to_params())
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{tag}` LIKE '%' and tags.`mlflow.project.entryPoint` = '{config.step}' "
            "and attributes.status != 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=50000,
    )
    return next((run for run in runs if _same_params(run, config, wanted)), None)


def _same_params(run: Run, config: StepConfig, wanted: dict[str, str]) -> bool:
    """Whether a run's parameters, in canonical form, are `wanted` (config's reuse key)."""
    try:
        return _reuse_key(type(config).canonical(run_params(run))) == wanted
    except Exception:  # a run with params from another version: not a match
        return False


def _digests_match(run: Run, digests: dict[str, str]) -> bool:
    """A train run's digest tags, or a main run's train child's, equal `digests`."""
    if not digests:
        return True
    tags = run.data.tags
    if _step_of(tags) == "main":
        child = tags.get("xlinfluence.train_run_id")
        if not child:
            return False
        tags = MlflowClient().get_run(child).data.tags
    return all(tags.get(tag) == value for tag, value in digests.items())


def _expected_digests(config: StepConfig) -> dict[str, str]:
    """The data and model digests a train run of `config` would record ({} for influence
    and analyze, whose upstream run IDs carry them)."""
    if config.step not in ("train", "main"):
        return {}
    key = tuple(getattr(config, f) for f in _DATA_FIELDS)
    path = Path(config.data_path) if config.data_path else None
    if path is not None and path.exists():  # a file edited in place is other data
        stat = path.stat()
        key += (stat.st_mtime_ns, stat.st_size)
    return _selection_digests(key, config.model, config)


_DATA_FIELDS = (
    "dataset", "data_path", "column_map", "languages", "train_per_language",
    "test_per_language", "heldout_language", "seed",
)  # fmt: skip


def _selection_digests(key: tuple, model: str, config: StepConfig) -> dict[str, str]:
    if (key, model) not in _DIGESTS:
        from xlinfluence.data import splits_of

        splits = splits_of(config)
        _DIGESTS[(key, model)] = {
            provenance.DATA_TAG: provenance.data_digest(splits.train, splits.test),
            provenance.MODEL_TAG: provenance.model_digest(model),
        }
    return _DIGESTS[(key, model)]


_DIGESTS: dict[tuple, dict[str, str]] = {}  # a study looks up hundreds of retrainings
