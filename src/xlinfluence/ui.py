"""`xlinfluence ui`: the MLflow UI on this project's store, opened on the runs table.

MLflow 3's UI opens an experiment on its GenAI overview (traces, all empty here) unless the
browser remembers otherwise; it does not read the experiment's `mlflow.experimentKind`
(MLflow issue 24498). A link straight to `#/experiments/<id>/runs` lands on the runs, so
this command starts the UI, prints that link (and opens it where a browser is), and stops
the UI on Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import webbrowser
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from xlinfluence import tracking
from xlinfluence.errors import ConfigError
from xlinfluence.server import HOST, free_port, stop_group, wait_healthy


@dataclass(frozen=True)
class Experiment:
    id: str
    name: str


def store_uri() -> str:
    """MLFLOW_TRACKING_URI, else the README's SQLite file in this folder, which must exist
    (opening the UI on a new empty store would show nothing and hide the mistake)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    db = Path.cwd().resolve() / tracking.DEFAULT_DB
    if not db.is_file():
        raise ConfigError(
            f"no tracking store here: MLFLOW_TRACKING_URI is unset and {db} does not exist. "
            "Run from the folder where you ran the pipeline, or set MLFLOW_TRACKING_URI "
            "(e.g. sqlite:////abs/path/mlflow.db or http://host:port)."
        )
    return f"sqlite:///{db}"


def latest_experiment(uri: str, name: str | None = None) -> Experiment:
    """The experiment named `name`, else the one holding the newest xlinfluence run."""
    client = MlflowClient(tracking_uri=uri)
    if name is not None:
        found = client.get_experiment_by_name(name)
        if found is None:
            names = ", ".join(e.name for e in client.search_experiments())
            raise ConfigError(f"no experiment named {name!r} in {uri}; it has: {names}.")
        return Experiment(found.experiment_id, found.name)
    experiments = client.search_experiments()
    runs = client.search_runs(
        [e.experiment_id for e in experiments],
        filter_string=f"tags.`{tracking.STEP_TAG}` != ''",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise ConfigError(
            f"{uri} holds no xlinfluence run yet; run the pipeline first (README, Quick start)."
        )
    found = client.get_experiment(runs[0].info.experiment_id)
    return Experiment(found.experiment_id, found.name)


def runs_link(base: str, experiment: Experiment) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment.id}/runs"


def serve(uri: str, port: int | None, experiment_name: str | None, open_browser: bool) -> None:
    """Print the runs link; start `mlflow ui` on a local store first and block until Ctrl-C.

    A tracking server (http URI) already serves its UI: the link points at it directly.
    """
    experiment = latest_experiment(uri, experiment_name)
    if uri.startswith(("http://", "https://")):
        _announce(runs_link(uri, experiment), experiment, open_browser)
        return
    port = port or free_port()
    base = f"http://{HOST}:{port}"
    with tempfile.TemporaryDirectory(prefix="xlinfluence-ui-") as tmp:
        log = Path(tmp) / "mlflow-ui.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                 "--host", HOST, "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            wait_healthy(base, process, log)
            _announce(runs_link(base, experiment), experiment, open_browser)
            print("Ctrl-C stops the UI.", flush=True)
            process.wait()
            raise ConfigError(f"the MLflow UI exited by itself; its log ends:\n{_tail(log)}")
        except KeyboardInterrupt:  # Ctrl-C; SIGTERM and SIGHUP too (stopping.Stopped)
            print("stopping the UI ...", flush=True)
        finally:
            stop_group(process.pid, grace=5.0)
    print("stopped.", flush=True)


def _announce(link: str, experiment: Experiment, open_browser: bool) -> None:
    print(f"runs of experiment {experiment.name!r}: {link}", flush=True)
    if open_browser:
        try:
            webbrowser.get()  # raises where no browser is registered (a headless machine)
        except webbrowser.Error:
            return
        webbrowser.open(link)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.is_file() else "(no log)"
