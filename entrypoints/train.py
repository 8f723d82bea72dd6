"""MLproject entry point `train`: parses the MLproject parameters and runs the step."""

import sys

import _checkout  # noqa: F401  (this checkout's src/ first)

from xlinfluence.cli import cli

if __name__ == "__main__":
    cli(["train", *sys.argv[1:]])
