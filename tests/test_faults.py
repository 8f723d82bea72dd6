"""Faults a lab's runs meet: a training process killed mid-epoch (SIGKILL), then resumed.

The tracking-server outage and concurrent `main` runs need the team server and live in
tests/test_team_server.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from xlinfluence import artifacts, tracking

from .conftest import run_cli, run_step

pytestmark = pytest.mark.slow

# Enough batches per epoch (3 x 120 examples, batch 4) that a kill lands inside an epoch.
TRAIN = [
    "--model", "tiny", "--learning-rate", "1e-3", "--languages", "en,de,ru",
    "--train-per-language", "120", "--test-per-language", "4", "--epochs", "3",
    "--batch-size", "4", "--seed", "8", "--threads", "1",
]  # fmt: skip


def _state_epochs(run_id: str) -> list[str]:
    return tracking.artifact_names(run_id, "training_state")


def _checkpoint_bytes(run_id: str) -> dict[str, bytes]:
    """Each checkpoint's weights file; read afresh (the step cache is for finished runs,
    and these runs change under the test)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifacts.CHECKPOINTS, dst_path=tmp
        ))  # fmt: skip
        index = artifacts.load_checkpoint_index(root / Path(artifacts.CHECKPOINT_INDEX).name)
        return {e["name"]: (root / e["name"] / "model.safetensors").read_bytes() for e in index}


def _kill_mid_training(tracking_env) -> str:
    """Start a train run, SIGKILL it once its first epoch's state is logged; its run ID."""
    before = {r.info.run_id for r in MlflowClient().search_runs(["0"])}
    process = subprocess.Popen(
        [sys.executable, "-m", "xlinfluence.cli", "train", *TRAIN],
        cwd=tracking_env, env=os.environ.copy(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        new = [r for r in MlflowClient().search_runs(["0"]) if r.info.run_id not in before]
        if new and _state_epochs(new[0].info.run_id):
            time.sleep(0.3)  # into epoch 2
            process.send_signal(signal.SIGKILL)
            process.wait()
            return new[0].info.run_id
        time.sleep(0.05)
    process.kill()
    pytest.fail("the train run finished (or never saved a state) before it could be killed")


def test_killed_training_resumes_to_identical_checkpoints(tracking_env, monkeypatch):
    uninterrupted = run_step("train", *TRAIN)
    expected = _checkpoint_bytes(uninterrupted)
    assert sorted(expected) == ["epoch-1", "epoch-2", "epoch-3"]

    killed = _kill_mid_training(tracking_env)
    client = MlflowClient()
    assert client.get_run(killed).info.status == "RUNNING"  # killed, never finished
    assert "epoch-3" not in _checkpoint_bytes(killed)

    # A new run continuing the killed one holds every epoch, equal byte for byte.
    resumed = run_step("train", *TRAIN, "--resume-run-id", killed)
    assert _checkpoint_bytes(resumed) == expected
    history = client.get_metric_history(resumed, "accuracy.all")
    assert [m.step for m in history] == [1, 2, 3]
    assert client.get_run(resumed).data.tags[tracking.RESUMED_TAG].startswith(killed)

    # The killed run itself, re-attached as `mlflow run --run-id` does, finishes the same.
    monkeypatch.setenv("MLFLOW_RUN_ID", killed)
    assert run_step("train", *TRAIN) == killed
    assert client.get_run(killed).info.status == "FINISHED"
    assert _checkpoint_bytes(killed) == expected


def test_resume_refuses_a_run_with_other_parameters(tracking_env):
    one_epoch = [*TRAIN, "--epochs", "1"]  # the later --epochs wins
    finished = run_step("train", *one_epoch)
    code, output = run_cli("train", *TRAIN, "--resume-run-id", finished)
    assert code != 0
    assert "trained with other values of ['epochs']" in output
