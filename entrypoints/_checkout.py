"""Put this checkout's `src/` first on the import path, so an entry point runs the code of
the project MLflow is running, whether the environment installed the package (the README's
virtual env, editable) or only its dependencies (`mlflow run` with conda.yaml)."""

import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
