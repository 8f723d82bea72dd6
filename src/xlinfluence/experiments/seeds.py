"""experiment=seeds: the same setting under several seeds; own-language shares pooled over
seeds with hierarchical intervals (resample seeds, then test examples), and every
language x language share pooled the same way (analysis/compare.py `seeds`)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from xlinfluence.analysis import compare
from xlinfluence.analysis.bootstrap import pooled_share_intervals
from xlinfluence.checks import refuse
from xlinfluence.experiments.base import (
    Experiment,
    analysis_table,
    compare_settings,
)

if TYPE_CHECKING:  # config.main takes the experiment registry
    from xlinfluence.config.main import MainConfig

DEFAULT_SEEDS = ("1", "2", "3")


def settings(config: MainConfig) -> dict[str, MainConfig]:
    base = config.without_experiment()
    seeds = [int(v) for v in config.values or DEFAULT_SEEDS]
    return {f"seed-{seed}": dataclasses.replace(base, seed=seed) for seed in seeds}


def tables(config, by_name, children) -> dict:
    per_example = {
        n: analysis_table(runs["analyze"], "example_shares") for n, runs in children.items()
    }
    return {
        "comparison": compare.seeds(per_example),
        "pooled_shares": pooled_share_intervals(list(per_example.values())),
    }


def check(config: MainConfig) -> None:
    if not all(v.isdigit() for v in config.values):
        raise refuse(
            "experiment_values",
            config.experiment_values,
            "seeds must be whole numbers >= 0",
            "give e.g. 1,2,3",
        )


EXPERIMENT = Experiment(
    name="seeds",
    summary="repeats the pipeline under several seeds, for the seed spread",
    values="seeds (default 1,2,3)",
    check=check,
    run=compare_settings(settings, tables, lambda t: compare.seeds_figure(t["comparison"])),
)
