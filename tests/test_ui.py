"""`xlinfluence ui` as a new user meets it: after the pipeline, in the folder holding
mlflow.db, it prints a link that a fresh browser follows to the runs table (not MLflow's
GenAI overview), the analyze run's report opens, and Ctrl-C, SIGTERM or SIGHUP stops it
cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

import pytest
from mlflow.tracking import MlflowClient

from xlinfluence import tracking

from .browser import SCREENSHOTS, browser, show_runs_and_report

pytestmark = pytest.mark.slow

LINK = re.compile(r"(http://\S+/#/experiments/(\d+)/runs)")


def _ui(*args: str, cwd, env_uri: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    if env_uri is not None:
        env["MLFLOW_TRACKING_URI"] = env_uri

    # a terminal's Ctrl-C reaches a process whose SIGINT is at its default; a shell without
    # job control starts background commands with it ignored (nohup: SIGHUP), and the child
    # would inherit that and rightly keep ignoring it
    def default_sigint():
        for each in (signal.SIGINT, signal.SIGHUP):
            signal.signal(each, signal.SIG_DFL)

    return subprocess.Popen(
        [sys.executable, "-m", "xlinfluence.cli", "ui", "--no-open", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=default_sigint,
    )  # fmt: skip


def _read_link(process: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if found := LINK.search(line):
            return found.group(1)
    process.kill()
    raise AssertionError("no runs link printed:\n" + "".join(seen))


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ui_links_to_the_runs_table_and_stops_on_ctrl_c(main_runs, tracking_env):
    driver = browser()  # skips where Chromium is absent, before starting anything
    client = MlflowClient()
    names = {s: client.get_run(r).data.tags[tracking.RUN_NAME_TAG] for s, r in main_runs.items()}
    experiment = client.get_run(main_runs["main"]).info.experiment_id
    process = _ui(cwd=tracking_env)  # no MLFLOW_TRACKING_URI: ./mlflow.db, as in the README
    try:
        link = _read_link(process)
        assert LINK.search(link).group(2) == experiment
        base = link.split("/#/")[0]
        report = (
            f"{base}/#/experiments/{experiment}/runs/{main_runs['analyze']}/artifacts/"
            "analysis/report.html"
        )
        show_runs_and_report(driver, link, names, report, "ui")
    finally:
        driver.quit()
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        output, _ = process.communicate(timeout=90)
    assert process.returncode == 0, output
    assert "stopped." in output
    assert not _port_open(urllib.parse.urlparse(base).port)  # the UI's workers are gone too
    assert (SCREENSHOTS / "ui-runs.png").stat().st_size > 10_000


def test_ui_without_a_store_says_where_it_looked(tmp_path):
    process = _ui(cwd=tmp_path)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "Traceback" not in output
    assert "MLFLOW_TRACKING_URI is unset" in output and str(tmp_path / "mlflow.db") in output


def test_ui_names_the_experiments_a_store_has(main_runs, tracking_env):
    process = _ui("--experiment", "nope", cwd=tracking_env)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "no experiment named 'nope'" in output and "Default" in output


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_ui_stops_its_server_on_sigterm_and_sighup(main_runs, tracking_env, stop):
    """What a scheduler or a closed terminal sends stops the UI as Ctrl-C does: nothing it
    started keeps the port."""
    process = _ui(cwd=tracking_env)
    try:
        port = urllib.parse.urlparse(_read_link(process)).port
        assert _port_open(port)
    finally:
        process.send_signal(stop)
        output, _ = process.communicate(timeout=90)
    assert process.returncode == 0, output
    assert "stopped." in output
    assert not _port_open(port)
