"""experiment=train-content: the same languages and counts, trained once on parallel data
(every language gets translations of the same sentences, the paper's setting) and once on
disjoint data (each language its own sentences, label-stratified); how each test
language's top-k proponents shift between training languages.

On parallel data a language's rows repeat the others' content, so TracIn may credit any
translation of a useful sentence; on disjoint data only that language has it. The test
set does not depend on train_content (data/select.py draws it first), so each test
example is paired with itself: per (test language, training language), the mean of
disjoint minus parallel share over test examples, its bootstrap interval and p, Holm's
correction over the table's cells.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from xlinfluence import artifacts
from xlinfluence.analysis.bootstrap import _train_language_columns
from xlinfluence.analysis.holm import holm
from xlinfluence.analysis.paired import paired_mean_test
from xlinfluence.analysis.topk import (
    CHECKPOINT,
    KIND,
    PROPONENT,
    TEST_ID,
    TEST_LANGUAGE,
)
from xlinfluence.checks import refuse
from xlinfluence.experiments.base import Experiment, analysis_table, compare_settings

if TYPE_CHECKING:  # config.main takes the experiment registry
    from xlinfluence.config.main import MainConfig

CONTENTS = ("parallel", "disjoint")
SEED = 0  # the bootstrap's


def settings(config: MainConfig) -> dict[str, MainConfig]:
    base = config.without_experiment()
    return {content: dataclasses.replace(base, train_content=content) for content in CONTENTS}


def share_shift(parallel: pd.DataFrame, disjoint: pd.DataFrame) -> pd.DataFrame:
    """Per (test language, training language): the mean proponent share under each content,
    the paired mean of disjoint minus parallel over test examples, its 95% interval, p and
    Holm's p over the table. Inputs: the two runs' `example_shares` tables."""

    def final(table: pd.DataFrame) -> pd.DataFrame:
        kept = table[(table[CHECKPOINT] == artifacts.TOTAL) & (table[KIND] == PROPONENT)]
        return kept.set_index(TEST_ID)

    before, after = final(parallel), final(disjoint)
    languages = [c for c in _train_language_columns(parallel) if c in after.columns]
    common = before.index.intersection(after.index)
    rng = np.random.default_rng(SEED)
    rows = []
    for test_language, group in before.loc[common].groupby(TEST_LANGUAGE, sort=False):
        ids = group.index
        for train_language in languages:
            was, now = group[train_language], after.loc[ids, train_language]
            test = paired_mean_test((now - was).to_numpy(), rng=rng)
            rows.append(
                {"test_language": test_language, "train_language": train_language,
                 "parallel": was.mean(), "disjoint": now.mean(), "difference": test["mean"],
                 "ci_low": test["ci_low"], "ci_high": test["ci_high"], "p": test["p"],
                 "n_test": test["n"]}
            )  # fmt: skip
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p"].to_numpy())
    return table


def tables(config, by_name, children) -> dict:
    shares = {n: analysis_table(runs["analyze"], "example_shares") for n, runs in children.items()}
    return {"comparison": share_shift(shares["parallel"], shares["disjoint"])}


def figure(made: dict[str, pd.DataFrame]) -> Figure:
    """One panel per test language: its share from each training language, both contents."""
    table = made["comparison"]
    languages = list(dict.fromkeys(table["test_language"]))
    fig = Figure(figsize=(2.6 * len(languages) + 0.8, 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(languages), sharey=True))
    for ax, language in zip(axes, languages, strict=True):
        rows = table[table["test_language"] == language]
        x = np.arange(len(rows))
        ax.bar(x - 0.2, rows["parallel"], 0.4, label="parallel")
        ax.bar(x + 0.2, rows["disjoint"], 0.4, label="disjoint")
        ax.set_xticks(x, rows["train_language"])
        ax.set_title(f"test {language}")
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("share of top-k proponents")
    axes[0].legend()
    fig.tight_layout()
    return fig


def check(config: MainConfig) -> None:
    if config.experiment_values:
        raise refuse(
            "experiment_values",
            config.experiment_values,
            "train-content compares parallel and disjoint itself",
            "leave it empty",
        )


EXPERIMENT = Experiment(
    name="train-content",
    summary="trains on parallel and on disjoint data, for how each test language's top-k "
    "shifts between training languages",
    values="",
    check=check,
    run=compare_settings(settings, tables, figure),
)
