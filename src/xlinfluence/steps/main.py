"""The main step: train -> influence -> analyze as child runs of one parent run.

Each child is an MLflow Projects run of its entry point (so it may itself `accelerate
launch`); a FINISHED run with the same step, parameters, code version and upstream run
is reused instead, so re-running main with the same parameters recomputes nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from xlinfluence import tracking
from xlinfluence.config.main import MainConfig
from xlinfluence.errors import ConfigError
from xlinfluence.experiments import EXPERIMENTS

PROJECT_FILE = "MLproject"
PROJECT_NAME = "xlinfluence"


def run(config: MainConfig) -> dict[str, str]:
    """Run or reuse each step (or each setting of an experiment); returns their run IDs,
    and this run's own under "main"."""
    project = find_project()
    # Children run `python entrypoints/...`: make that this interpreter, venv or not.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with tracking.step_run(config) as parent:
        if config.experiment:
            runs = EXPERIMENTS[config.experiment].run(config, project, parent)
            return {"main": parent.run_id} | runs
        train_id = tracking.run_or_reuse(config.train(), project)
        influence_id = tracking.run_or_reuse(config.influence(train_id), project)
        analyze_id = tracking.run_or_reuse(config.analyze(influence_id), project)
        runs = {"train": train_id, "influence": influence_id, "analyze": analyze_id}
        parent.set_tags(
            {tracking.CHILD_TAG.format(step=step): run_id for step, run_id in runs.items()}
        )
        parent.log_metrics(headline_metrics(runs))
    return {"main": parent.run_id} | runs


def headline_metrics(runs: dict[str, str]) -> dict[str, float]:
    """The children's final test accuracy per language and summed-score shares, copied onto
    the main run so that settings (e.g. an experiment's) compare side by side in the UI."""
    train = tracking.fetch_run(runs["train"], step="train").data.metrics
    analyze = tracking.fetch_run(runs["analyze"], step="analyze").data.metrics
    return {k: v for k, v in train.items() if k.startswith("accuracy.")} | {
        k: v for k, v in analyze.items() if k.startswith("total_")
    }


def find_project() -> Path:
    """The xlinfluence project whose entry points the children run: the checkout this code
    is imported from, else (an installed copy) the working directory or one above it. Only
    an MLproject named xlinfluence counts: another project found on the way is never run."""
    here = Path.cwd().resolve()
    candidates = [Path(__file__).resolve().parents[3], here, *here.parents]
    others = []
    for folder in candidates:
        if (folder / PROJECT_FILE).is_file():
            if project_name(folder / PROJECT_FILE) == PROJECT_NAME:
                return folder
            others.append(str(folder))
    raise ConfigError(
        "no xlinfluence MLproject found in this code's checkout, the working directory or "
        "above it"
        + (f" ({', '.join(others)} hold other projects)" if others else "")
        + "; run main from the xlinfluence checkout (or `mlflow run <checkout>`)."
    )


def project_name(path: Path) -> str:
    """The `name:` of an MLproject file ('' where it has none or cannot be read)."""
    try:
        text = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return ""
    return str(text.get("name", "")) if isinstance(text, dict) else ""
