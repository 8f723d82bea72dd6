"""Study bundles (xlinfluence.study): a run read out as a record, and made again from one.

Export reads runs as plain data (`run_record`, `artifact_files`); import creates finished
runs from those records in another store (`create_finished_run`) and links them by tags.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


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
