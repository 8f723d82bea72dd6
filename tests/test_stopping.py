"""Stop signals become `Stopped` inside a command, and a signal ignored at start stays so."""

from __future__ import annotations

import os
import signal

import pytest

from xlinfluence.stopping import Stopped, said, stop_signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_raises_stopped_and_the_handlers_are_restored(sig):
    started_with = signal.signal(sig, signal.SIG_DFL)  # as a terminal starts a command
    try:
        with pytest.raises(Stopped) as stopped, stop_signals():
            os.kill(os.getpid(), sig)
            signal.sigtimedwait([], 0)  # let the handler run, had it not yet
        assert stopped.value.signum == sig and stopped.value.exit_code == 128 + sig
        assert isinstance(stopped.value, KeyboardInterrupt)  # what handles Ctrl-C handles it
        assert signal.getsignal(sig) == signal.SIG_DFL
    finally:
        signal.signal(sig, started_with)


def test_a_signal_ignored_at_start_stays_ignored():
    """`nohup` starts a command ignoring SIGHUP: a closed terminal must not stop it."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_signals():
            os.kill(os.getpid(), signal.SIGHUP)
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_the_line_says_how_to_continue():
    stop = Stopped(signal.SIGTERM)
    assert said(stop) == "stopped by SIGTERM before any run was opened; nothing was logged."
    stop.run_id, stop.step = "a" * 32, "influence"
    assert said(stop).endswith(
        f"last finished chunk with resume_run_id={'a' * 32} (same parameters)."
    )
    stop.step = "analyze"
    assert said(stop).endswith("; run the same command again.")
