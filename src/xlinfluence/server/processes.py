"""Server processes on this machine: free ports, waiting for health, stopping process groups
(the team server's and `xlinfluence ui`'s MLflow servers share them)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from xlinfluence.errors import XlinfluenceError

HOST = "127.0.0.1"


class ServerError(XlinfluenceError):
    """The tracking server or its database could not be started, reached or stopped."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def answers(uri: str) -> bool:
    """True when the MLflow server at `uri` answers /health (open even under --auth)."""
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_healthy(uri: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Return once the MLflow server at `uri` answers /health; raise with its log's tail if
    the process exits or the timeout passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if answers(uri):
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log.is_file() else "(no log)"
    raise ServerError(f"the MLflow server at {uri} did not come up; its log ends:\n{tail}")


def stop_group(
    pgid: int, sig: int = signal.SIGTERM, *, grace: float, expect: str = "", started: str = ""
) -> None:
    """Send `sig` to a process group (a server and its workers), SIGKILL it if it outlives
    `grace` seconds, and return once no process of the group is left (its port is free).

    Nothing is sent to a group id under 2 (0 is the caller's own group: a state saved before
    its server started holds it), nor to a group whose leader's command line lacks `expect`
    or whose start (`started`, as `identity` gave it when it was launched) is another: an
    id saved before a reboot or reused since is another program's."""
    if pgid < 2 or (expect and not runs(pgid, expect)):
        return
    if started and identity(pgid) != started:
        return
    for signal_, timeout in ((sig, grace), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(pgid, signal_)
        except ProcessLookupError:
            return
        wait_gone(pgid, timeout)  # reaps the leader if it is this process's child
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def wait_gone(pid: int, timeout: float) -> bool:
    """True once the process is gone (reaping it if it is this process's child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.1)
    return False


def identity(pid: int) -> str:
    """Which process `pid` is, beyond its number: this boot's id and the process's start
    time in clock ticks since boot (/proc); '' where there is no /proc or no such process.
    Two processes that ever share a pid differ in it."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"  # field 22: starttime


def runs(pid: int, text: str) -> bool:
    """Whether process `pid` is alive with `text` in its command line. Where there is no
    /proc to read (not Linux), an alive process counts as a match."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False  # /proc is there, the process is not
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
