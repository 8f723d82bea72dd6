"""The pipeline against a real team server (PostgreSQL + `mlflow server --serve-artifacts`):
runs and artifacts through the server, reuse, the UI in a real browser, and faults.

Needs PostgreSQL's server programs and psycopg2 (and Chromium with ChromeDriver for the
browser test); each test skips, saying what is missing, where they are absent. CI
installs them (.ci/run).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from xlinfluence import artifacts, tracking
from xlinfluence.server import TeamServer
from xlinfluence.server.postgres import DB_USER, Cluster

from .browser import SCREENSHOTS, browser, show_runs_and_report
from .conftest import (
    SETTING,
    assert_database_asks_for_a_password,
    require_team_server,
    team_server,
)

pytestmark = pytest.mark.slow

CHUNKED = ["--batch-size", "1", "--train-chunk-size", "3", "--test-chunk-size", "6", "--top-k", "5"]


@pytest.fixture(scope="module")
def server():
    with team_server() as started:
        yield started


def test_without_auth_the_database_still_asks_for_a_password(server):
    """No accounts does not mean an open database: a trusted local login would make every
    user of a shared machine the database's superuser."""
    assert_database_asks_for_a_password(server)
    assert not server.auth


def test_started_by_root_the_server_that_listens_runs_as_its_own_system_user(server):
    """The process a network reaches is not root, nor are its workers."""
    if os.geteuid() != 0:
        pytest.skip("started by a normal user, the server runs as that user; CI runs as root")
    state = server._load()
    group = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
             and _group_of(int(p.name)) == state.tracking_pid]  # fmt: skip
    assert len(group) >= 2, "the server and its workers"
    own = pwd.getpwnam("xlinfluence-server").pw_uid  # made by the first start as root
    assert {Path(f"/proc/{pid}").stat().st_uid for pid in group} == {own}
    secrets = (server.root / "secrets").stat()  # the database password: root's alone
    assert secrets.st_uid == 0 and secrets.st_mode & 0o077 == 0


def _group_of(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return -1


def test_a_cluster_that_trusted_local_logins_asks_for_a_password_once_started():
    """A folder set up by an earlier version (initdb --auth=trust, no password) is given a
    password and SCRAM logins at its next start."""
    require_team_server()
    root = Path(tempfile.mkdtemp(prefix="xlinfluence-server-", dir="/tmp"))
    root.chmod(0o755)
    earlier = Cluster(root, None)
    for folder in (earlier.data, earlier.socket_dir):
        folder.mkdir()
        earlier._own(folder)
    earlier._run("initdb", "-D", str(earlier.data), "-U", DB_USER, "--auth=trust", "-E", "UTF8")
    team = TeamServer(root)
    try:
        team.start()
        assert_database_asks_for_a_password(team)
        assert not team.cluster.trusts_logins() and not team.auth
        team.stop()
        team = TeamServer(root)  # and again, now with its password
        team.start()
        assert_database_asks_for_a_password(team)
    finally:
        team.stop()
        shutil.rmtree(root, ignore_errors=True)


def _cli(server: TeamServer, *args: str, cwd: Path | None = None, **kwargs) -> subprocess.Popen:
    env = os.environ | {
        "MLFLOW_TRACKING_URI": server.uri(),
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2",  # these steps last seconds
    }
    env.pop("MLFLOW_RUN_ID", None)
    return subprocess.Popen(
        [sys.executable, "-m", "xlinfluence.cli", *args],
        env=env, cwd=cwd or server.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, **kwargs,
    )  # fmt: skip


def _run(server: TeamServer, *args: str) -> str:
    process = _cli(server, *args)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    return output.strip().splitlines()[-1]


def _client(server: TeamServer) -> MlflowClient:
    return MlflowClient(tracking_uri=server.uri())


def _children(client: MlflowClient, main_id: str) -> dict[str, str]:
    tags = client.get_run(main_id).data.tags
    return {s: tags[f"xlinfluence.{s}_run_id"] for s in ("train", "influence", "analyze")}


def _run_main(server: TeamServer, *args: str) -> dict[str, str]:
    """`main`'s run IDs, printed as JSON on its last line: main, train, influence, analyze."""
    return json.loads(_run(server, "main", *args))


@pytest.fixture(scope="module")
def pipeline(server):
    runs = _run_main(server, *SETTING)
    assert _children(_client(server), runs["main"]) == {
        s: runs[s] for s in ("train", "influence", "analyze")
    }
    return runs


def test_pipeline_leaves_four_finished_runs_with_artifacts_on_the_server(server, pipeline):
    client = _client(server)
    runs = {step: client.get_run(run_id) for step, run_id in pipeline.items()}
    assert {s: r.info.status for s, r in runs.items()} == dict.fromkeys(runs, "FINISHED")
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs.values())
    stored = {p.name for p in (server.root / "artifacts").rglob("*") if p.is_file()}
    assert {"model.safetensors", "scores.safetensors", "report.html"} <= stored
    names = {s: r.data.tags[tracking.RUN_NAME_TAG] for s, r in runs.items()}
    assert names["train"] == "train · cldr · tiny · en,de,ru · en=24,de=16,ru=16 · seed 3"
    assert names["analyze"].startswith("analyze · top-5 · influence ")
    experiment = client.get_experiment(runs["main"].info.experiment_id)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "finetuning"
    inputs = {(d.dataset.name, d.tags[0].value) for d in runs["train"].inputs.dataset_inputs}
    assert inputs == {("cldr-train", "training"), ("cldr-test", "testing")}
    tables = {a.path for a in client.list_artifacts(pipeline["analyze"], "analysis/tables")}
    assert "analysis/tables/shares.json" in tables
    system = [k for k in runs["train"].data.metrics if k.startswith("system/")]
    assert system, "system metrics (CPU, memory) were not logged"


