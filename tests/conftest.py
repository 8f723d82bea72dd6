"""Shared fixtures: each test module that launches runs gets its own tracking store
(`tracking_env`) and, where it asks, its own `main` run on a small built-in-corpus setting
(`main_runs`), so no module sees another's runs and the order of modules does not matter."""

from __future__ import annotations

import importlib
import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from xlinfluence import tracking
from xlinfluence.cli import cli
from xlinfluence.server import ServerError, TeamServer, postgres_bin
from xlinfluence.server.server_user import ServerUser

SETTING = [
    "--model", "tiny", "--learning-rate", "1e-3",
    "--languages", "en,de,ru", "--train-per-language", "en=24,de=16,ru=16",
    "--test-per-language", "4", "--epochs", "2", "--batch-size", "8",
    "--influence-batch-size", "16", "--top-k", "5", "--seed", "3",
    "--method", "dot",  # the engine's exactness tests compare raw TracIn products
]  # fmt: skip


@pytest.fixture(scope="module")
def tracking_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    patch.setenv("XLINFLUENCE_CACHE", str(root / "cache"))
    patch.chdir(root)
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    yield root
    patch.undo()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test meets no Accelerate state left by another (one per process: an
    Accelerator with another mixed_precision than the first is refused)."""
    from xlinfluence.cli import fresh_accelerate_state as forget

    forget()
    yield
    forget()


def run_cli(*args: str) -> tuple[int, str]:
    """Exit code and everything printed (stdout and stderr interleaved)."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def run_step(*args: str) -> str:
    """Run a step that must succeed; its run ID (the last line of stdout)."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def main_runs(tracking_env):
    """The run IDs of the `main` run this module launched and of its three steps (main
    prints them as JSON)."""
    runs = json.loads(run_step("main", *SETTING))
    assert MlflowClient().get_run(runs["main"]).data.tags.get(tracking.STEP_TAG) == "main"
    return {s: runs[s] for s in ("main", "train", "influence", "analyze")}


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Converted models (e5-small) go to a per-session folder, not the user's cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XLINFLUENCE_MODEL_CACHE", str(tmp_path_factory.mktemp("models")))
    yield
    patch.undo()


def shared_data(*parts: str) -> Path:
    """A folder of the real benchmark data beside the checkout, or skip the test saying why."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_dir():
        pytest.skip(
            f"real benchmark data not found at {path}: it lives in ../shared/data beside the "
            "project checkout (CI has it; a user's clone does not)"
        )
    return path


def require_team_server(*modules: str) -> None:
    """Skip, saying what is missing, unless PostgreSQL's server programs and the Python
    modules a team-server test needs are here (CI installs them: `pip install -e '.[team]'`)."""
    needed = ("psycopg2", *modules)
    try:
        postgres_bin()
        for module in needed:
            importlib.import_module(module)
    except (ServerError, ImportError) as err:
        pytest.skip(
            f"no PostgreSQL server programs or {', '.join(needed)} here ({err}); CI installs them"
        )
    if user := ServerUser.when_root():
        try:
            user.check_can_run_mlflow()
        except ServerError as err:
            pytest.skip(f"{err} (CI lets it: .ci/run)")


@contextmanager
def team_server():
    """A real team server (PostgreSQL + MLflow) in a fresh folder under /tmp, stopped and
    removed afterwards; skips where its programs are absent (require_team_server)."""
    require_team_server()
    root = Path(tempfile.mkdtemp(prefix="xlinfluence-server-", dir="/tmp"))
    root.chmod(0o755)  # PostgreSQL runs as the postgres user when the tests run as root
    server = TeamServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def assert_database_asks_for_a_password(server) -> None:
    """A team server's PostgreSQL refuses a password-less login over TCP and through its
    socket, and takes the password in the folder's secrets."""
    import psycopg2

    port = server._load().postgres_port
    for host in ("127.0.0.1", str(server.root / "socket")):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host=host, port=port, user="mlflow", dbname="mlflow", password="")
    password = (server.root / "secrets" / "postgres-password").read_text().strip()
    psycopg2.connect(
        host="127.0.0.1", port=port, user="mlflow", dbname="mlflow", password=password
    ).close()


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs: where writing a 1 MiB file fills the disk (ENOSPC). Mounting needs
    root, as CI runs; elsewhere the test is skipped, saying so."""
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); CI runs as root")
    try:
        yield small
    finally:
        subprocess.run(["umount", str(small)], check=False)
