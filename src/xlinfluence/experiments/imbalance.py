"""experiment=imbalance: the first language keeps train_per_language examples and every
other one gets that divided by each ratio, so the first is over-represented `ratio` times;
its share of the top-k proponents against its share of the data (analysis/compare.py
`imbalance`)."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from xlinfluence.analysis import compare
from xlinfluence.checks import refuse
from xlinfluence.experiments.base import (
    Experiment,
    analysis_table,
    compare_settings,
)

if TYPE_CHECKING:  # config.main takes the experiment registry
    from xlinfluence.config.main import MainConfig

DEFAULT_RATIOS = ("1", "2", "4")


def settings(config: MainConfig) -> dict[str, MainConfig]:
    """ratio-<r>: the first language at train_per_language, the others at it divided by r."""
    base = config.without_experiment()
    count = int(config.train_per_language)
    first, *others = config.language_codes
    return {
        f"ratio-{ratio:g}": dataclasses.replace(
            base,
            train_per_language=",".join(
                [f"{first}={count}"] + [f"{lang}={max(1, round(count / ratio))}" for lang in others]
            ),
        )
        for ratio in (float(v) for v in config.values or DEFAULT_RATIOS)
    }


def tables(config, by_name, children) -> dict:
    shares = {n: analysis_table(runs["analyze"], "shares") for n, runs in children.items()}
    mass = {n: analysis_table(runs["analyze"], "influence_mass") for n, runs in children.items()}
    ratios = {n: float(n.removeprefix("ratio-")) for n in by_name}
    first = config.language_codes[0]
    return {"comparison": compare.imbalance(shares, ratios, first, mass)}


def check(config: MainConfig) -> None:
    if "=" in config.train_per_language:
        raise refuse(
            "train_per_language",
            config.train_per_language,
            "imbalance sets per-language counts itself",
            "give one number (the first language's count)",
        )
    if not all(_positive_number(v) for v in config.values):
        raise refuse(
            "experiment_values",
            config.experiment_values,
            "ratios must be positive numbers",
            "give e.g. 1,2,4",
        )


def _positive_number(text: str) -> bool:
    try:
        number = float(text)
    except ValueError:
        return False
    return math.isfinite(number) and number > 0


EXPERIMENT = Experiment(
    name="imbalance",
    summary="over-represents the first language by each ratio",
    values="ratios for the first language (default 1,2,4)",
    check=check,
    run=compare_settings(settings, tables, lambda t: compare.imbalance_figure(t["comparison"])),
)
