"""Run parameters as the user gave them, whichever way the run was launched."""

from __future__ import annotations

import shlex


def params_as_given(params: dict[str, str]) -> dict[str, str]:
    """Params as logged (see run_params) read back as the user gave them."""
    return {name: _unquote(value) for name, value in params.items()}


def _unquote(value: str) -> str:
    try:
        tokens = shlex.split(value)
    except ValueError:
        return value
    return tokens[0] if len(tokens) == 1 and shlex.quote(tokens[0]) == value else value
