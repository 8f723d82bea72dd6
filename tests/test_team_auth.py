"""A team server with accounts (`xlinfluence server start --auth`), against the real thing:
PostgreSQL with password logins, MLflow's basic-auth app, the pipeline with a user's
MLflow credentials, and a backup restored into a second server.

Needs PostgreSQL's server programs, psycopg2 and Flask-WTF (`pip install -e '.[team]'`);
the server tests skip, saying what is missing, where they are absent. CI installs them.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from xlinfluence import artifacts
from xlinfluence.errors import ConfigError
from xlinfluence.server import Admin, TeamServer
from xlinfluence.server.accounts import ADMIN_PASSWORD_ENV, read_secret

from .conftest import SETTING, assert_database_asks_for_a_password, require_team_server

ADMIN_PASSWORD = "admin-password-for-tests"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}


def _secret_file(folder: Path, name: str, secret: str) -> Path:
    path = folder / name
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


def _env(uri: str, user: str | None = None, password: str | None = None, **extra) -> dict:
    """A client's environment: MLflow's own login variables and nothing of the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PG"))}
    env |= {"MLFLOW_TRACKING_URI": uri, **extra}
    if user:
        env |= {"MLFLOW_TRACKING_USERNAME": user,
                "MLFLOW_TRACKING_PASSWORD": password or PASSWORDS[user]}  # fmt: skip
    return env


