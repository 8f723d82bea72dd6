"""A bundle's experiment tables, computed by this checkout's analysis code.

The bundle is imported into a throwaway store and its runs are read back through the
experiment's own `compute` (its Study in xlinfluence/experiments/), so a table of
docs/findings.md is regenerated from the repository alone: `python
scripts/findings_tables.py bundle studies/<name>`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from xlinfluence import tracking
from xlinfluence.config.main import MainConfig
from xlinfluence.experiments import attributions
from xlinfluence.experiments.base import child_runs
from xlinfluence.study import bundle
from xlinfluence.study.export import EXPERIMENT_RECORDS, study_of
from xlinfluence.study.importer import import_bundle


def experiment_config(root: Path) -> MainConfig:
    """The parameters of the bundle's latest experiment run (the largest study)."""
    records = [
        bundle.read_sealed(path, Path(root))
        for path in sorted((Path(root) / EXPERIMENT_RECORDS).glob("*.json"))
    ]
    if not records:
        raise bundle.BundleError(f"bundle {root} names no experiment run; export it again.")
    latest = max(records, key=lambda r: r["start_time"])
    return MainConfig.from_params(tracking.params_as_given(latest["params"]))


def compute(root: Path, data_path: str = "") -> tuple[MainConfig, dict[str, pd.DataFrame]]:
    """(experiment config, its tables) from the bundle at `root` alone."""
    config = experiment_config(root)
    study = study_of(config, f"bundle {root}")
    if study.compute is None:
        raise bundle.BundleError(
            f"experiment={config.experiment} is tabled against its base run's predictions, "
            "not from a bundle yet; import the bundle and run the experiment."
        )
    found = bundle.read(Path(root))
    with (
        tempfile.TemporaryDirectory(prefix="xlinfluence-tables-") as tmp,
        tracking.temporary_store(Path(tmp)),
    ):
        runs = import_bundle(Path(root), data_path, found).runs
        mains = {r.record["name"]: runs[r.run_id] for r in found.of_role("main")}
        base = study.base(config)
        missing = [name for name in base if name not in mains]
        if missing:
            raise bundle.BundleError(
                f"bundle {root} lacks the base runs of {missing}; continue the study."
            )
        attributed = attributions.read(config, {name: mains[name] for name in base})
        reference = child_runs(mains[attributions.reference_method(base)])["influence"]
        wanted = study.retrainings(config, attributed.train, reference)
        held = {r.record["name"]: runs[r.run_id] for r in found.of_role("retraining")}
        absent = [name for name in wanted if name not in held]
        if absent:
            raise bundle.BundleError(
                f"bundle {root} holds {len(wanted) - len(absent)} of the study's {len(wanted)} "
                f"retrainings (e.g. {absent[0]} is missing); continue the study, then export again."
            )
        return config, study.compute(config, attributed, {name: held[name] for name in wanted})
