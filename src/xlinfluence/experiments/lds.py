"""experiment=lds: every attribution's linear datamodeling score against subset retraining.

The base pipeline runs (or is reused) under each chosen attribution method; then
`subsets` random subsets of its training set (a fraction `subset_fraction` of every
language, or of the translation groups) are each retrained with `retrain_seeds` training
seeds as cheap train runs (outputs only), fanned out `workers` at a time. The LDS table
(analysis/lds.py), per method, target (margin, loss) and test language, with the seed
ceiling and each method's paired difference from dot TracIn, is logged on the
experiment's run with a figure; the per-retraining outputs beside it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from xlinfluence import tracking
from xlinfluence.analysis import lds
from xlinfluence.analysis.agreement import REFERENCE
from xlinfluence.config import TrainConfig
from xlinfluence.data import schema, subsets
from xlinfluence.errors import ArtifactError, ConfigError
from xlinfluence.experiments import attributions
from xlinfluence.experiments.base import Experiment, Study
from xlinfluence.steps import retrain

if TYPE_CHECKING:  # config.main takes the experiment registry
    from xlinfluence.config.main import MainConfig


def selections(config: MainConfig) -> list[subsets.Selection]:
    """The subsets as the train runs read them back from their specs (alpha as written)."""
    return [
        subsets.Selection.parse(
            subsets.Selection(
                subsets.SUBSET,
                alpha=config.subset_fraction,
                draw=draw,
                by=config.subset_by,
            ).spec
        )
        for draw in range(config.subsets)
    ]


def retraining_settings(config: MainConfig) -> dict[tuple[int, int], TrainConfig]:
    """(subset draw, training seed) -> the cheap train run that retrains on that subset."""
    base = retrain.cheap_base(config)
    return {
        (selection.draw, seed): dataclasses.replace(
            base,
            remove=selection.spec,
            train_seed=seed,
        )
        for selection in selections(config)
        for seed in range(config.retrain_seeds)
    }


def setting_name(key: tuple[int, int]) -> str:
    return f"subset-{key[0]}:seed-{key[1]}"


def run(config: MainConfig, project: Path, parent: tracking.StepRun) -> dict[str, str]:
    found = attributions.collect(config, project, parent)
    subsets.kept_masks(selections(config), found.train, config.seed)  # refuse a bad one early
    chosen = retraining_settings(config)
    runs = retrain.run_settings(
        config, {setting_name(key): setting for key, setting in chosen.items()}, project, parent
    )
    tables = compute(config, found, {key: runs[setting_name(key)] for key in chosen})
    parent.log_frames(tables, "experiment")
    table = tables["comparison"]
    parent.log_figure(lds.figure(table), "experiment/comparison.png")
    overall = table[table["test_language"] == lds.ALL]
    parent.log_metrics(
        {f"lds.{r.method}.{r.target}": r.lds for r in overall.itertuples()}
        | {"retrainings": len(runs)}
    )
    return found.main_runs | runs


def compute(
    config: MainConfig,
    found: attributions.Attributions,
    runs: dict[tuple[int, int], str],
    reference: str = REFERENCE,
) -> dict[str, pd.DataFrame]:
    """The LDS table and the per-retraining table from finished retrainings
    ((subset draw, training seed) -> train run ID); every method paired against
    `reference` (default dot TracIn over all parameters, the paper's)."""
    masks = subsets.kept_masks(selections(config), found.train, config.seed)
    outputs, raw = _outputs(config, found, masks, runs)
    table = lds.lds_table(
        found.scores,
        masks,
        outputs,
        found.test[schema.LANGUAGE].to_numpy(),
        reference=reference,
        seed=config.seed,
    )
    return {"comparison": table, "retrainings": raw}


def recompute(
    config: MainConfig,
    experiment_run_id: str,
    added: dict[str, str] | None = None,
    reference: str = REFERENCE,
) -> dict[str, pd.DataFrame]:
    """compute() for a finished experiment run, from its setting tags (this code's
    analysis of that run's retrainings; scripts/findings_tables.py retraining). `added`:
    methods scored after the study (name -> main or influence run of the same fine-tuning),
    judged against the same retrainings."""
    settings, methods = attributions.study_methods(config, experiment_run_id, added)
    runs = {key: settings[setting_name(key)] for key in retraining_settings(config)}
    found = attributions.read(config, methods)
    if reference not in found.scores:
        raise ConfigError(f"reference {reference!r} is none of {', '.join(found.scores)}.")
    return compute(config, found, runs, reference)


def _outputs(config, found, masks, runs) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """target -> (M, S, n_test) last-epoch outputs, and one row per retraining (its cost
    and what it kept), after checking each kept the rows its spec names."""
    n_subsets, n_seeds = config.subsets, config.retrain_seeds
    values = {t: np.empty((n_subsets, n_seeds, len(found.test))) for t in lds.TARGETS}
    rows = []
    for (draw, seed), run_id in runs.items():
        kept = attributions.kept_rows(run_id, found.train)
        if not np.array_equal(kept, masks[draw]):
            raise ArtifactError(
                f"retraining {run_id} kept other rows than subset {draw} names; it was trained "
                "on other data parameters. Delete it (or use a new experiment) and re-run."
            )
        frame = attributions.last_outputs(run_id, config.epochs, found.test)
        for target in lds.TARGETS:
            values[target][draw, seed] = frame[target].to_numpy(dtype=float)
        run = tracking.fetch_run(run_id, step="train")
        rows.append(
            {
                "subset": draw,
                "train_seed": seed,
                "run_id": run_id,
                "n_kept": int(kept.sum()),
                "accuracy": float(frame["correct"].mean()),
                "mean_margin": float(frame["margin"].mean()),
                "seconds": (run.info.end_time - run.info.start_time) / 1000,
                "artifact_bytes": run.data.metrics.get("artifact_bytes", np.nan),
            }
        )
    return values, pd.DataFrame(rows).sort_values(["subset", "train_seed"])


def _study_retrainings(config, train, influence) -> dict[str, TrainConfig]:
    return {setting_name(k): s for k, s in retraining_settings(config).items()}


def _study_compute(config, found, runs: dict[str, str]) -> dict[str, pd.DataFrame]:
    keys = {setting_name(k): k for k in retraining_settings(config)}
    return compute(config, found, {keys[name]: run for name, run in runs.items()})


EXPERIMENT = Experiment(
    name="lds",
    summary="retrains on random subsets; the linear datamodeling score of every attribution",
    values=attributions.VALUES_HELP,
    check=attributions.check_scored_methods,
    run=run,
    study=Study(attributions.base_pipelines, _study_retrainings, _study_compute),
)
