"""Retrainings on a real Slurm cluster (tests/slurm.py: slurmctld, slurmd and munge from
Debian's slurm-wlm, one node) against a real tracking server: an `experiment=lds` study
through `backend=slurm` gives the tables a local run gives; a restarted study takes up the
jobs it had queued; a cancelled job is reported with its job id and log, and the study
resumes it in its own run without repeating the finished retrainings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from xlinfluence import tracking
from xlinfluence.errors import ConfigError
from xlinfluence.tracking.slurm import JOB_TAG, SlurmSettings, Squeue, _job_named

from .conftest import SETTING, team_server
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
    with team_server() as started:
        yield started


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
    found = client.get_experiment_by_name(experiment)
    if found is None:  # not made yet
        return []
    experiment_id = found.experiment_id
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
    example = Path(__file__).resolve().parents[1] / "configs" / "slurm" / "backend_config.json"
    assert SlurmSettings.from_config(json.loads(example.read_text())).gpus_per_task == 1
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['gpus'\]; it takes partition"):
        SlurmSettings.from_config({"gpus": 1})
    with pytest.raises(ConfigError, match="'time_min' is '2h'; give a whole number"):
        SlurmSettings.from_config({"time_min": "2h"})


def test_a_failing_squeue_reads_as_not_yet_known(monkeypatch):
    """A controller that does not answer for a moment must not fail a running job."""
    monkeypatch.setenv("SLURM_CONF", "/nonexistent/slurm.conf")
    monkeypatch.setenv("PATH", "/nonexistent")  # and where there is no squeue at all
    assert Squeue().state("12") is None


@pytest.mark.slow
def test_a_job_whose_launcher_died_in_sbatch_is_found_by_its_name(slurm, monkeypatch):
    """A run tagged `<job name>[<task>]` before sbatch answered is matched to its task."""
    name = "xlinfluence-probe"
    slurm.run("sbatch", "--hold", f"--job-name={name}", "--array=0-1", "--wrap", "true")
    slurm.run("sbatch", "--hold", "--job-name=xlinfluence-single", "--wrap", "true")
    monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])
    array = _job_named(name, 1)
    assert array.endswith("_1") and array in slurm.jobs()
    assert _job_named("xlinfluence-single", 0) in slurm.jobs()
    assert _job_named("xlinfluence-single", 1) == _job_named("xlinfluence-none", 0) == ""
    slurm.run("scancel", "--name", name)
    slurm.run("scancel", "--name", "xlinfluence-single")


@pytest.mark.slow
def test_a_restarted_study_takes_up_its_jobs_reports_a_cancelled_one_and_resumes_it(
    server, slurm, tmp_path
):
    """Launch 1 submits its retrainings as one held job array and is killed. Launch 2 takes
    the queued jobs up instead of submitting them again; once released, one is cancelled
    while it runs, and launch 2 names it (job id, state, log). Launch 3 resumes it in its
    own run and repeats nothing; the tables equal a local run's."""
    client = MlflowClient(tracking_uri=server.uri())
    jobs = tmp_path / "jobs"
    held, free = tmp_path / "held.json", tmp_path / "slurm.json"
    held.write_text(json.dumps({"time_min": 30, "log_dir": str(jobs), "sbatch": {"hold": True}}))
    free.write_text(json.dumps({"time_min": 30, "log_dir": str(jobs)}))

    earlier = set(slurm.jobs())  # other tests' jobs on this cluster

    def study_jobs() -> dict[str, str]:
        return {job: state for job, state in slurm.jobs().items() if job not in earlier}

    first = _main(server, slurm, "on-slurm", "--backend", "slurm", "--backend-config", str(held))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None:
        if len([r for r in _retrainings(client, "on-slurm") if JOB_TAG in r.data.tags]) == 3:
            break
        time.sleep(0.5)
    first.kill()
    output, _ = first.communicate()
    assert len(study_jobs()) == 3, f"{output[-3000:]}; {slurm.logs()}"

    second = _main(server, slurm, "on-slurm", "--backend", "slurm", "--backend-config", str(held))
    lines, reader = _lines(second)
    _wait_for(lines, "3 still running from an earlier launch")
    array = sorted(study_jobs(), key=lambda job: [int(n) for n in job.split("_")])
    assert len({job.split("_")[0] for job in array}) == 1, array  # one job array
    slurm.run("scontrol", "release", ",".join(array))
    cancelled = _first_running(study_jobs)
    slurm.run("scancel", cancelled)  # mid-way
    assert second.wait(timeout=600) != 0
    reader.join(timeout=30)
    said = lines[-1].strip()
    assert "1 retraining(s) failed" in said and f"Slurm job {cancelled} CANCELLED" in said
    assert f"{jobs}/{cancelled}_0_log.out" in said
    assert len(study_jobs()) == 3  # launch 2 submitted nothing
    before = {r.info.run_id: r.info.status for r in _retrainings(client, "on-slurm")}
    assert sorted(before.values()) == ["FINISHED", "FINISHED", "KILLED"]

    code, output = _finish(
        _main(server, slurm, "on-slurm", "--backend", "slurm", "--backend-config", str(free))
    )
    assert code == 0, output[-3000:]
    after = {r.info.run_id: r.info.status for r in _retrainings(client, "on-slurm")}
    assert after == dict.fromkeys(before, "FINISHED")  # resumed in its run, none repeated
    assert len(study_jobs()) == 4  # the cancelled one submitted again, once (a plain job)

    code, output = _finish(_main(server, slurm, "local", "--workers", "1"))
    assert code == 0, output[-3000:]
    pd.testing.assert_frame_equal(_comparison(client, "on-slurm"), _comparison(client, "local"))


def _first_running(jobs, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = sorted(job for job, state in jobs().items() if state == "RUNNING")
        if running:
            return running[0]
        time.sleep(0.2)
    raise AssertionError(f"no job started: {jobs()}")


def _lines(process: subprocess.Popen) -> tuple[list[str], threading.Thread]:
    """The process's output lines as they come, and the thread that reads them."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    return lines, reader


def _wait_for(lines: list[str], text: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in lines):
        assert time.monotonic() < deadline, f"never said {text!r}: {''.join(lines)[-3000:]}"
        time.sleep(0.2)
