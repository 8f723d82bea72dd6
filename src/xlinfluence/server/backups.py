"""The backup folder of a team server: who may read it, and what a restore trusts of it.

A backup holds the runs database and, under --auth, the accounts database with every
user's password hash: it is written private to its owner (folder 0700, files 0600,
whatever the umask). A restore reads `backup.json` as untrusted input: its database names
go into SQL and file names, so each must be one this server writes; every file it names
must be a regular file inside the backup (no link out of it); and a backup that others
can write to is refused, since anyone who could have edited it could have planted runs or
accounts.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from xlinfluence.errors import ConfigError

BACKUP_FILE = "backup.json"
PRIVATE_FOLDER, PRIVATE_FILE = 0o700, 0o600


def make_private_folder(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(PRIVATE_FOLDER)


def write_private(path: Path, data: bytes) -> None:
    """Write a file that only its owner can read, from its first byte."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    path.chmod(PRIVATE_FILE)  # an existing file keeps its mode on O_CREAT


def read_manifest(source: Path, known: tuple[str, ...]) -> dict:
    """backup.json of `source`, checked: `known` are the database names a server writes
    (the first required). Refuses, naming the problem and the fix, anything else."""

    def refuse(problem: str, fix: str = "restore from a backup written by `xlinfluence "
               "server backup`") -> ConfigError:  # fmt: skip
        return ConfigError(f"backup {source}: {problem}; {fix}.")

    source = source.resolve()
    if not source.is_dir():
        raise refuse("not a folder")
    _refuse_writable_by_others(source, refuse)
    manifest_path = _inside(source, BACKUP_FILE, refuse)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise refuse(f"{BACKUP_FILE} cannot be read ({type(err).__name__})") from err
    databases, auth = manifest.get("databases"), manifest.get("auth")
    if not isinstance(auth, bool):
        raise refuse(f"{BACKUP_FILE} has no true/false 'auth'")
    if not isinstance(databases, list) or not databases or databases[0] != known[0]:
        raise refuse(f"{BACKUP_FILE} 'databases' is not a list starting with {known[0]!r}")
    unknown = [name for name in databases if name not in known]
    if unknown or len(set(databases)) != len(databases):
        raise refuse(
            f"{BACKUP_FILE} names databases {unknown or databases} this server never writes"
        )
    if auth != (len(databases) == len(known)):
        raise refuse(f"{BACKUP_FILE} says auth={auth} but lists {databases}")
    for name in databases:
        _refuse_writable_by_others(_inside(source, f"{name}.dump", refuse), refuse)
    artifacts = source / "artifacts"
    if artifacts.is_symlink() or not artifacts.is_dir():
        raise refuse("its artifacts folder is missing or a link")
    return {"databases": databases, "auth": auth}


def _inside(source: Path, name: str, refuse) -> Path:
    path = source / name
    if path.is_symlink() or not path.is_file():
        raise refuse(f"{name} is missing, or a link rather than a file")
    return path


def _refuse_writable_by_others(path: Path, refuse) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise refuse(
            f"{path.name} can be written by other users (mode {stat.filemode(mode)}), so it may "
            "have been edited",
            f"check it, then `chmod -R go-w {path}` and restore again",
        )
