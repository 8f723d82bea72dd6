"""Stopping a server's process group signals only that group: never the caller's own
(group id 0, what a state saved before its server started holds) and never a process that
has since become another program's (a stale id after a reboot); and a start told to stop
leaves nothing running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from xlinfluence.errors import ConfigError
from xlinfluence.server import TeamServer, processes
from xlinfluence.server.processes import ServerError
from xlinfluence.server.server_user import ServerUser
from xlinfluence.server.team import STATE_FILE

from .conftest import require_team_server


def test_a_group_id_under_two_is_never_signalled(monkeypatch):
    sent = []
    monkeypatch.setattr(processes.os, "killpg", lambda pgid, sig: sent.append((pgid, sig)))
    for pgid in (0, 1, -5):
        processes.stop_group(pgid, signal.SIGTERM, grace=0.1)
    assert sent == []


def test_a_group_is_signalled_only_while_its_leader_is_the_expected_program():
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--port", "5999"],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not processes.runs(sleeper.pid, "--port 5999") and time.monotonic() < deadline:
            time.sleep(0.05)  # its command line shows once the interpreter has started
        processes.stop_group(sleeper.pid, grace=5.0, expect="--port 6000")  # another server's
        assert sleeper.poll() is None and processes.runs(sleeper.pid, "--port 5999")
        processes.stop_group(sleeper.pid, grace=5.0, expect="--port 5999")
        sleeper.wait(timeout=10)  # gone (stop_group reaped it, so no status is left)
        assert not processes.runs(sleeper.pid, "--port 5999")
    finally:
        if sleeper.poll() is None:
            os.killpg(sleeper.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_start_told_to_stop_stops_what_it_had_started():
    """SIGTERM while `server start` waits for MLflow (PostgreSQL already up): the command
    fails saying so, and neither PostgreSQL nor the MLflow server is left running."""
    require_team_server()
    root = Path(tempfile.mkdtemp(prefix="xlinfluence-server-", dir="/tmp"))
    root.chmod(0o755)  # PostgreSQL runs as the postgres user when the tests run as root
    state_file = root / STATE_FILE
    process = subprocess.Popen(
        [sys.executable, "-m", "xlinfluence.cli", "server", "start", "--dir", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if state_file.is_file() and json.loads(state_file.read_text())["tracking_pid"]:
                break  # MLflow launched, not yet answering
            time.sleep(0.05)
        state = json.loads(state_file.read_text())
        assert state["tracking_pid"] and process.poll() is None, "started before it was stopped"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
        assert process.returncode != 0
        assert "stopped by SIGTERM while starting" in output
        assert not TeamServer(root).cluster.running()
        assert not processes.runs(state["tracking_pid"], f"--port {state['tracking_port']}")
    finally:
        process.kill()
        TeamServer(root).cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_group_whose_leader_started_at_another_time_is_not_signalled():
    """A pid saved with the identity of the process it named is signalled only while that
    very process holds it (not one that got the number later)."""
    leader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              start_new_session=True)  # fmt: skip
    try:
        now = processes.identity(leader.pid)
        assert now and now == processes.identity(leader.pid)
        boot, ticks = now.rsplit(":", 1)
        processes.stop_group(leader.pid, grace=5.0, started=f"{boot}:{int(ticks) - 1}")
        assert leader.poll() is None  # another start time: another process, left alone
        processes.stop_group(leader.pid, grace=5.0, started=now)
        assert processes.identity(leader.pid) == ""  # gone (stop_group reaped it)
    finally:
        leader.kill()


def test_a_server_user_that_cannot_run_this_python_is_refused_in_one_line(tmp_path, monkeypatch):
    """Started by root with an interpreter in a private folder, the MLflow server could not
    run as the unprivileged user: refused before anything starts, naming the fixes."""
    user = ServerUser.when_root()
    if user is None:
        pytest.skip("only root hands the MLflow server to another user; CI runs as root")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "python").symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(private / "python"))
    with pytest.raises(ServerError, match=r"runs as the unprivileged user 'xlinfluence-server', "
                       r"which cannot run .*private/python with MLflow .*Permission denied.*"
                       r"set XLINFLUENCE_SERVER_USER to a user that can"):  # fmt: skip
        user.check_can_run_mlflow()
    monkeypatch.setenv("XLINFLUENCE_SERVER_USER", "root")
    with pytest.raises(ConfigError, match="is root; the MLflow server must run as an unprivileged"):
        ServerUser.when_root()