def test_reuse_works_across_the_server(server, pipeline):
    client = _client(server)
    again = _run_main(server, *SETTING)
    assert again["main"] != pipeline["main"]
    assert _children(client, again["main"]) == {
        s: pipeline[s] for s in ("train", "influence", "analyze")
    }


def test_influence_survives_a_tracking_server_outage(server, pipeline):
    """The server is SIGKILLed mid-influence and restarted: the step finishes, or stops with
    a clear error and resumes; either way the tensors equal an uninterrupted run's and no
    chunk logged before the outage is lost."""
    client = _client(server)
    train_id = pipeline["train"]
    uninterrupted = _run(server, "influence", "--train-run-id", train_id, *CHUNKED)

    before = {r.info.run_id for r in client.search_runs(["0"])}
    process = _cli(server, "influence", "--train-run-id", train_id, *CHUNKED)
    run_id, logged = None, []
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        new = [r for r in client.search_runs(["0"]) if r.info.run_id not in before]
        if new and len(logged := _chunks(client, new[0].info.run_id)) >= 2:
            run_id = new[0].info.run_id
            server.kill_tracking(signal.SIGKILL)
            time.sleep(3)
            server.start_tracking()
            break
        time.sleep(0.1)
    output, _ = process.communicate(timeout=900)
    assert run_id, f"influence finished before the outage could happen:\n{output}"
    assert set(logged) <= set(_chunks(client, run_id)), "chunks logged before the outage lost"
    if process.returncode == 0:
        finished = run_id
    else:
        last = output.strip().splitlines()[-1]
        assert last.startswith("Error: ") and "Traceback" not in last, output[-3000:]
        finished = _run(
            server, "influence", "--train-run-id", train_id, *CHUNKED, "--resume-run-id", run_id
        )
    want, got = _scores(client, uninterrupted), _scores(client, finished)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


def test_two_main_runs_at_once_finish_without_corrupting_the_store(server, pipeline):
    client = _client(server)
    processes = [
        _cli(server, "main", *SETTING, "--seed", str(seed), "--threads", "1") for seed in (11, 12)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    mains = [json.loads(out.strip().splitlines()[-1])["main"] for out in outputs]
    for main_id in mains:
        children = _children(client, main_id)
        for step, run_id in children.items():
            run = client.get_run(run_id)
            assert run.info.status == "FINISHED"
            assert run.data.tags[tracking.PARENT_TAG] == main_id
            assert run.data.tags[tracking.STEP_TAG] == step
    assert set(_children(client, mains[0]).values()).isdisjoint(
        _children(client, mains[1]).values()
    )


def test_the_ui_shows_named_runs_and_the_report(server, pipeline):
    """Headless Chromium opens the MLflow UI on the server, as a person would."""
    driver = browser()
    client = _client(server)
    experiment = client.get_run(pipeline["main"]).info.experiment_id
    names = {s: client.get_run(pipeline[s]).data.tags[tracking.RUN_NAME_TAG] for s in pipeline}
    report = (
        f"{server.uri()}/#/experiments/{experiment}/runs/{pipeline['analyze']}/artifacts/"
        "analysis/report.html"
    )
    try:
        show_runs_and_report(
            driver, f"{server.uri()}/#/experiments/{experiment}/runs", names, report, "server"
        )
    finally:
        driver.quit()
    assert (SCREENSHOTS / "server-runs.png").stat().st_size > 10_000


def _chunks(client: MlflowClient, run_id: str) -> list[str]:
    return [
        chunk.path
        for folder in client.list_artifacts(run_id, "influence/chunks")
        for chunk in client.list_artifacts(run_id, folder.path)
    ]


def _scores(client: MlflowClient, run_id: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, artifacts.SCORES, tmp)
        return load_file(path)
