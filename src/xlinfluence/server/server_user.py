"""Who the MLflow server process runs as.

The MLflow server is the process a network reaches, so when root starts the team server
it must not be root: it runs as an unprivileged system user of its own,
`xlinfluence-server` (made at root's first start with `useradd --system`; or an existing
user named by XLINFLUENCE_SERVER_USER), as PostgreSQL runs as `postgres`. Not `nobody`:
other daemons run as `nobody`, and a process of the same user can read the server's
environment, which holds the database password. That user owns only what the server
writes (the artifact store and the server's own folder, which holds no secret); the
secrets folder stays root's. Started by anyone else, the server runs as that user and
nothing here applies.
"""

from __future__ import annotations

import functools
import os
import pwd
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from xlinfluence.errors import ConfigError
from xlinfluence.server.processes import ServerError

SERVER_USER_ENV = "XLINFLUENCE_SERVER_USER"
DEFAULT_SERVER_USER = "xlinfluence-server"


@dataclass(frozen=True)
class ServerUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def when_root(cls) -> ServerUser | None:
        """The unprivileged user to run the MLflow server as, or None when this process
        is not root (the server then runs as whoever started it)."""
        if os.geteuid() != 0:
            return None
        name = os.environ.get(SERVER_USER_ENV, DEFAULT_SERVER_USER)
        if name == DEFAULT_SERVER_USER:
            _ensure_system_user(name)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ConfigError(
                f"{SERVER_USER_ENV}={name!r} is not a user on this machine; name an existing "
                f"unprivileged user, or unset it for {DEFAULT_SERVER_USER!r}."
            ) from None
        if entry.pw_uid == 0:
            raise ConfigError(
                f"{SERVER_USER_ENV}={name!r} is root; the MLflow server must run as an "
                "unprivileged user: name another one."
            )
        return cls(name, entry.pw_uid, entry.pw_gid)

    def popen(self) -> dict:
        """subprocess arguments that run a child as this user, root's groups dropped."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def check_can_run_mlflow(self) -> None:
        """Refuse, before anything starts, when this user cannot run this interpreter's
        MLflow (a Python under /root, or a virtual env in a private home)."""
        said = _mlflow_refused(self.uid, self.gid, sys.executable)
        if said:
            raise ServerError(
                f"started as root, the MLflow server runs as the unprivileged user {self.name!r}, "
                f"which cannot run {sys.executable} with MLflow ({said}). Install xlinfluence "
                f"where {self.name} can read it (a virtual env under /opt or /srv, made from "
                f"a Python outside /root), set {SERVER_USER_ENV} to a user that can, or start "
                "the server as a normal user."
            )

    def own(self, folder: Path) -> None:
        """Hand `folder` and everything in it to this user (what a restore copied in).
        Walked through directory descriptors, never following a symlink, so a link the
        user planted in its own tree cannot make root hand over a file outside it."""
        for _, dirs, files, fd in os.fwalk(folder, follow_symlinks=False):
            if os.fstat(fd).st_uid != self.uid:
                os.fchown(fd, self.uid, self.gid)
            for name in (*dirs, *files):
                if os.stat(name, dir_fd=fd, follow_symlinks=False).st_uid != self.uid:
                    os.chown(name, self.uid, self.gid, dir_fd=fd, follow_symlinks=False)


@functools.cache
def _mlflow_refused(uid: int, gid: int, python: str) -> str:
    """Why user uid cannot import MLflow with `python` ('' if it can). Asked once per
    process: a start checks before anything starts and again as it launches the server."""
    try:
        probe = subprocess.run(
            [python, "-c", "import mlflow.server"], capture_output=True, text=True, cwd="/",
            check=False, user=uid, group=gid, extra_groups=[],
        )  # fmt: skip
    except OSError as err:  # the interpreter itself out of reach
        return str(err)
    if probe.returncode == 0:
        return ""
    return (probe.stderr.strip().splitlines() or ["no output"])[-1]


def _ensure_system_user(name: str) -> None:
    """Make the server's system user (no home, no login shell) the first time root needs it."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0 and made.returncode != 9:  # 9: made meanwhile by another start
        raise ServerError(
            f"could not make the system user {name!r} for the MLflow server "
            f"(useradd: {made.stderr.strip()}); make it, or set {SERVER_USER_ENV} to an "
            "existing unprivileged user."
        )
