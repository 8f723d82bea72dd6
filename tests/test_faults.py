"""Faults a lab's runs meet: a training process killed mid-epoch (SIGKILL) or told to stop
(SIGTERM, Ctrl-C), then resumed.

The tracking-server outage and concurrent `main` runs need the team server and live in
tests/test_team_server.py.
"""

from __future__ import annotations

import json
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


def _as_a_terminal_starts_it() -> None:
    """The stop signals at their defaults, whatever the test runner was started with (a
    background job ignores SIGINT, nohup SIGHUP; a command keeps what it was given)."""
    for each in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(each, signal.SIG_DFL)


def _kill_mid_training(
    tracking_env, sig: int = signal.SIGKILL, env: dict | None = None
) -> tuple[str, subprocess.Popen]:
    """Start a train run, send it `sig` once its first epoch's state is logged; its run ID
    and its ended process (what it printed to stderr: `.said`)."""
    before = {r.info.run_id for r in MlflowClient().search_runs(["0"])}
    process = subprocess.Popen(
        [sys.executable, "-m", "xlinfluence.cli", "train", *TRAIN],
        cwd=tracking_env, env=env or os.environ.copy(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=_as_a_terminal_starts_it,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        new = [r for r in MlflowClient().search_runs(["0"]) if r.info.run_id not in before]
        if new and _state_epochs(new[0].info.run_id):
            time.sleep(0.3)  # into epoch 2
            process.send_signal(sig)
            _, process.said = process.communicate(timeout=120)
            return new[0].info.run_id, process
        time.sleep(0.05)
    process.kill()
    pytest.fail("the train run finished (or never saved a state) before it could be killed")


@pytest.fixture(scope="module")
def uninterrupted(tracking_env) -> dict[str, bytes]:
    """The checkpoints of the train run no signal reached."""
    checkpoints = _checkpoint_bytes(run_step("train", *TRAIN))
    assert sorted(checkpoints) == ["epoch-1", "epoch-2", "epoch-3"]
    return checkpoints


def test_killed_training_resumes_to_identical_checkpoints(tracking_env, uninterrupted, monkeypatch):
    expected = uninterrupted
    killed, _ = _kill_mid_training(tracking_env)
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


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_step_marks_its_run_killed_cleans_up_and_says_how_to_resume(
    tracking_env, uninterrupted, tmp_path, stop
):
    """SIGTERM (a scheduler's notice before its kill) or Ctrl-C mid-epoch: the run ends
    KILLED, not RUNNING or FAILED; its staging folder (checkpoints included) is gone; the
    process exits 128 + the signal with one line naming the resume; and the resume lands
    on the uninterrupted checkpoints."""
    staging = tmp_path / "tmp"
    staging.mkdir()
    stopped, process = _kill_mid_training(tracking_env, stop, os.environ | {"TMPDIR": str(staging)})
    assert process.returncode == 128 + stop, process.said
    said = process.said.strip().splitlines()[-1]
    assert said == (
        f"Error: stopped by {signal.Signals(stop).name}: run {stopped} (train) is marked KILLED "
        "and its temporary files are removed; continue it from its last complete epoch with "
        f"resume_run_id={stopped} (same parameters)."
    )
    assert MlflowClient().get_run(stopped).info.status == "KILLED"
    assert list(staging.iterdir()) == []
    if stop == signal.SIGTERM:  # the resume itself is the same for both signals
        resumed = run_step("train", *TRAIN, "--resume-run-id", stopped)
        assert _checkpoint_bytes(resumed) == uninterrupted


def test_resume_refuses_a_run_with_other_parameters(tracking_env):
    one_epoch = [*TRAIN, "--epochs", "1"]  # the later --epochs wins
    finished = run_step("train", *one_epoch)
    code, output = run_cli("train", *TRAIN, "--resume-run-id", finished)
    assert code != 0
    assert "trained with other values of ['epochs']" in output


def test_two_identical_pipelines_started_together_compute_each_step_once(tracking_env):
    """Two `main` runs of the same parameters at the same moment on one SQLite store: the
    second waits for each step the first is computing and reuses it, so the store ends with
    one train, one influence and one analyze run, and both mains name them."""
    small = ["--model", "tiny", "--learning-rate", "1e-3", "--languages", "en,de",
             "--train-per-language", "12", "--test-per-language", "3", "--epochs", "1",
             "--batch-size", "4", "--top-k", "3", "--seed", "11", "--threads", "1"]  # fmt: skip
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "xlinfluence.cli", "main", *small],
            cwd=tracking_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    printed = [process.communicate(timeout=900) for process in processes]
    for process, (_, err) in zip(processes, printed, strict=True):
        assert process.returncode == 0, err[-3000:]
    found = [json.loads(out.strip().splitlines()[-1]) for out, _ in printed]
    assert found[0]["main"] != found[1]["main"]
    ours = {  # what each step's runs of this pipeline have in common
        "train": ("seed", "11"),
        "influence": ("train_run_id", found[0]["train"]),
        "analyze": ("influence_run_id", found[0]["influence"]),
    }
    for step, (name, value) in ours.items():
        assert found[0][step] == found[1][step], step
        runs = MlflowClient().search_runs(
            ["0"], filter_string=f"tags.`{tracking.STEP_TAG}` = '{step}'"
        )
        made = [r.info.run_id for r in runs if tracking.run_params(r).get(name) == value]
        assert made == [found[0][step]], step
