"""A team tracking server on one machine: PostgreSQL as the backend store, MLflow proxying
artifacts (`mlflow server --serve-artifacts`), so clients need only the server's URL.

`xlinfluence server start|stop|status --dir DIR` drives it: PostgreSQL from the
distribution's packages (`initdb`, `pg_ctl`) runs a cluster of its own in DIR/postgres on a
free port of 127.0.0.1, artifacts live in DIR/artifacts, logs in DIR/*.log, and
DIR/server.json records ports and process IDs. Pointing a lab at a shared server is in
docs/team.md.

PostgreSQL refuses to run as root; started by root, the cluster runs as the `postgres`
system user, which must be able to reach DIR.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from xlinfluence.errors import ConfigError, XlinfluenceError

DATABASE = "mlflow"
DB_USER = "mlflow"
HOST = "127.0.0.1"
STATE_FILE = "server.json"


class ServerError(XlinfluenceError):
    """The tracking server or its database could not be started, reached or stopped."""


@dataclass
class ServerState:
    tracking_port: int
    postgres_port: int
    tracking_pid: int

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.tracking_port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def postgres_bin() -> Path:
    """The folder with initdb, pg_ctl, psql and createdb (resolving symlinks on PATH, as
    Debian links some of them from /usr/lib/postgresql/<version>/bin)."""
    candidates = [Path(p).resolve().parent for p in (shutil.which("initdb"),) if p]
    candidates += sorted(
        (p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
        key=lambda p: int(p.parts[-2]) if p.parts[-2].isdigit() else 0,
        reverse=True,
    )
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "psql", "createdb")):
            return folder
    raise ServerError(
        "PostgreSQL server programs (initdb, pg_ctl, psql, createdb) not found; install them, "
        "e.g. `apt-get install postgresql` (Debian/Ubuntu) or `brew install postgresql`."
    )


class TeamServer:
    """PostgreSQL + MLflow tracking server whose files all live in one folder."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.pgdata = self.root / "postgres"
        self.artifacts = self.root / "artifacts"
        self.socket_dir = self.root / "socket"
        self._as_postgres = os.geteuid() == 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, port: int | None = None) -> ServerState:
        """Start the database (initialising it the first time) and the tracking server."""
        if self.status() is not None:
            raise ServerError(f"a server from {self.root} is already running ({self.uri()}).")
        self.root.mkdir(parents=True, exist_ok=True)
        postgres_port = self._start_postgres()
        state = ServerState(port or free_port(), postgres_port, 0)
        self._save(state)
        return self.start_tracking()

    def start_tracking(self) -> ServerState:
        """(Re)start the MLflow server process on its recorded port; the database stays up."""
        state = self._load()
        log = (self.root / "mlflow.log").open("ab")
        process = subprocess.Popen(
            [
                sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", self.database_uri(state),
                "--serve-artifacts", "--artifacts-destination", str(self.artifacts),
                "--host", HOST, "--port", str(state.tracking_port), "--workers", "2",
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        state.tracking_pid = process.pid
        self._save(state)
        self._wait_healthy(state, process)
        return state

    def kill_tracking(self, sig: int = signal.SIGKILL) -> None:
        """Stop the MLflow server process (and its workers) only; SIGKILL simulates a crash.

        A server that ignores SIGTERM for 10 s is killed."""
        stop_group(self._load().tracking_pid, sig, grace=10.0)

    def stop(self) -> None:
        """Stop the tracking server, then the database; data and artifacts stay in the folder."""
        if not (self.root / STATE_FILE).is_file():
            raise ServerError(f"no server state in {self.root}; nothing to stop.")
        self.kill_tracking(signal.SIGTERM)
        if (self.pgdata / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop")

    def status(self) -> ServerState | None:
        """The running server's state, or None."""
        if not (self.root / STATE_FILE).is_file():
            return None
        state = self._load()
        try:
            with urllib.request.urlopen(f"{state.uri}/health", timeout=2) as response:
                return state if response.status == 200 else None
        except OSError:
            return None

    def uri(self) -> str:
        return self._load().uri

    def database_uri(self, state: ServerState) -> str:
        return f"postgresql+psycopg2://{DB_USER}@{HOST}:{state.postgres_port}/{DATABASE}"

    # -- PostgreSQL ------------------------------------------------------------------------
    def _start_postgres(self) -> int:
        self._check_driver()
        port = free_port()
        self.socket_dir.mkdir(exist_ok=True)
        if not (self.pgdata / "PG_VERSION").is_file():
            self.pgdata.mkdir(exist_ok=True)
            self._own(self.pgdata, self.socket_dir)
            self._pg("initdb", "-D", str(self.pgdata), "-U", DB_USER, "--auth=trust", "-E", "UTF8")
        self._own(self.socket_dir)
        options = f"-p {port} -k {self.socket_dir} -c listen_addresses={HOST}"
        log = self.root / "postgres.log"
        if not log.exists():
            log.touch()
        self._own(log)
        self._pg("pg_ctl", "-D", str(self.pgdata), "-o", options, "-l", str(log), "-w", "start")
        exists = self._pg(
            "psql", "-h", HOST, "-p", str(port), "-U", DB_USER, "-d", "postgres", "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
        )  # fmt: skip
        if exists.strip() != "1":
            self._pg("createdb", "-h", HOST, "-p", str(port), "-U", DB_USER, DATABASE)
        return port

    def _pg(self, program: str, *args: str) -> str:
        command = [str(postgres_bin() / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            said = result.stderr.strip() or result.stdout.strip()
            raise ServerError(
                f"`{program}` failed ({result.returncode}): {said} "
                f"(log: {self.root / 'postgres.log'})"
            )
        return result.stdout

    def _own(self, *paths: Path) -> None:
        """As root, hand the cluster's files to the postgres user, which must reach them."""
        if not self._as_postgres:
            return
        user = pwd.getpwnam("postgres")
        for path in paths:
            os.chown(path, user.pw_uid, user.pw_gid)
        for parent in self.root.parents:
            if parent.stat().st_uid != user.pw_uid and not parent.stat().st_mode & 0o001:
                raise ConfigError(
                    f"server dir {self.root}: PostgreSQL runs as the 'postgres' user (it refuses "
                    f"root), which cannot enter {parent}. Choose a folder it can reach, e.g. "
                    "--dir /var/tmp/xlinfluence-server, or start the server as a normal user."
                )

    @staticmethod
    def _check_driver() -> None:
        try:
            import psycopg2  # noqa: F401
        except ImportError as err:
            raise ServerError(
                "MLflow needs the PostgreSQL driver psycopg2; install it with "
                "`pip install -e '.[team]'` (or `pip install psycopg2-binary`)."
            ) from err

    # -- state -----------------------------------------------------------------------------
    def _save(self, state: ServerState) -> None:
        (self.root / STATE_FILE).write_text(json.dumps(asdict(state)) + "\n")

    def _load(self) -> ServerState:
        path = self.root / STATE_FILE
        try:
            return ServerState(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise ServerError(f"server state {path} is missing or unreadable ({err}).") from err

    def _wait_healthy(self, state: ServerState, process: subprocess.Popen) -> None:
        wait_healthy(state.uri, process, self.root / "mlflow.log")


def wait_healthy(uri: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Return once the MLflow server at `uri` answers /health; raise with its log's tail if
    the process exits or the timeout passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log.is_file() else "(no log)"
    raise ServerError(f"the MLflow server at {uri} did not come up; its log ends:\n{tail}")


def stop_group(pgid: int, sig: int = signal.SIGTERM, *, grace: float) -> None:
    """Send `sig` to a process group (a server and its workers), SIGKILL it if it outlives
    `grace` seconds, and return once no process of the group is left (its port is free)."""
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
