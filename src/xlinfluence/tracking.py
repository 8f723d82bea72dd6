"""Everything that talks to MLflow: where runs live, starting and checking them, reuse.

Steps call these functions and never import mlflow themselves. Under Accelerate every
process attaches to the same run (MLFLOW_RUN_ID), and only the main process writes to it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.data
import pandas as pd
import requests
from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.environment_variables import (
    MLFLOW_EXPERIMENT_NAME,
    MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL,
)
from mlflow.exceptions import ExecutionException, MlflowException
from mlflow.tracking import MlflowClient

import xlinfluence
from xlinfluence import provenance
from xlinfluence.config import StepConfig
from xlinfluence.errors import RunLookupError, XlinfluenceError

STEP_TAG = "xlinfluence.step"
CODE_VERSION_TAG = "xlinfluence.code_version"
UPSTREAM_TAG = "xlinfluence.upstream_run_id"
REUSED_TAG = "xlinfluence.reused_run_id"
THREADS_TAG = "xlinfluence.torch_threads"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "finetuning"  # MLflow's UI then opens the experiment on its training runs
DEFAULT_DB = "mlflow.db"


def setup() -> str:
    """Use MLFLOW_TRACKING_URI if set, else an embedded SQLite file in the working directory."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(f"sqlite:///{Path.cwd().resolve() / DEFAULT_DB}")
    return mlflow.get_tracking_uri()


