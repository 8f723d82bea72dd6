"""The tracking store: where runs live, and whether it lets this login in.

Every other part of the package starts from `setup()` (MLFLOW_TRACKING_URI, else a SQLite
file in the working directory) and turns a refused login or permission into one line
with `refused`; they live apart from the runs so the download and reuse code can share
them without importing each other. `temporary_store` swaps in a throwaway store for
study bundles (tables and verification).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import requests
from filelock import FileLock
from mlflow.environment_variables import MLFLOW_EXPERIMENT_NAME
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from xlinfluence.errors import XlinfluenceError

DEFAULT_DB = "mlflow.db"


def setup() -> str:
    """Use MLFLOW_TRACKING_URI if set, else an embedded SQLite file in the working directory."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(f"sqlite:///{Path.cwd().resolve() / DEFAULT_DB}")
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        _sqlite_ready(uri)
    return uri


@functools.cache
def _sqlite_ready(uri: str) -> None:
    """Open a SQLite store once under a lock beside its file. MLflow creates and migrates
    the store's tables on a process's first use, and two processes doing that to a new file
    at once fail inside the migration; this way the first creates it and the second finds
    it made. (Writes after that are serialised by SQLite itself.)"""
    path = Path(uri.removeprefix("sqlite:///"))
    with FileLock(f"{path}.lock"):
        MlflowClient(uri).search_experiments(max_results=1)


class TrackingError(XlinfluenceError):
    """The tracking server (or store) could not be reached while a step was logging."""


class AccessError(XlinfluenceError):
    """A tracking server with accounts (`xlinfluence server start --auth`) refused the
    login, or the permission for what the step asked."""


def refused(err: Exception) -> AccessError | None:
    """The one-line explanation of a refused login or permission; None for other errors."""
    if not isinstance(err, MlflowException):
        return None
    uri, user = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_USERNAME")
    if err.error_code == "UNAUTHENTICATED":
        if not user:
            return AccessError(
                f"the tracking server {uri} takes logins only: set MLFLOW_TRACKING_USERNAME "
                "and MLFLOW_TRACKING_PASSWORD to your account (the server's admin creates it "
                "with `xlinfluence server user create`)."
            )
        return AccessError(
            f"the tracking server {uri} refused the login of {user!r}: wrong "
            "MLFLOW_TRACKING_PASSWORD, or no such account (the admin sets passwords with "
            "`xlinfluence server user password`)."
        )
    if err.error_code == "PERMISSION_DENIED":
        endpoint = re.search(r"endpoint (\S+)", str(err))
        return AccessError(
            f"user {user!r} may not do this on {uri} "
            f"({endpoint.group(1) if endpoint else err.error_code}; a run or experiment that "
            "does not exist is refused the same way): name an experiment of your own with "
            "MLFLOW_EXPERIMENT_NAME=<study>, or ask the experiment's owner or the admin for "
            "access (`xlinfluence server user grant`)."
        )
    return None


def check_access() -> None:
    """Fail at once, in one line, where a tracking server refuses this login."""
    if not setup().startswith("http"):
        return
    try:
        MlflowClient().search_experiments(max_results=1)
    except MlflowException as err:
        if error := refused(err):
            raise error from err
        raise


# What an unreachable server raises from inside MLflow's client, after its retries
# (MLflow wraps most of them in MlflowException: "API request to ... failed").
_UNREACHABLE = (requests.exceptions.RequestException, MlflowException)


def store_is_local() -> bool:
    """Whether the tracking store is a file on this machine (SQLite or ./mlruns), which a
    process on another machine cannot reach."""
    return mlflow.get_tracking_uri().startswith(("sqlite:", "file:"))


def active_experiment_id() -> str:
    """The experiment new runs go to: MLFLOW_EXPERIMENT_NAME (created if missing), else
    the store's default."""
    setup()
    name = os.environ.get(MLFLOW_EXPERIMENT_NAME.name)
    if not name:
        return "0"
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


TEMPORARY_EXPERIMENT = "xlinfluence-temporary"


@contextmanager
def temporary_store(folder: Path) -> Iterator[str]:
    """A fresh SQLite store (and download cache) under `folder` for the block, then the
    tracking URI and cache as they were."""
    uri = f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"
    saved = {
        k: os.environ.get(k)
        for k in ("MLFLOW_TRACKING_URI", "XLINFLUENCE_CACHE", MLFLOW_EXPERIMENT_NAME.name)
    }
    previous = mlflow.get_tracking_uri()
    os.environ.update(
        {
            "MLFLOW_TRACKING_URI": uri,
            "XLINFLUENCE_CACHE": str(Path(folder) / "cache"),
            MLFLOW_EXPERIMENT_NAME.name: TEMPORARY_EXPERIMENT,
        }
    )
    mlflow.set_tracking_uri(uri)
    # artifacts inside the folder too (a new SQLite store's default is ./mlruns of the cwd)
    artifacts_uri = (Path(folder).resolve() / "artifacts").as_uri()
    MlflowClient().create_experiment(TEMPORARY_EXPERIMENT, artifact_location=artifacts_uri)
    try:
        yield uri
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.set_tracking_uri(previous)
