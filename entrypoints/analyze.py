"""MLproject entry point `analyze`: parses the MLproject parameters and runs the step."""

import sys

import _checkout  # noqa: F401  (this checkout's src/ first)

from xlinfluence.cli import cli

if __name__ == "__main__":
    cli(["analyze", *sys.argv[1:]])
