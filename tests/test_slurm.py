"""Retrainings on a real Slurm cluster (tests/slurm.py: slurmctld, slurmd and munge from
Debian's slurm-wlm, one node) against a real tracking server: an `experiment=lds` study
through `backend=slurm` gives the tables a local run gives; a job cancelled mid-way is
reported with its job id and log, and the study resumes it in its own run without
repeating the finished retrainings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from xlinfluence import tracking
from xlinfluence.backends.slurm import SlurmSettings
from xlinfluence.errors import ConfigError
from xlinfluence.server import TeamServer

from .conftest import SETTING, require_team_server
from .slurm import slurm_cluster

LDS = [
    "--experiment", "lds", "--experiment-values", "dot-all", "--retrain-seeds", "1",
    "--subsets", "3", "--threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def slurm():
    cluster = slurm_cluster(Path(tempfile.mkdtemp(prefix="xlinfluence-slurm-", dir="/tmp")))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def server():
    require_team_server()
    root = Path(tempfile.mkdtemp(prefix="xlinfluence-server-", dir="/tmp"))
    root.chmod(0o755)  # PostgreSQL runs as the postgres user when the tests run as root
    team = TeamServer(root)
    team.start()
    yield team
    team.stop()
    shutil.rmtree(root, ignore_errors=True)


def _main(server, slurm, experiment: str, *args: str) -> subprocess.Popen:
    env = os.environ | slurm.env | {
        "MLFLOW_TRACKING_URI": server.uri(), "MLFLOW_EXPERIMENT_NAME": experiment,
    }  # fmt: skip
    env.pop("MLFLOW_RUN_ID", None)
    return subprocess.Popen(
        [sys.executable, "-m", "xlinfluence.cli", "main", *SETTING, *LDS, *args],
        env=env, cwd=server.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=900)
    return process.returncode, output


def _retrainings(client: MlflowClient, experiment: str) -> list:
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], max_results=1000)
    return [r for r in runs if tracking.run_params(r).get("remove", "").startswith("subset")]


def _comparison(client: MlflowClient, experiment: str) -> pd.DataFrame:
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    parents = [
        r for r in client.search_runs([experiment_id], order_by=["attributes.start_time DESC"])
        if tracking.run_params(r).get("experiment") == "lds" and r.info.status == "FINISHED"
    ]  # fmt: skip
    path = client.download_artifacts(parents[0].info.run_id, "experiment/comparison.csv")
    return pd.read_csv(path)


def test_a_backend_config_is_checked_key_by_key():
    settings = SlurmSettings.from_config(
        {
            "partition": "gpu",
            "gpus_per_task": 1,
            "mem_gb": 32,
            "sbatch": {"qos": "low"},
            "STORAGE_DIR": None,
            "SYNCHRONOUS": False,
        }  # fmt: skip
    )  # what MLflow adds to the config is not the user's
    parameters = settings.executor_parameters()
    assert parameters["partition"] == "gpu" and parameters["gpus_per_task"] == 1
    assert parameters["mem"] == "32GB" and parameters["additional_parameters"] == {"qos": "low"}
    assert "account" not in parameters  # unset: the cluster's default
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['gpus'\]; it takes partition"):
        SlurmSettings.from_config({"gpus": 1})
    with pytest.raises(ConfigError, match="'time_min' is '2h'; give a whole number"):
        SlurmSettings.from_config({"time_min": "2h"})


@pytest.mark.slow
def test_a_cancelled_job_is_reported_and_resumed_and_the_tables_equal_a_local_run(
    server, slurm, tmp_path
):
    client = MlflowClient(tracking_uri=server.uri())
    config = tmp_path / "slurm.json"
    config.write_text(json.dumps({"cpus_per_task": 1, "time_min": 30,
                                  "log_dir": str(tmp_path / "jobs")}))  # fmt: skip
    on_slurm = ["--backend", "slurm", "--backend-config", str(config)]

    process = _main(server, slurm, "on-slurm", *on_slurm)
    deadline, cancelled = time.monotonic() + 600, None
    while time.monotonic() < deadline and process.poll() is None and cancelled is None:
        running = [job for job, state in slurm.jobs().items() if state == "RUNNING"]
        if running:
            cancelled = running[0]
            slurm.run("scancel", cancelled)
        time.sleep(0.5)
    code, output = _finish(process)
    assert cancelled, f"no retraining job ever ran: {output[-3000:]}; {slurm.logs()}"
    assert code != 0
    said = output.strip().splitlines()[-1]
    assert "1 retraining(s) failed" in said and f"Slurm job {cancelled} CANCELLED" in said
    assert str(tmp_path / "jobs") in said  # its log
    before = {r.info.run_id: r.info.status for r in _retrainings(client, "on-slurm")}
    assert sorted(before.values()) == ["FINISHED", "FINISHED", "KILLED"]

    code, output = _finish(_main(server, slurm, "on-slurm", *on_slurm))
    assert code == 0, output[-3000:]
    after = {r.info.run_id: r.info.status for r in _retrainings(client, "on-slurm")}
    assert after == dict.fromkeys(before, "FINISHED")  # resumed in its run, none repeated
    assert len(slurm.jobs()) == 4  # three retrainings, one of them twice

    code, output = _finish(_main(server, slurm, "local", "--workers", "1"))
    assert code == 0, output[-3000:]
    pd.testing.assert_frame_equal(_comparison(client, "on-slurm"), _comparison(client, "local"))
