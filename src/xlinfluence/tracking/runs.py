"""A step's own run: opening it with its tags and params, logging to it, and reading runs.

`step_run` is the one way a step opens (or, under Accelerate, attaches to) its run;
`StepRun` is the handle it logs through. `fetch_run`, `run_step` and `run_params` read a
run back as the steps and experiments expect it (right step, finished, params as given).
The tag names every other module keys on are defined here.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.data
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Run, RunStatus
from mlflow.environment_variables import MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import xlinfluence
from xlinfluence import provenance
from xlinfluence.config import StepConfig
from xlinfluence.errors import RunLookupError
from xlinfluence.stopping import Stopped
from xlinfluence.tracking.downloads import download_partial
from xlinfluence.tracking.lineage import log_upstream_inputs
from xlinfluence.tracking.params import params_as_given
from xlinfluence.tracking.store import _UNREACHABLE, TrackingError, refused, setup

STEP_TAG = "xlinfluence.step"
CODE_VERSION_TAG = "xlinfluence.code_version"
UPSTREAM_TAG = "xlinfluence.upstream_run_id"
REUSED_TAG = "xlinfluence.reused_run_id"
THREADS_TAG = "xlinfluence.torch_threads"
RESUMED_TAG = "xlinfluence.resumed_from"  # a resumed train run: <run ID>@epoch-<n> it went on from
#: On an experiment's run: xlinfluence.setting.<name> = the run of that setting.
SETTING_TAG = "xlinfluence.setting"
#: On a main run: xlinfluence.<step>_run_id = its child of that step.
CHILD_TAG = "xlinfluence.{step}_run_id"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "finetuning"  # MLflow's UI then opens the experiment on its training runs


def code_version() -> str:
    """Hash of every source file of the package: recorded on each run for provenance. Reuse
    keys on the narrower `provenance.numbers_version` instead."""
    digest = hashlib.sha256()
    root = Path(xlinfluence.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


_METRIC_UNSAFE = re.compile(r"[^\w\-. :/]")


class StepRun:
    """Logging handle for one step's run; every call is a no-op off the main process."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Characters MLflow refuses in a name (e.g. '@' of 'dot-all@epoch-1') become '_'."""
        if self.active:
            mlflow.log_metrics(
                {_METRIC_UNSAFE.sub("_", k): float(v) for k, v in metrics.items()}, step=step
            )

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        if self.active:
            mlflow.log_artifacts(str(local_dir), artifact_path)

    def log_artifact(self, local_file: Path, artifact_path: str | None = None) -> None:
        if self.active:
            mlflow.log_artifact(str(local_file), artifact_path)

    def log_figure(self, figure: Figure, artifact_file: str) -> None:
        if self.active:
            mlflow.log_figure(figure, artifact_file)

    def existing_artifacts(self, artifact_path: str, dst: Path) -> Path | None:
        """This run's own artifact folder (left by an interrupted attempt), copied under dst."""
        return download_partial(self.run_id, artifact_path, dst) if self.active else None

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.active:
            mlflow.set_tags(tags)

    def log_dataset(self, frame: pd.DataFrame, *, name: str, context: str, source: str) -> None:
        """An example manifest as an MLflow dataset input (the UI's Datasets column, lineage).

        source: where the examples came from (a URL or local path); MLflow records it when
        it can resolve it, else the dataset is logged without one."""
        if not self.active:
            return
        try:
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, targets="label")
        except MlflowException:
            dataset = mlflow.data.from_pandas(frame, name=name, targets="label")
        mlflow.log_input(dataset, context=context)

    def log_frames(self, frames: dict[str, pd.DataFrame], artifact_path: str) -> None:
        """Each frame as <artifact_path>/<name>.parquet and .csv (machines and people)."""
        if not self.active:
            return
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            for name, frame in frames.items():
                frame.to_parquet(out / f"{name}.parquet", index=False)
                frame.to_csv(out / f"{name}.csv", index=False)
            mlflow.log_artifacts(str(out), artifact_path)

    def log_table(self, frame: pd.DataFrame, artifact_file: str) -> None:
        """A table the MLflow UI renders (JSON artifact), beside the Parquet/CSV files."""
        if self.active:
            mlflow.log_table(frame, artifact_file)


