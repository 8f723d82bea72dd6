"""`xlinfluence server`: one machine's team tracking server (team.py) on a PostgreSQL
cluster of its own (postgres.py), optionally with accounts (accounts.py); processes.py
holds what it shares with `xlinfluence ui`. docs/team.md is the guide."""

from xlinfluence.server.accounts import Accounts, Admin
from xlinfluence.server.postgres import postgres_bin
from xlinfluence.server.processes import (
    HOST,
    ServerError,
    free_port,
    stop_group,
    wait_gone,
    wait_healthy,
)
from xlinfluence.server.team import ServerState, TeamServer

__all__ = [
    "HOST", "Accounts", "Admin", "ServerError", "ServerState", "TeamServer", "free_port",
    "postgres_bin", "stop_group", "wait_gone", "wait_healthy",
]  # fmt: skip
