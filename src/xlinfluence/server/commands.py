"""`xlinfluence server ...`: start, stop, status, accounts, backup and restore."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from xlinfluence import stopping
from xlinfluence.errors import XlinfluenceError
from xlinfluence.server.accounts import ADMIN_PASSWORD_ENV, PERMISSIONS, Admin, read_secret
from xlinfluence.server.team import TeamServer

_DIR = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("xlinfluence-server"),
    show_default=True,
    help="Folder holding the database cluster, artifacts, logs and server.json.",
)
_ALLOWED_HOSTS = click.option(
    "--allowed-hosts",
    default="",
    help="Host headers a reverse proxy forwards, comma-separated (e.g. mlflow.lab); MLflow "
    "refuses others than this machine's and private addresses'.",
)
_ADMIN_FILE = click.option(
    "--admin-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"File (mode 600) with the admin's password; else ${ADMIN_PASSWORD_ENV}.",
)
_PASSWORD_FILE = click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File (mode 600) with the user's password; else a hidden prompt.",
)


def _one_line_errors(command):
    """Errors the user can fix print as one line, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except XlinfluenceError as err:
            raise click.ClickException(" ".join(str(err).split())) from err

    return wrapper


def _user_password(password_file: Path | None) -> str:
    if password_file is not None:
        return read_secret(password_file)
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@click.group()
def server() -> None:
    """A team tracking server here: PostgreSQL backend store, artifacts served by MLflow."""


@server.command("start")
@_DIR
@click.option("--port", type=int, default=None, help="Tracking server port (default: a free one).")
@click.option("--auth", is_flag=True, help="Accounts (MLflow basic-auth); PostgreSQL passwords.")
@_ADMIN_FILE
@_ALLOWED_HOSTS
@_one_line_errors
def start(
    directory: Path, port: int | None, auth: bool, admin_password_file: Path | None,
    allowed_hosts: str,
) -> None:  # fmt: skip
    """Start PostgreSQL and `mlflow server --serve-artifacts`; print the tracking URI."""
    admin = Admin.from_sources(admin_password_file) if auth else None
    try:
        with stopping.stop_signals():
            state = TeamServer(directory, admin).start(port, allowed_hosts)
    except stopping.Stopped as stop:
        raise click.ClickException(
            f"stopped by {stop.name} while starting; what it had started is stopped again."
        ) from stop
    click.echo(f"export MLFLOW_TRACKING_URI={state.uri}")


@server.command("stop")
@_DIR
@_one_line_errors
def stop(directory: Path) -> None:
    """Stop the tracking server and the database (their files stay in --dir)."""
    TeamServer(directory).stop()
    click.echo(f"stopped the server in {directory}")


@server.command("status")
@_DIR
def status(directory: Path) -> None:
    """Print the tracking URI if the server answers, else exit with 1."""
    state = TeamServer(directory).status()
    if state is None:
        raise click.ClickException(f"no server from {directory} is answering.")
    click.echo(state.uri)


@server.group("user")
def user() -> None:
    """Accounts on a server started with --auth (as its admin)."""


@user.command("create")
@click.argument("username")
@_DIR
@_PASSWORD_FILE
@_ADMIN_FILE
@_one_line_errors
def user_create(directory, username, password_file, admin_password_file) -> None:
    """A new account; its owner logs in with MLFLOW_TRACKING_USERNAME/PASSWORD."""
    password = _user_password(password_file)
    _accounts(directory, admin_password_file).create_user(username, password)
    click.echo(f"created user {username}")


@user.command("delete")
@click.argument("username")
@_DIR
@_ADMIN_FILE
@_one_line_errors
def user_delete(directory, username, admin_password_file) -> None:
    """Remove an account (its runs stay)."""
    _accounts(directory, admin_password_file).delete_user(username)
    click.echo(f"deleted user {username}")


@user.command("password")
@click.argument("username")
@_DIR
@_PASSWORD_FILE
@_ADMIN_FILE
@_one_line_errors
def user_password(directory, username, password_file, admin_password_file) -> None:
    """Set an account's password (the admin's own too)."""
    password = _user_password(password_file)
    _accounts(directory, admin_password_file).set_password(username, password)
    click.echo(f"set the password of {username}")


@user.command("grant")
@click.argument("username")
@click.option("--experiment", required=True, help="Experiment name (or ID).")
@click.option("--permission", type=click.Choice(PERMISSIONS), default="READ", show_default=True)
@_DIR
@_ADMIN_FILE
@_one_line_errors
def user_grant(directory, username, experiment, permission, admin_password_file) -> None:
    """Let a user see (READ), write to (EDIT) or manage another's experiment."""
    experiment_id = _accounts(directory, admin_password_file).grant(
        experiment, username, permission
    )
    click.echo(f"{username} has {permission} on experiment {experiment_id}")


@server.command("backup")
@_DIR
@click.option("--to", "dest", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New folder for the backup.")  # fmt: skip
@_one_line_errors
def backup(directory: Path, dest: Path) -> None:
    """Dump the databases (runs, accounts) and copy the artifacts of the running server."""
    click.echo(f"backed up {directory} to {TeamServer(directory).backup(dest)}")


@server.command("restore")
@click.option("--from", "source", required=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A folder written by `server backup`.")  # fmt: skip
@_DIR
@click.option("--port", type=int, default=None, help="Tracking server port (default: a free one).")
@click.option("--auth", is_flag=True, help="Serve with accounts (needed for a backup with them).")
@_ADMIN_FILE
@_ALLOWED_HOSTS
@_one_line_errors
def restore(source, directory, port, auth, admin_password_file, allowed_hosts) -> None:
    """Start a server in a new --dir from a backup: runs, artifacts and accounts."""
    admin = Admin.from_sources(admin_password_file) if auth else None
    state = TeamServer(directory, admin).restore(source, port, allowed_hosts)
    click.echo(f"export MLFLOW_TRACKING_URI={state.uri}")


def _accounts(directory: Path, admin_password_file: Path | None):
    return TeamServer(directory, Admin.from_sources(admin_password_file)).accounts()
