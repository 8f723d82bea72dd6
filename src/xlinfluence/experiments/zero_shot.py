"""experiment=zero-shot: each language held out of fine-tuning in turn, beside the run
where every language is seen; where each held-out language's top-k proponents come from,
seen against held out, with its accuracy (analysis/compare.py `zero_shot`)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from xlinfluence.analysis import compare
from xlinfluence.checks import refuse
from xlinfluence.experiments.base import (
    Experiment,
    analysis_table,
    compare_settings,
    final_accuracy,
)

if TYPE_CHECKING:  # config.main takes the experiment registry
    from xlinfluence.config.main import MainConfig


def settings(config: MainConfig) -> dict[str, MainConfig]:
    """all-seen, and heldout-<L> for each language named (default every one)."""
    base = config.without_experiment()
    heldout = config.values or config.language_codes
    return {"all-seen": base} | {
        f"heldout-{lang}": dataclasses.replace(base, heldout_language=lang) for lang in heldout
    }


def tables(config, by_name, children) -> dict:
    shares = {n: analysis_table(runs["analyze"], "shares") for n, runs in children.items()}
    accuracy = {n: final_accuracy(runs["train"]) for n, runs in children.items()}
    heldout = {n: s.heldout_language for n, s in by_name.items()}
    return {"comparison": compare.zero_shot(shares, heldout, accuracy)}


def check(config: MainConfig) -> None:
    unknown = [v for v in config.values if v not in config.language_codes]
    if unknown:
        raise refuse(
            "experiment_values",
            config.experiment_values,
            f"{unknown} are not among languages={config.languages!r}",
            "hold out languages from that list",
        )


EXPERIMENT = Experiment(
    name="zero-shot",
    summary="holds each language out of fine-tuning in turn, beside the all-seen run",
    values="languages to hold out (default all)",
    check=check,
    run=compare_settings(settings, tables, lambda t: compare.zero_shot_figure(t["comparison"])),
)
