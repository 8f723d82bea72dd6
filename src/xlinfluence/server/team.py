"""A team tracking server on one machine: PostgreSQL as the backend store, MLflow proxying
artifacts (`mlflow server --serve-artifacts`), so clients need only the server's URL.

Everything lives in one folder DIR: the cluster in DIR/postgres (postgres.py), artifacts
in DIR/artifacts, logs in DIR/*.log, ports and process IDs in DIR/server.json. With
`--auth` the server runs MLflow's basic-auth app (accounts.py), its users in a second
database of the same cluster. With or without it the cluster takes passwords only; the
database password is generated once into DIR/secrets (mode 0600), and DIR/secrets/mode
records whether the folder was set up with accounts. `backup` writes both databases
and the artifacts to a private folder that `restore` checks (backups.py) and turns into a
running server again.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from xlinfluence import checks
from xlinfluence.errors import ConfigError
from xlinfluence.server import backups
from xlinfluence.server.accounts import (
    ADMIN_PASSWORD_ENV,
    ADMIN_USERNAME_ENV,
    Accounts,
    Admin,
    write_auth_config,
)
from xlinfluence.server.postgres import Cluster
from xlinfluence.server.processes import (
    HOST,
    ServerError,
    answers,
    free_port,
    identity,
    stop_group,
    wait_healthy,
)
from xlinfluence.server.server_user import ServerUser

DATABASE = "mlflow"
AUTH_DATABASE = "mlflow_auth"
STATE_FILE = "server.json"
#: secrets/MODE_FILE: "accounts" (set up with --auth) or "open"; folders set up before it
#: existed had a database password only under --auth.
MODE_FILE = "mode"


@dataclass
class ServerState:
    tracking_port: int
    postgres_port: int
    tracking_pid: int
    auth: bool = False
    allowed_hosts: str = ""  # Host headers a reverse proxy sends (besides 127.0.0.1:port)
    tracking_started: str = ""  # processes.identity of tracking_pid when it was launched

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.tracking_port}"


class TeamServer:
    """PostgreSQL + MLflow tracking server whose files all live in one folder."""

    def __init__(self, root: Path, admin: Admin | None = None):
        self.root = root.resolve()
        self.artifacts = self.root / "artifacts"
        self.secrets = self.root / "secrets"
        self.tracking_dir = self.root / "tracking"  # the MLflow server's own: no secret
        self.admin = admin  # given: serve with --auth, as this admin
        self.cluster = Cluster(self.root, self._database_password())

    @property
    def auth(self) -> bool:
        """Whether this folder's server takes logins (it was first started with --auth)."""
        mode = self.secrets / MODE_FILE
        if mode.exists():
            return mode.read_text().strip() == "accounts"
        return (self.secrets / "postgres-password").exists()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, port: int | None = None, allowed_hosts: str = "") -> ServerState:
        """Start the database (initialising it the first time) and the tracking server.
        allowed_hosts: the Host headers a reverse proxy forwards (MLflow refuses any other
        than localhost's and private addresses')."""
        if allowed_hosts:
            host_names(allowed_hosts)  # refused before anything starts
        if self.status() is not None:
            raise ServerError(f"a server from {self.root} is already running ({self.uri()}).")
        self._check_mode()
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.cluster.initialised():
            self._set_up()
        try:
            postgres_port = self.cluster.start()
            if self.cluster.trusts_logins():  # set up by an earlier version: close it now
                self._write_mode()  # first: the password file alone would read as --auth
                self._new_database_password()
                self.cluster.require_password(postgres_port)
            self._save(ServerState(port or 0, postgres_port, 0, auth=self.auth,
                                   allowed_hosts=allowed_hosts))  # fmt: skip
            return self._serve(port)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP while starting (stopping.py)
            self._stop_started()
            raise

    def start_tracking(self) -> ServerState:
        """(Re)start the MLflow server process on its recorded port; the database stays up."""
        state = self._load()
        env = os.environ | self.cluster.env()
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.cluster.uri(state.postgres_port, DATABASE),
            "--serve-artifacts", "--artifacts-destination", str(self.artifacts),
            "--host", HOST, "--port", str(state.tracking_port), "--workers", "2",
        ]  # fmt: skip
        if state.allowed_hosts:  # and this machine's clients, which reach it directly
            hosts = [*host_names(state.allowed_hosts), f"{HOST}:*", "localhost:*"]
            command += ["--allowed-hosts", ",".join(hosts)]
        env["HOME"] = str(self.tracking_dir)
        if state.auth:
            command += ["--app-name", "basic-auth"]
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self.tracking_dir / "basic_auth.ini")
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = self._secret("flask-secret-key")
            if self.admin and not self.cluster.has_user(  # only until MLflow has made it
                state.postgres_port, AUTH_DATABASE, self.admin.username
            ):
                env |= {ADMIN_USERNAME_ENV: self.admin.username,
                        ADMIN_PASSWORD_ENV: self.admin.password}  # fmt: skip
        self.tracking_dir.mkdir(mode=0o700, exist_ok=True)
        run_as = {}
        if user := ServerUser.when_root():  # not root: the network-facing process
            user.check_can_run_mlflow()
            user.own(self.artifacts)
            user.own(self.tracking_dir)
            run_as = user.popen()
        with (self.root / "mlflow.log").open("ab") as log:
            process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=self.tracking_dir, **run_as,
            )  # fmt: skip
        state.tracking_pid, state.tracking_started = process.pid, identity(process.pid)
        self._save(state)
        wait_healthy(state.uri, process, self.root / "mlflow.log")
        return state

    def kill_tracking(self, sig: int = signal.SIGKILL) -> None:
        """Stop the MLflow server process (and its workers) only; SIGKILL simulates a crash.

        A server that ignores SIGTERM for 10 s is killed."""
        state = self._load()
        stop_group(state.tracking_pid, sig, grace=10.0, expect=f"--port {state.tracking_port}",
                   started=state.tracking_started)  # fmt: skip

    def stop(self) -> None:
        """Stop the tracking server, then the database; data and artifacts stay in the folder."""
        if not (self.root / STATE_FILE).is_file():
            raise ServerError(f"no server state in {self.root}; nothing to stop.")
        self.kill_tracking(signal.SIGTERM)
        self.cluster.stop()

    def _stop_started(self) -> None:
        """Whatever a start interrupted had started: the MLflow server where its state
        names one, PostgreSQL where it runs."""
        if (self.root / STATE_FILE).is_file():
            self.kill_tracking(signal.SIGTERM)
        self.cluster.stop()

    def status(self) -> ServerState | None:
        """The running server's state, or None."""
        if not (self.root / STATE_FILE).is_file():
            return None
        state = self._load()
        return state if answers(state.uri) else None

    def uri(self) -> str:
        return self._load().uri

    def accounts(self) -> Accounts:
        """The running server's accounts, as the admin."""
        state = self.status()
        if state is None:
            raise ServerError(f"no server from {self.root} is answering; start it first.")
        if not state.auth:
            raise ConfigError(
                f"the server in {self.root} has no accounts (started without --auth); "
                "see docs/team.md for moving its runs to an --auth server."
            )
        if self.admin is None:
            self.admin = Admin.from_sources(None)
        return Accounts(state.uri, self.admin)

    # -- backup ----------------------------------------------------------------------------
    def backup(self, dest: Path) -> Path:
        """Dump the databases (runs; accounts under --auth), then copy the artifacts.

        Taken while the server runs: a run still logging when it is taken has in the copy
        what it had logged by then."""
        state = self.status()
        if state is None:
            raise ServerError(f"no server from {self.root} is answering; start it to back it up.")
        dest = dest.resolve()
        if dest.exists() and any(dest.iterdir()):
            raise ConfigError(f"backup folder {dest} is not empty; give a new folder.")
        backups.make_private_folder(dest)  # the accounts' password hashes are in it
        databases = [DATABASE] + ([AUTH_DATABASE] if state.auth else [])
        for database in databases:
            self.cluster.dump(state.postgres_port, database, dest / f"{database}.dump")
        shutil.copytree(self.artifacts, dest / "artifacts", dirs_exist_ok=True)
        manifest = {
            "databases": databases, "auth": state.auth, "mlflow": version("mlflow"),
            "server": str(self.root), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }  # fmt: skip
        text = json.dumps(manifest, indent=2) + "\n"
        backups.write_private(dest / backups.BACKUP_FILE, text.encode())
        return dest

    def restore(
        self, source: Path, port: int | None = None, allowed_hosts: str = ""
    ) -> ServerState:
        """A running server in this (new) folder from a backup: its runs, artifacts and,
        under --auth, accounts. A backup without accounts restored with --auth gains them."""
        manifest = backups.read_manifest(source, (DATABASE, AUTH_DATABASE))
        if user := ServerUser.when_root():  # refused before anything is restored
            user.check_can_run_mlflow()
        if allowed_hosts:
            host_names(allowed_hosts)
        if self.cluster.initialised() or (self.root / STATE_FILE).exists():
            raise ConfigError(f"{self.root} already holds a server; restore into a new folder.")
        if manifest["auth"] and not self.admin:
            raise ConfigError(
                f"backup {source} holds accounts; restore it with --auth (and the admin password)."
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self._set_up()
        postgres_port = self.cluster.start()
        for database in manifest["databases"]:
            self.cluster.restore(postgres_port, database, source / f"{database}.dump")
        shutil.copytree(source / "artifacts", self.artifacts, dirs_exist_ok=True)
        self._save(ServerState(port or 0, postgres_port, 0, auth=self.auth,
                               allowed_hosts=allowed_hosts))  # fmt: skip
        return self._serve(port)

    # -- helpers ---------------------------------------------------------------------------
    def _serve(self, port: int | None) -> ServerState:
        """Databases in place, auth config written, then the MLflow server; with --auth,
        stopped again unless the admin's password opens it."""
        state = self._load()
        state.tracking_port = port or free_port()
        self._save(state)
        self.cluster.ensure_database(state.postgres_port, DATABASE)
        self.tracking_dir.mkdir(mode=0o700, exist_ok=True)
        if state.auth:
            self.cluster.ensure_database(state.postgres_port, AUTH_DATABASE)
            write_auth_config(
                self.tracking_dir / "basic_auth.ini",
                self.cluster.uri(state.postgres_port, AUTH_DATABASE),
                self.admin.username,
            )
        self.artifacts.mkdir(mode=0o700 if state.auth else 0o777, exist_ok=True)
        try:
            state = self.start_tracking()
            if state.auth:
                Accounts(state.uri, self.admin).check_admin()
        except ServerError:
            self.stop()  # nothing half-started stays behind
            raise
        return state

    def _check_mode(self) -> None:
        """--auth and a folder first started without it (or the reverse) do not mix; a
        server user that cannot run the MLflow server is refused too, before anything
        starts."""
        if user := ServerUser.when_root():
            user.check_can_run_mlflow()
        if self.admin and not self.auth and self.cluster.initialised():
            raise ConfigError(
                f"{self.root} holds a server set up without --auth (no accounts). Start it "
                "without --auth, or move its runs to an --auth server: "
                f"`xlinfluence server backup --dir {self.root} --to BACKUP`, then "
                "`xlinfluence server restore --from BACKUP --dir NEW_DIR --auth`."
            )
        if self.auth and not self.admin:
            raise ConfigError(
                f"{self.root} holds a server set up with --auth; start it with --auth "
                f"(the admin password from --admin-password-file or {ADMIN_PASSWORD_ENV})."
            )

    def _secret(self, name: str) -> str:
        """A random secret of this server, made the first time it is asked for."""
        path = self.secrets / name
        if not path.exists():
            self.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32) + "\n")
        return path.read_text().strip()

    def _database_password(self) -> str | None:
        try:  # only the server's owner can read it; others may still ask for its status
            return (self.secrets / "postgres-password").read_text().strip()
        except OSError:
            return None

    def _set_up(self) -> None:
        """A new folder: its mode (accounts when started with --auth), its database
        password and a cluster that asks for it."""
        self._write_mode()
        self._new_database_password()
        self.cluster.init()

    def _write_mode(self) -> None:
        self.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.secrets / MODE_FILE).write_text("accounts\n" if self.admin else "open\n")

    def _new_database_password(self) -> None:
        (self.secrets / "postgres-password").unlink(missing_ok=True)
        self.cluster.password = self._secret("postgres-password")

    def _save(self, state: ServerState) -> None:
        """Write then rename, so a `server status` or `stop` reading at the same moment sees
        the old state or the new one, never a half-written file."""
        path = self.root / STATE_FILE
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(asdict(state)) + "\n")
        partial.replace(path)

    def _load(self) -> ServerState:
        path = self.root / STATE_FILE
        try:
            return ServerState(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise ServerError(f"server state {path} is missing or unreadable ({err}).") from err


HOST_NAME = re.compile(r"[A-Za-z0-9*]([A-Za-z0-9.*-]*[A-Za-z0-9*])?(:[0-9*]+)?")


def host_names(text: str) -> list[str]:
    """--allowed-hosts as MLflow's list: names such as mlflow.lab or mlflow.lab:443
    (fnmatch patterns allowed), comma-separated; anything else refused, naming it."""
    names = list(checks.items(text))
    bad = [name for name in names if not HOST_NAME.fullmatch(name)]
    if bad or not names:
        raise ConfigError(
            f"--allowed-hosts {text!r}: {bad or 'nothing'} are not host names; give the names "
            "a reverse proxy forwards in its Host header, e.g. mlflow.lab or mlflow.lab:443."
        )
    if "*" in names:
        raise ConfigError(
            "--allowed-hosts '*' would let any web page that resolves a name to this machine "
            "reach the server (DNS rebinding); name the proxy's host instead."
        )
    return names
