"""MLproject entry point `train`: parses the MLproject parameters and runs the step."""

import sys

from xlinfluence.cli import cli

if __name__ == "__main__":
    cli(["train", *sys.argv[1:]])
