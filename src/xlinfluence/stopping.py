"""What an xlinfluence command does when it is told to stop.

SIGTERM is what a cluster scheduler sends before its SIGKILL (Slurm: at the time limit, or
on `scancel`), and what `kill` sends; SIGHUP comes from a closed terminal; SIGINT from
Ctrl-C. Under `stop_signals()` all three raise `Stopped` in the main thread, so every
`with` block unwinds as it does for Ctrl-C: a step's MLflow run is marked KILLED
(tracking/runs.py) and its staging folders (checkpoints included) are removed, a `main`
run cancels the step it is waiting for (MLflow cancels a project run on KeyboardInterrupt,
which `Stopped` is), `ui` stops the MLflow UI it started and `server start` what it had
started. The command then exits with 128 + the signal's number and one line that says how
to continue. A second signal during that clean-up is ignored; SIGKILL cannot be caught,
and a run killed so stays RUNNING until it is resumed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived. A KeyboardInterrupt, so no `except Exception` swallows it and
    whatever already handles Ctrl-C handles SIGTERM and SIGHUP the same way. `run_id` and
    `step`: the innermost step run it ended as KILLED, where there was one."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.run_id = ""
        self.step = ""

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame) -> None:
    for each in SIGNALS:  # the clean-up the exception starts is not interrupted again
        signal.signal(each, signal.SIG_IGN)
    raise Stopped(signum)


@contextmanager
def stop_signals() -> Iterator[None]:
    """Within the block, SIGTERM, SIGHUP and SIGINT raise `Stopped` (in the main thread;
    elsewhere, where Python cannot set handlers, nothing changes). A signal the process
    was started ignoring stays ignored: `nohup` ignores SIGHUP, a shell without job control
    starts background commands ignoring SIGINT, and both mean the user asked for that."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        each: signal.signal(each, _raise)
        for each in SIGNALS
        if signal.getsignal(each) is not signal.SIG_IGN  # `nohup`, a background job: kept
    }
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


#: step -> how to continue a step run that a signal stopped
CONTINUE = {
    "train": "continue it from its last complete epoch with resume_run_id={run} (same parameters)",
    "influence": "continue it from its last finished chunk with resume_run_id={run} (same "
    "parameters)",
    "analyze": "run the same command again",
    "main": "run the same command again: its finished steps are reused, an unfinished train "
    "or influence step can be continued with its own resume_run_id",
}


def said(stop: Stopped) -> str:
    """The one line a stopped command prints."""
    if not stop.run_id:
        return f"stopped by {stop.name} before any run was opened; nothing was logged."
    how = CONTINUE.get(stop.step, "run the same command again").format(run=stop.run_id)
    return (
        f"stopped by {stop.name}: run {stop.run_id} ({stop.step}) is marked KILLED and its "
        f"temporary files are removed; {how}."
    )
