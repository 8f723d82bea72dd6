"""Stopping a server's process group signals only that group: never the caller's own
(group id 0, what a state saved before its server started holds) and never a process that
has since become another program's (a stale id after a reboot)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from xlinfluence.server import processes


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