def code_version() -> str:
    """Hash of every source file of the package: recorded on each run for provenance. Reuse
    keys on the narrower `provenance.numbers_version` instead."""
    digest = hashlib.sha256()
    root = Path(xlinfluence.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class TrackingError(XlinfluenceError):
    """The tracking server (or store) could not be reached while a step was logging."""


class AccessError(XlinfluenceError):
    """A tracking server with accounts (`xlinfluence server start --auth`) refused the
    login, or the permission for what the step asked."""


def refused(err: Exception) -> AccessError | None:
    """The one-line explanation of a refused login or permission; None for other errors."""
    if not isinstance(err, MlflowException):
        return None
    uri, user = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_USERNAME")
    if err.error_code == "UNAUTHENTICATED":
        if not user:
            return AccessError(
                f"the tracking server {uri} takes logins only: set MLFLOW_TRACKING_USERNAME "
                "and MLFLOW_TRACKING_PASSWORD to your account (the server's admin creates it "
                "with `xlinfluence server user create`)."
            )
        return AccessError(
            f"the tracking server {uri} refused the login of {user!r}: wrong "
            "MLFLOW_TRACKING_PASSWORD, or no such account (the admin sets passwords with "
            "`xlinfluence server user password`)."
        )
    if err.error_code == "PERMISSION_DENIED":
        endpoint = re.search(r"endpoint (\S+)", str(err))
        return AccessError(
            f"user {user!r} may not do this on {uri} "
            f"({endpoint.group(1) if endpoint else err.error_code}; a run or experiment that "
            "does not exist is refused the same way): name an experiment of your own with "
            "MLFLOW_EXPERIMENT_NAME=<study>, or ask the experiment's owner or the admin for "
            "access (`xlinfluence server user grant`)."
        )
    return None


def check_access() -> None:
    """Fail at once, in one line, where a tracking server refuses this login."""
    if not setup().startswith("http"):
        return
    try:
        MlflowClient().search_experiments(max_results=1)
    except MlflowException as err:
        if error := refused(err):
            raise error from err
        raise


# What an unreachable server raises from inside MLflow's client, after its retries
# (MLflow wraps most of them in MlflowException: "API request to ... failed").
_UNREACHABLE = (requests.exceptions.RequestException, MlflowException)


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
        yield StepRun(run.info.run_id)


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


def download(run_id: str, artifact_path: str, *, cache_root: Path | None = None) -> Path:
    """Download a run's artifact (file or folder) once into a per-run local cache.

    The cache (XLINFLUENCE_CACHE, default ~/.cache/xlinfluence) makes repeated and
    multi-process reads free; a folder is only used once its download completed. Only a
    FINISHED run's artifacts are cached: an unfinished run (one being resumed in place) can
    still change them, so those are downloaded afresh each time, into a temporary folder.
    """
    root = cache_root or Path(
        os.environ.get("XLINFLUENCE_CACHE", Path.home() / ".cache" / "xlinfluence")
    )
    target = root / run_id / artifact_path
    done = target.parent / f".{target.name}.complete"
    if done.exists() and target.exists():
        return target
    if _status(run_id) != "FINISHED":
        return _fetch(run_id, artifact_path, Path(tempfile.mkdtemp(prefix="xlinfluence-run-")))
    staging = Path(tempfile.mkdtemp(dir=_ensure(root / run_id), prefix=".download-"))
    local = _fetch(run_id, artifact_path, staging)
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    local.rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    done.touch()
    return target


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
        raise RunLookupError(
            f"run {run_id} has no artifact {artifact_path!r} ({err}); the run is incomplete "
            "or from an older version: re-run it."
        ) from err


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


def epoch_metrics(run_id: str, *, up_to: int) -> dict[int, dict[str, float]]:
    """A run's metrics logged with a step (epoch) of at most up_to, by step."""
    client = MlflowClient()
    by_step: dict[int, dict[str, float]] = {}
    for name in client.get_run(run_id).data.metrics:
        for metric in client.get_metric_history(run_id, name):
            if 0 < metric.step <= up_to:
                by_step.setdefault(metric.step, {})[name] = metric.value
    return by_step


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_or_reuse(config: StepConfig, project: Path) -> str:
    """Run the step's entry point as a child of the active run, unless a match is finished.

    A reused run is recorded on the parent as a tag, so its lineage stays visible.
    """
    parent = mlflow.active_run()
    experiment_id = parent.info.experiment_id
    reused = find_reusable(config, experiment_id=experiment_id)
    if reused:
        mlflow.set_tag(f"{REUSED_TAG}.{config.step}", reused)
        return reused
    return submit(config, project, experiment_id).run_id


def submit(
    config: StepConfig,
    project: Path,
    experiment_id: str,
    *,
    synchronous: bool = True,
    backend: str = "local",
    backend_config: dict | None = None,
):
    """The step's entry point as an MLflow project run in this environment (the one way
    every step and retraining is launched); returns MLflow's SubmittedRun."""
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


def run_params(run: Run) -> dict[str, str]:
    """A run's params as the user gave them.

    `mlflow run` logs each parameter shell-quoted (an empty string as "''", a regex with
    '|' in quotes); a value that is exactly the quoting of one string is read back as it.
    """
    return params_as_given(run.data.params)


def params_as_given(params: dict[str, str]) -> dict[str, str]:
    """Params as logged (see run_params) read back as the user gave them."""
    return {name: _unquote(value) for name, value in params.items()}


def _unquote(value: str) -> str:
    try:
        tokens = shlex.split(value)
    except ValueError:
        return value
    return tokens[0] if len(tokens) == 1 and shlex.quote(tokens[0]) == value else value


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
            try:
                if _reuse_key(type(config).canonical(run_params(run))) != wanted:
                    continue
            except Exception:  # a run with params from another version: not a match
                continue
            if digests is None:
                digests = _expected_digests(config)
            if _digests_match(run, digests):
                return run.info.run_id
    return None


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


# Study bundles (study/): a run read out as a record, and made again from one elsewhere.


def run_record(run_id: str) -> dict:
    """A run as data: status, times, params (as logged), tags and every metric's history."""
    client = MlflowClient()
    run = client.get_run(run_id)
    metrics = [
        [m.key, m.value, m.step, m.timestamp]
        for name in sorted(run.data.metrics)
        for m in client.get_metric_history(run_id, name)
    ]
    return {
        "run_id": run_id,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "params": dict(run.data.params),
        "tags": dict(run.data.tags),
        "metrics": metrics,
    }


def artifact_files(run_id: str, folder: str) -> list[str]:
    """Every file under a run's artifact folder (recursively), as artifact paths."""
    files, todo = [], [folder]
    client = MlflowClient()
    while todo:
        try:
            listed = client.list_artifacts(run_id, todo.pop())
        except MlflowException:
            continue
        for info in listed:
            (todo if info.is_dir else files).append(info.path)
    return sorted(files)


def active_experiment_id() -> str:
    """The experiment new runs go to: MLFLOW_EXPERIMENT_NAME (created if missing), else
    the store's default."""
    setup()
    name = os.environ.get(MLFLOW_EXPERIMENT_NAME.name)
    if not name:
        return "0"
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def runs_tagged(experiment_id: str, tag: str) -> dict[str, str]:
    """tag value -> run ID of every run in the experiment that carries the tag."""
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{tag}` != '' and attributes.status = 'FINISHED'",
        max_results=50000,
    )
    return {run.data.tags[tag]: run.info.run_id for run in runs}


def create_finished_run(experiment_id: str, record: dict, artifact_dir: Path | None) -> str:
    """A run made from a record (run_record's shape) with the files under artifact_dir as
    its artifacts, ended with the record's status and times; its new run ID."""
    client = MlflowClient()
    run_id = client.create_run(experiment_id, start_time=record["start_time"]).info.run_id
    try:
        _fill(client, run_id, record, artifact_dir)
    except BaseException:  # a run half made is FAILED, so nothing reuses or skips it
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, record["status"], end_time=record["end_time"])
    return run_id


def _fill(client: MlflowClient, run_id: str, record: dict, artifact_dir: Path | None) -> None:
    from mlflow.entities import Metric, Param, RunTag

    params = [Param(k, v) for k, v in record["params"].items()]
    tags = [RunTag(k, v) for k, v in record["tags"].items()]
    metrics = [Metric(k, v, timestamp, step) for k, v, step, timestamp in record["metrics"]]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    for i in range(0, len(tags), 100):
        client.log_batch(run_id, tags=tags[i : i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    if artifact_dir is not None and any(artifact_dir.iterdir()):
        client.log_artifacts(run_id, str(artifact_dir))


def set_run_tag(run_id: str, key: str, value: str) -> None:
    MlflowClient().set_tag(run_id, key, value)


def run_tags(run_id: str) -> dict[str, str]:
    return dict(MlflowClient().get_run(run_id).data.tags)


TEMPORARY_EXPERIMENT = "xlinfluence-temporary"


@contextmanager
def temporary_store(folder: Path) -> Iterator[str]:
    """A fresh SQLite store (and download cache) under `folder` for the block, then the
    tracking URI and cache as they were."""
    uri = f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"
    saved = {
        k: os.environ.get(k)
        for k in ("MLFLOW_TRACKING_URI", "XLINFLUENCE_CACHE", MLFLOW_EXPERIMENT_NAME.name)
    }
    previous = mlflow.get_tracking_uri()
    os.environ.update(
        {
            "MLFLOW_TRACKING_URI": uri,
            "XLINFLUENCE_CACHE": str(Path(folder) / "cache"),
            MLFLOW_EXPERIMENT_NAME.name: TEMPORARY_EXPERIMENT,
        }
    )
    mlflow.set_tracking_uri(uri)
    # artifacts inside the folder too (a new SQLite store's default is ./mlruns of the cwd)
    artifacts_uri = (Path(folder).resolve() / "artifacts").as_uri()
    MlflowClient().create_experiment(TEMPORARY_EXPERIMENT, artifact_location=artifacts_uri)
    try:
        yield uri
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.set_tracking_uri(previous)
