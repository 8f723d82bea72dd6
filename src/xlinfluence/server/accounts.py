"""Accounts on a team server started with `--auth` (MLflow's basic-auth app).

Secrets come from files or the environment, never a command line (where `ps` and the shell
history would show them): the admin's password from `--admin-password-file` or MLflow's own
MLFLOW_AUTH_ADMIN_PASSWORD, a new user's from `--password-file` or a hidden prompt. A secret
file must be readable by its owner only, as ssh insists for keys. Clients log in with
MLflow's MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD; nothing else changes.

Users see nothing but their own experiments (`default_permission = NO_PERMISSIONS`) until
someone who manages an experiment, or the admin, grants them a permission on it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import requests

from xlinfluence.errors import ConfigError
from xlinfluence.server.processes import ServerError

ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"  # MLflow's own: one name for one secret
ADMIN_USERNAME_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"
DEFAULT_ADMIN = "admin"
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")
API = "/api"


def read_secret(path: Path) -> str:
    """The first line of a file only its owner can read."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read the password file {path} ({err.strerror}).") from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"password file {path} can be read by others (mode {stat.filemode(mode)}); "
            f"run `chmod 600 {path}` and try again."
        )
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ConfigError(f"password file {path} is empty; write the password on its first line.")
    return secret


@dataclass(frozen=True)
class Admin:
    """The server admin's login."""

    username: str
    password: str

    @classmethod
    def from_sources(cls, password_file: Path | None) -> Admin:
        """From --admin-password-file, else MLFLOW_AUTH_ADMIN_PASSWORD; the username from
        MLFLOW_AUTH_ADMIN_USERNAME (default 'admin')."""
        username = os.environ.get(ADMIN_USERNAME_ENV) or DEFAULT_ADMIN
        if password_file is not None:
            return cls(username, read_secret(password_file))
        if os.environ.get(ADMIN_PASSWORD_ENV):
            return cls(username, os.environ[ADMIN_PASSWORD_ENV])
        raise ConfigError(
            "the server admin's password is needed: write it to a file only you can read and "
            f"pass --admin-password-file FILE, or set {ADMIN_PASSWORD_ENV}. It is never taken "
            "on the command line."
        )


def write_auth_config(path: Path, database_uri: str, admin_username: str) -> None:
    """MLflow's basic-auth ini: users and permissions in the team server's PostgreSQL (so
    one backup holds runs and accounts); no secret in it (the database password reaches
    psycopg2 through PGPASSWORD, the admin's through MLFLOW_AUTH_ADMIN_PASSWORD)."""
    path.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    path.chmod(0o600)


class Accounts:
    """The basic-auth app's REST API, as the admin."""

    def __init__(self, uri: str, admin: Admin):
        self.uri = uri
        self.admin = admin

    def check_admin(self) -> None:
        """Raise unless the admin's password opens the server (it is set only the first
        time the server starts; later starts must bring the current one)."""
        self._call("GET", "/2.0/mlflow/users/get", params={"username": self.admin.username})

    def create_user(self, username: str, password: str) -> None:
        login = {"username": username, "password": password}
        self._call("POST", "/2.0/mlflow/users/create", json=login)

    def delete_user(self, username: str) -> None:
        self._call("DELETE", "/2.0/mlflow/users/delete", json={"username": username})

    def set_password(self, username: str, password: str) -> None:
        login = {"username": username, "password": password}
        self._call("PATCH", "/2.0/mlflow/users/update-password", json=login)

    def grant(self, experiment: str, username: str, permission: str) -> str:
        """Give `username` `permission` on the experiment named `experiment` (or with that ID)."""
        if permission not in PERMISSIONS:
            raise ConfigError(
                f"permission {permission!r} is not one of MLflow's: {', '.join(PERMISSIONS)}."
            )
        experiment_id = self._experiment_id(experiment)
        self._call(
            "POST", "/3.0/mlflow/users/permissions/grant",
            json={"username": username, "resource_type": "experiment",
                  "resource_id": experiment_id, "permission": permission},
        )  # fmt: skip
        return experiment_id

    def _experiment_id(self, experiment: str) -> str:
        try:
            found = self._call(
                "GET", "/2.0/mlflow/experiments/get-by-name", params={"experiment_name": experiment}
            )
            return found["experiment"]["experiment_id"]
        except ServerError:
            if experiment.isdigit():
                return experiment
            raise

    def _call(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = requests.request(
                method, f"{self.uri}{API}{path}", auth=(self.admin.username, self.admin.password),
                timeout=30, **kwargs,
            )  # fmt: skip
        except requests.RequestException as err:
            raise ServerError(f"the server at {self.uri} did not answer ({err}).") from err
        if response.status_code == 401:
            raise ServerError(
                f"the server at {self.uri} refused the admin login '{self.admin.username}': "
                f"wrong password (the admin's password is set the first time the server starts; "
                "give the current one)."
            )
        if response.status_code == 403:
            raise ServerError(f"'{self.admin.username}' is not an admin of {self.uri}.")
        if not response.ok:
            try:
                said = response.json()["message"].split(" Error: (")[0]  # not the SQL
            except (ValueError, KeyError, TypeError):
                said = " ".join(response.text.split())[:300]
            raise ServerError(f"the server at {self.uri} refused: {said}")
        return response.json() if response.content else {}
