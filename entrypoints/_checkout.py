"""Put this checkout's `src/` first on the import path, so an entry point runs the code of
the project MLflow is running, whether the environment installed the package (the README's
virtual env, editable) or only its dependencies (`mlflow run` with conda.yaml), and refuse to
run where another copy was already imported."""

import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

import xlinfluence  # noqa: E402  (after the path is set: which copy is the question)

if Path(xlinfluence.__file__).resolve().parents[1] != Path(SRC):
    sys.exit(
        f"Error: this entry point belongs to the checkout {Path(SRC).parent}, but Python "
        f"imported xlinfluence from {Path(xlinfluence.__file__).parent} (imported before "
        "this checkout's src/ was put first); run it with a fresh interpreter, or `mlflow "
        "run` the checkout whose code you mean."
    )