@contextmanager
def step_run(
    config: StepConfig, *, is_main: bool = True, system_metrics: bool = False
) -> Iterator[StepRun]:
    """Open (or attach to, via MLFLOW_RUN_ID) the step's run, tagged with kind and lineage.

    Params already logged by `mlflow run` are left alone; missing ones are added, so a run
    started from the plain CLI carries the same params as one started by MLflow Projects.
    The run is named by `config.run_name()`, its experiment tagged as a fine-tuning one.
    system_metrics samples CPU, memory (and GPU, with nvidia-ml-py) while the run is open.
    The run ends FINISHED, or FAILED if the block raises. The accelerate launcher holds
    the run open this way while the processes it launched attach to it.
    """
    if not is_main:
        yield StepRun(None)
        return
    setup()
    try:
        with _open_run(config, system_metrics) as step:
            yield step
    except _UNREACHABLE as err:
        if isinstance(err, MlflowException) and (error := refused(err)):
            raise error from err
        said = " ".join(str(err).split())[:300]
        raise TrackingError(
            f"the tracking store {mlflow.get_tracking_uri()} failed ({type(err).__name__}: "
            f"{said}); what was logged before stays. When it answers again, continue the "
            "step: re-attach with `mlflow run --run-id <run>` or pass resume_run_id=<run>."
        ) from err


SYSTEM_METRICS_INTERVAL_S = 2


@contextmanager
def _open_run(config: StepConfig, system_metrics: bool) -> Iterator[StepRun]:
    if system_metrics and not MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.is_set():
        # MLflow's 10 s default leaves a short step with no sample at all.
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
    with mlflow.start_run(log_system_metrics=system_metrics or None) as run:
        logged = run.data.params
        missing = {k: v for k, v in config.to_params().items() if k not in logged}
        if missing:
            mlflow.log_params(missing)
        import torch  # imported by every step already; kept out of `xlinfluence --help`

        tags = {
            STEP_TAG: config.step,
            CODE_VERSION_TAG: code_version(),
            RUN_NAME_TAG: config.run_name(),
            THREADS_TAG: str(torch.get_num_threads()),  # what threads=0 meant here
        } | provenance.tags(config.step)
        if config.upstream_run_id:
            tags[UPSTREAM_TAG] = config.upstream_run_id
        mlflow.set_tags(tags)
        _tag_experiment(run.info.experiment_id)
        if not run.inputs.dataset_inputs:  # a re-attached run has them already
            log_upstream_inputs(config)
        try:
            yield StepRun(run.info.run_id)
        except Stopped as stop:  # SIGTERM, SIGHUP, Ctrl-C: stopped, not failed
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
            if not stop.run_id:
                stop.run_id, stop.step = run.info.run_id, config.step
            raise


def _tag_experiment(experiment_id: str) -> None:
    """Mark the experiment as fine-tuning (unless its owner chose a kind): MLflow 3's UI
    otherwise opens it on the GenAI overview (traces), not on the runs."""
    client = MlflowClient()
    if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def run_step(run_id: str) -> str:
    """Which step a run is ('' for a run xlinfluence did not make)."""
    setup()
    try:
        tags = MlflowClient().get_run(run_id).data.tags
    except MlflowException as err:
        raise refused(err) or RunLookupError(
            f"run {run_id!r} does not exist in the tracking store {mlflow.get_tracking_uri()}; "
            "check the ID (MLflow UI or `mlflow runs list`) and MLFLOW_TRACKING_URI."
        ) from err
    return _step_of(tags)


def _step_of(tags: dict[str, str]) -> str:
    return tags.get(STEP_TAG) or tags.get("mlflow.project.entryPoint") or ""


def fetch_run(run_id: str, *, step: str, finished: bool = True) -> Run:
    """A run of the given step (FINISHED unless finished=False), or a RunLookupError."""
    setup()
    if not run_id:
        raise RunLookupError(f"no run ID given; pass the ID of a finished '{step}' run.")
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException as err:
        raise refused(err) or RunLookupError(
            f"run {run_id!r} does not exist in the tracking store {mlflow.get_tracking_uri()}; "
            f"check the ID (MLflow UI or `mlflow runs list`) and MLFLOW_TRACKING_URI."
        ) from err
    kind = _step_of(run.data.tags)
    if kind != step:
        raise RunLookupError(
            f"run {run_id} is a {kind or 'non-xlinfluence'!s} run, not a '{step}' run; "
            f"pass the ID of a '{step}' run."
        )
    if finished and run.info.status != "FINISHED":
        raise RunLookupError(
            f"run {run_id} ('{step}') is {run.info.status}, not FINISHED; wait for it to "
            "finish, or re-run it."
        )
    return run


def run_params(run: Run) -> dict[str, str]:
    """A run's params as the user gave them.

    `mlflow run` logs each parameter shell-quoted (an empty string as "''", a regex with
    '|' in quotes); a value that is exactly the quoting of one string is read back as it.
    """
    return params_as_given(run.data.params)


def epoch_metrics(run_id: str, *, up_to: int) -> dict[int, dict[str, float]]:
    """A run's metrics logged with a step (epoch) of at most up_to, by step."""
    client = MlflowClient()
    by_step: dict[int, dict[str, float]] = {}
    for name in client.get_run(run_id).data.metrics:
        for metric in client.get_metric_history(run_id, name):
            if 0 < metric.step <= up_to:
                by_step.setdefault(metric.step, {})[name] = metric.value
    return by_step
