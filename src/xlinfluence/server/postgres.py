"""A PostgreSQL cluster of the team server's own, from the distribution's server programs.

It listens on 127.0.0.1 only, and its superuser `mlflow` logs in with a password
(SCRAM-SHA-256) over TCP and through the socket, with or without `--auth`: on a shared
machine a trusted local login would make every local user the database's superuser, able
to run programs as its OS user. A cluster made by an earlier version with trusted logins
gets a password the next time it starts (`require_password`). PostgreSQL refuses to run as root:
started by root, the programs run as the `postgres` system user, which must reach the
folder. The password reaches libpq through PGPASSWORD, never a command line.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from xlinfluence.errors import ConfigError
from xlinfluence.server.backups import write_private
from xlinfluence.server.processes import HOST, ServerError, free_port

DB_USER = "mlflow"


def postgres_bin() -> Path:
    """The folder with initdb, pg_ctl, psql, createdb, pg_dump and pg_restore (resolving
    symlinks on PATH, as Debian links some of them from /usr/lib/postgresql/<version>/bin)."""
    candidates = [Path(p).resolve().parent for p in (shutil.which("initdb"),) if p]
    candidates += sorted(
        (p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
        key=lambda p: int(p.parts[-2]) if p.parts[-2].isdigit() else 0,
        reverse=True,
    )
    tools = ("initdb", "pg_ctl", "psql", "createdb", "pg_dump", "pg_restore")
    for folder in candidates:
        if all((folder / tool).is_file() for tool in tools):
            return folder
    raise ServerError(
        f"PostgreSQL server programs ({', '.join(tools)}) not found; install them, e.g. "
        "`apt-get install postgresql` (Debian/Ubuntu) or `brew install postgresql`."
    )


def check_driver() -> None:
    try:
        import psycopg2  # noqa: F401
    except ImportError as err:
        raise ServerError(
            "MLflow needs the PostgreSQL driver psycopg2; install it with "
            "`pip install -e '.[team]'` (or `pip install psycopg2-binary`)."
        ) from err


class Cluster:
    """initdb/pg_ctl/psql/pg_dump on the cluster in `root`/postgres."""

    def __init__(self, root: Path, password: str | None):  # None: not set up yet
        self.root = root
        self.data = root / "postgres"
        self.socket_dir = root / "socket"
        self.log = root / "postgres.log"
        self.password = password
        self._as_postgres = os.geteuid() == 0

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def init(self) -> None:
        """A new cluster whose every login needs the password (SCRAM)."""
        assert self.password, "a cluster is initialised with its password"
        self.data.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self._own(self.data, self.socket_dir)
        pwfile = self.root / ".initdb-password"  # read by initdb, removed at once
        pwfile.touch(mode=0o600)
        try:
            pwfile.write_text(self.password + "\n")
            self._own(pwfile)
            self._run(
                "initdb", "-D", str(self.data), "-U", DB_USER, "--auth=scram-sha-256",
                f"--pwfile={pwfile}", "-E", "UTF8",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self) -> int:
        """Start on a free port of 127.0.0.1; returns the port."""
        check_driver()
        port = free_port()
        self.socket_dir.mkdir(exist_ok=True)
        self._own(self.socket_dir)
        if not self.log.exists():
            self.log.touch()
        self._own(self.log)
        options = f"-p {port} -k {self.socket_dir} -c listen_addresses={HOST}"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")
        return port

    def trusts_logins(self) -> bool:
        """Whether an earlier version set this cluster up to trust local logins."""
        rules = (self.data / "pg_hba.conf").read_text().splitlines()
        return any(_scram(rule) != rule for rule in rules)

    def require_password(self, port: int) -> None:
        """Give a running trusting cluster's superuser this cluster's password and make
        every login ask for it (pg_hba.conf: trust -> scram-sha-256, then a reload). The SQL
        travels on psql's standard input, not its command line, which others can read."""
        self._run(
            "psql", *self._at(port), "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q",
            stdin=(
                "SET password_encryption = 'scram-sha-256';\n"  # md5 before PostgreSQL 14
                f"ALTER ROLE {DB_USER} PASSWORD '{self.password}';\n"
            ).encode(),
        )  # fmt: skip
        hba = self.data / "pg_hba.conf"
        rules = [_scram(rule) for rule in hba.read_text().splitlines()]
        hba.write_text("\n".join(rules) + "\n")
        self._run("pg_ctl", "-D", str(self.data), "reload")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def ensure_database(self, port: int, name: str) -> None:
        exists = self._run(
            "psql", *self._at(port), "-d", "postgres", "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{name}'",
        )  # fmt: skip
        if exists.strip() != "1":
            self._run("createdb", *self._at(port), name)

    def has_user(self, port: int, database: str, username: str) -> bool:
        """Whether MLflow's accounts database already holds `username` (False while its
        tables do not exist yet). The name reaches psql as a variable, quoted by psql."""
        try:
            found = self._run(
                "psql", *self._at(port), "-d", database, "-tA", "-v", f"name={username}",
                stdin=b"SELECT 1 FROM users WHERE username = :'name';\n",
            )  # fmt: skip
        except ServerError:  # no users table: MLflow has not set the database up yet
            return False
        return found.strip() == "1"

    def dump(self, port: int, database: str, out: Path) -> None:
        """pg_dump's custom format (compressed; pg_restore reads it)."""
        out.parent.mkdir(parents=True, exist_ok=True)
        dumped = self._run("pg_dump", *self._at(port), "-Fc", database, binary=True)
        write_private(out, dumped)  # the accounts' password hashes: the owner's alone

    def restore(self, port: int, database: str, dump: Path) -> None:
        """Load a dump into an empty database of this cluster."""
        self.ensure_database(port, database)
        staged = self.root / f".restore-{database}.dump"  # the postgres user must read it
        shutil.copyfile(dump, staged)
        self._own(staged)
        try:
            self._run("pg_restore", *self._at(port), "--no-owner", "-d", database, str(staged))
        finally:
            staged.unlink(missing_ok=True)

    def uri(self, port: int, database: str) -> str:
        """SQLAlchemy URI without the password (libpq reads PGPASSWORD)."""
        return f"postgresql+psycopg2://{DB_USER}@{HOST}:{port}/{database}"

    def env(self) -> dict[str, str]:
        """Environment for a process that logs in to the cluster (MLflow's server)."""
        return {"PGPASSWORD": self.password} if self.password else {}  # none: a trust cluster

    # -- helpers ---------------------------------------------------------------------------
    def _at(self, port: int) -> list[str]:
        return ["-h", HOST, "-p", str(port), "-U", DB_USER]

    def _run(self, program: str, *args: str, binary: bool = False, stdin: bytes | None = None):
        command = [str(postgres_bin() / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        env = os.environ | self.env()
        result = subprocess.run(command, capture_output=True, env=env, check=False, input=stdin)
        if result.returncode != 0:
            said = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise ServerError(f"`{program}` failed ({result.returncode}): {said} (log: {self.log})")
        return result.stdout if binary else result.stdout.decode()

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


def _scram(rule: str) -> str:
    """A pg_hba.conf line whose method `trust` becomes `scram-sha-256` (other rules,
    comments and blank lines unchanged)."""
    if rule.lstrip().startswith("#") or not rule.split() or rule.split()[-1] != "trust":
        return rule
    return rule[: rule.rstrip().rfind("trust")] + "scram-sha-256"