def _xlinfluence(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xlinfluence.cli", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error a person sees: exit 1, one line starting 'Error:', no traceback."""
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    last = output.splitlines()[-1]
    assert last.startswith("Error: "), output
    return last


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """A running --auth server, its folder, and accounts for alice and bob (made with the
    `server user create` subcommand, the admin's password from the environment)."""
    require_team_server("flask_wtf")
    root = Path(tempfile.mkdtemp(prefix="xlinfluence-auth-", dir="/tmp"))
    root.chmod(0o755)  # PostgreSQL runs as the postgres user when the tests run as root
    server = TeamServer(root / "server", Admin("admin", ADMIN_PASSWORD))
    server.start()
    secrets = tmp_path_factory.mktemp("secrets")
    admin_env = _env(server.uri(), **{ADMIN_PASSWORD_ENV: ADMIN_PASSWORD})
    for user, password in PASSWORDS.items():
        made = _xlinfluence(
            "server", "user", "create", user, "--dir", str(server.root),
            "--password-file", str(_secret_file(secrets, user, password)),
            env=admin_env, cwd=root,
        )  # fmt: skip
        assert made.returncode == 0, made.stdout + made.stderr
    yield server, root, secrets
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def _as(monkeypatch, uri: str, user: str) -> MlflowClient:
    """MLflow's client logged in as `user` (it reads the login from the environment)."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORDS[user])
    return MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="module")
def pipeline(team):
    """The README's pipeline (the tests' tiny setting) run by alice with her credentials."""
    server, root, _ = team
    env = _env(server.uri(), "alice", MLFLOW_EXPERIMENT_NAME="alice-study")
    work = root / "alice"
    work.mkdir()
    result = _xlinfluence("main", *SETTING, env=env, cwd=work)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_anonymous_requests_and_password_less_database_logins_are_refused(team):
    server, _, _ = team
    response = requests.get(f"{server.uri()}/api/2.0/mlflow/experiments/search?max_results=1")
    assert response.status_code == 401
    assert requests.get(f"{server.uri()}/health").status_code == 200  # monitoring still works
    assert_database_asks_for_a_password(server)
    for secret in ("postgres-password", "flask-secret-key"):
        assert (server.root / "secrets" / secret).stat().st_mode & 0o077 == 0, secret
    auth_config = server.tracking_dir / "basic_auth.ini"  # the MLflow server's, no secret
    assert auth_config.stat().st_mode & 0o077 == 0
    assert ADMIN_PASSWORD not in auth_config.read_text()


@pytest.mark.slow
def test_a_user_cannot_read_or_delete_anothers_experiment(team, monkeypatch, tmp_path):
    server, root, _ = team
    alice = _as(monkeypatch, server.uri(), "alice")
    experiment = alice.create_experiment("alice-private")
    run = alice.create_run(experiment)
    (tmp_path / "notes.txt").write_text("alice's")
    alice.log_artifact(run.info.run_id, str(tmp_path / "notes.txt"))
    alice.set_terminated(run.info.run_id)

    bob, dst = _as(monkeypatch, server.uri(), "bob"), str(tmp_path)
    refusals = {
        "read experiment": lambda: bob.get_experiment(experiment),
        "read run": lambda: bob.get_run(run.info.run_id),
        "read artifacts": lambda: bob.list_artifacts(run.info.run_id),
        "download artifact": lambda: bob.download_artifacts(run.info.run_id, "notes.txt", dst),
        "write run": lambda: bob.log_metric(run.info.run_id, "x", 1.0),
        "delete run": lambda: bob.delete_run(run.info.run_id),
        "delete experiment": lambda: bob.delete_experiment(experiment),
    }
    for what, attempt in refusals.items():
        with pytest.raises(MlflowException) as refused:
            attempt()
        assert refused.value.error_code == "PERMISSION_DENIED", what
    assert experiment not in {e.experiment_id for e in bob.search_experiments()}

    # The admin grants bob READ: he sees the experiment and its files, and still cannot delete.
    granted = _xlinfluence(
        "server", "user", "grant", "bob", "--experiment", "alice-private", "--dir",
        str(server.root), env=_env(server.uri(), **{ADMIN_PASSWORD_ENV: ADMIN_PASSWORD}), cwd=root,
    )  # fmt: skip
    assert granted.returncode == 0, granted.stdout + granted.stderr
    assert bob.get_experiment(experiment).name == "alice-private"
    assert [a.path for a in bob.list_artifacts(run.info.run_id)] == ["notes.txt"]
    with pytest.raises(MlflowException, match="403"):
        bob.delete_experiment(experiment)
    alice = _as(monkeypatch, server.uri(), "alice")
    assert alice.get_experiment(experiment).lifecycle_stage == "active"


@pytest.mark.slow
def test_the_pipeline_finishes_with_a_users_credentials(team, pipeline, monkeypatch):
    server, _, _ = team
    alice = _as(monkeypatch, server.uri(), "alice")
    runs = {step: alice.get_run(run_id) for step, run_id in pipeline.items()}
    assert {s: r.info.status for s, r in runs.items()} == dict.fromkeys(runs, "FINISHED")
    assert {alice.get_experiment(r.info.experiment_id).name for r in runs.values()} == {
        "alice-study"
    }
    names = {a.path for a in alice.list_artifacts(pipeline["influence"], artifacts.INFLUENCE)}
    assert artifacts.SCORES in names
    bob = _as(monkeypatch, server.uri(), "bob")
    with pytest.raises(MlflowException, match="403"):
        bob.get_run(pipeline["main"])


@pytest.mark.slow
def test_refused_logins_and_secrets_are_one_clear_line(team):
    server, root, secrets = team
    wrong = _xlinfluence(
        "main", *SETTING, cwd=root,
        env=_env(server.uri(), "alice", "not-her-password", MLFLOW_EXPERIMENT_NAME="alice-study"),
    )  # fmt: skip
    assert "refused the login of 'alice'" in _one_line_error(wrong)
    anonymous = _xlinfluence("main", *SETTING, env=_env(server.uri()), cwd=root)
    assert "takes logins only" in _one_line_error(anonymous)
    no_experiment = _xlinfluence("main", *SETTING, env=_env(server.uri(), "bob"), cwd=root)
    assert "MLFLOW_EXPERIMENT_NAME" in _one_line_error(no_experiment)  # Default is nobody's

    admin_env = _env(server.uri(), **{ADMIN_PASSWORD_ENV: "not-the-admin-password"})
    password = _secret_file(secrets, "carol", "carol-password-3")
    bad_admin = _xlinfluence(
        "server", "user", "create", "carol", "--dir", str(server.root),
        "--password-file", str(password), env=admin_env, cwd=root,
    )  # fmt: skip
    assert "refused the admin login" in _one_line_error(bad_admin)
    password.chmod(0o644)
    readable = _xlinfluence(
        "server", "user", "create", "carol", "--dir", str(server.root),
        "--password-file", str(password), env=admin_env, cwd=root,
    )  # fmt: skip
    assert "chmod 600" in _one_line_error(readable)


@pytest.mark.slow
def test_a_backup_restores_runs_artifacts_and_accounts(team, pipeline, monkeypatch, tmp_path):
    """As docs/team.md says: `server backup` of the running server, `server restore` into a
    new folder, and alice finds her runs, byte-identical artifacts and her login there."""
    server, root, secrets = team
    backup, restored_dir = root / "backup", root / "restored"
    admin_file = _secret_file(secrets, "admin", ADMIN_PASSWORD)
    env = _env(server.uri())
    done = _xlinfluence("server", "backup", "--dir", str(server.root), "--to", str(backup),
                        env=env, cwd=root)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.name for p in backup.iterdir()} >= {"mlflow.dump", "mlflow_auth.dump", "artifacts"}
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700  # password hashes: the owner's alone
    for name in ("mlflow.dump", "mlflow_auth.dump", "backup.json"):
        assert stat.S_IMODE((backup / name).stat().st_mode) == 0o600, name

    started = _xlinfluence(
        "server", "restore", "--from", str(backup), "--dir", str(restored_dir), "--auth",
        "--admin-password-file", str(admin_file), env=env, cwd=root,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    restored = TeamServer(restored_dir)
    try:
        assert started.stdout.strip().endswith(restored.uri())
        original = _as(monkeypatch, server.uri(), "alice")
        copy = _as(monkeypatch, restored.uri(), "alice")
        for step, run_id in pipeline.items():
            assert copy.get_run(run_id).info.status == "FINISHED", step
        want = original.download_artifacts(pipeline["influence"], artifacts.SCORES, str(tmp_path))
        (tmp_path / "copy").mkdir()
        got = copy.download_artifacts(
            pipeline["influence"], artifacts.SCORES, str(tmp_path / "copy")
        )
        assert Path(got).read_bytes() == Path(want).read_bytes()
        bob = _as(monkeypatch, restored.uri(), "bob")  # accounts and permissions came along
        with pytest.raises(MlflowException, match="403"):
            bob.get_run(pipeline["main"])
    finally:
        restored.stop()


def test_secret_files_must_be_private(tmp_path):
    path = _secret_file(tmp_path, "admin", "a-password-of-sorts")
    assert read_secret(path) == "a-password-of-sorts"
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret(path)
    path.write_text("\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="empty"):
        read_secret(path)


def test_the_admin_password_never_comes_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.delenv(ADMIN_PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError, match="--admin-password-file FILE, or set"):
        Admin.from_sources(None)
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, "from-the-environment")
    assert Admin.from_sources(None).password == "from-the-environment"
    file = _secret_file(tmp_path, "admin", "from-a-file-wins")
    assert Admin.from_sources(file) == Admin("admin", "from-a-file-wins")


def test_auth_and_trust_folders_do_not_mix(tmp_path):
    """Refused before anything starts: --auth on a trust cluster, or a plain start of an
    --auth folder (which would start its server without accounts)."""
    trust = tmp_path / "trust"
    (trust / "postgres").mkdir(parents=True)
    (trust / "postgres" / "PG_VERSION").write_text("15\n")
    with pytest.raises(ConfigError, match="restore --from BACKUP --dir NEW_DIR --auth"):
        TeamServer(trust, Admin("admin", ADMIN_PASSWORD)).start()
    with_auth = tmp_path / "auth"
    (with_auth / "secrets").mkdir(parents=True)
    (with_auth / "secrets" / "postgres-password").write_text("x\n")
    with pytest.raises(ConfigError, match="start it with --auth"):
        TeamServer(with_auth).start()
