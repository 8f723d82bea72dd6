"""Counterfactual check of TracIn's language shares: remove what it names, retrain, measure.

If TracIn says test language L leans on training language X, then removing the k examples
of X that TracIn ranks highest for L (summed lr-weighted score over L's test examples)
should hurt L more than removing k random examples of X with the same label mix. Each
removal is a retraining from the same seed and settings; the effect is the change of L's
test loss (and accuracy) against the run without removal, paired per test example. The
random removals, several draws, give the control distribution. This is the idea behind
leave-some-out and linear-datamodeling evaluations of data attribution (Koh et al. 2019,
Ilyas et al. 2022), asked of language shares.

A removal is named by a spec the train step reads, so every retraining is an ordinary,
reusable train run:

    tracin:<influence run>:<L>:<X>:<k>           TracIn's top k of X for L
    random:<influence run>:<L>:<X>:<k>:<draw>    k random examples of X, same label counts,
                                                 none of TracIn's k (draw seeds the choice)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from xlinfluence.checks import REMOVAL
from xlinfluence.data import schema
from xlinfluence.errors import ConfigError, DataError

TRACIN, RANDOM = "tracin", "random"
SPEC = re.compile(REMOVAL)
SPEC_FORM = "tracin:<influence run>:<test lang>:<train lang>:<k>, or random:...:<k>:<draw>"


@dataclass(frozen=True)
class Removal:
    kind: str
    influence_run_id: str
    test_language: str
    train_language: str
    k: int
    draw: int = 0

    @classmethod
    def parse(cls, text: str) -> Removal:
        match = SPEC.fullmatch(text)
        if not match or (match["kind"] == RANDOM) != (match["draw"] is not None):
            raise ConfigError(f"remove={text!r}: not a removal; give {SPEC_FORM}")
        return cls(
            match["kind"],
            match["run"],
            match["test"],
            match["train"],
            int(match["k"]),
            int(match["draw"] or 0),
        )

    @property
    def spec(self) -> str:
        base = f"{self.kind}:{self.influence_run_id}:{self.test_language}:{self.train_language}"
        return f"{base}:{self.k}" + (f":{self.draw}" if self.kind == RANDOM else "")

    def tracin(self) -> Removal:
        return Removal(
            TRACIN, self.influence_run_id, self.test_language, self.train_language, self.k
        )


def tracin_rows(
    total: torch.Tensor, train: pd.DataFrame, test: pd.DataFrame, removal: Removal
) -> np.ndarray:
    """Rows of `train` (language X) with the largest summed score over L's test examples.

    total: (n_test, n_train) lr-weighted TracIn scores of the influence run.
    """
    test_rows = np.flatnonzero(test[schema.LANGUAGE].to_numpy() == removal.test_language)
    train_rows = np.flatnonzero(train[schema.LANGUAGE].to_numpy() == removal.train_language)
    if not len(test_rows) or len(train_rows) < removal.k:
        raise DataError(
            f"remove={removal.spec!r}: the influence run has {len(test_rows)} test examples in "
            f"{removal.test_language!r} and {len(train_rows)} training examples in "
            f"{removal.train_language!r}; k must be at most the latter and L a test language."
        )
    summed = total[torch.as_tensor(test_rows)].sum(0).double().numpy()[train_rows]
    order = np.lexsort((train_rows, -summed))  # highest first, ties by row
    return np.sort(train_rows[order[: removal.k]])


def random_rows(train: pd.DataFrame, chosen: np.ndarray, removal: Removal, seed: int) -> np.ndarray:
    """k rows of X outside `chosen` with the label counts of `chosen`, seeded by the draw."""
    rng = np.random.default_rng([seed, removal.draw])
    language = train[schema.LANGUAGE].to_numpy()
    label = train[schema.LABEL].to_numpy()
    available = np.setdiff1d(np.flatnonzero(language == removal.train_language), chosen)
    picked = []
    for value, count in zip(*np.unique(label[chosen], return_counts=True), strict=True):
        pool = available[label[available] == value]
        if len(pool) < count:
            raise DataError(
                f"remove={removal.spec!r}: only {len(pool)} other examples of label {value} in "
                f"{removal.train_language!r} for a control of {count}; lower k."
            )
        picked.append(rng.choice(pool, size=count, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.array([], dtype=int)


def removed_ids(
    removal: Removal, total: torch.Tensor, train: pd.DataFrame, test: pd.DataFrame, seed: int
) -> list[str]:
    """The training ids a removal drops (from the influence run's manifests and scores)."""
    chosen = tracin_rows(total, train, test, removal)
    rows = chosen if removal.kind == TRACIN else random_rows(train, chosen, removal, seed)
    return train[schema.ID].to_numpy()[rows].tolist()


# -- the comparison ------------------------------------------------------------------------

DELTA_LOSS, DELTA_ACCURACY = "delta_loss", "delta_accuracy"


def paired_effect(
    base: pd.DataFrame,
    removed: pd.DataFrame,
    language: str,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Mean change of L's test loss and accuracy (removed - base), with a bootstrap 95%
    interval of the loss change over L's test examples (paired: same examples)."""
    mine = base[schema.LANGUAGE] == language
    d_loss = (removed.loc[mine, "loss"] - base.loc[mine, "loss"]).to_numpy(dtype=float)
    d_correct = (removed.loc[mine, "correct"] - base.loc[mine, "correct"]).to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    resampled = d_loss[rng.integers(0, len(d_loss), size=(n_resamples, len(d_loss)))].mean(1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {
        DELTA_LOSS: float(d_loss.mean()),
        "delta_loss_ci_low": float(low),
        "delta_loss_ci_high": float(high),
        DELTA_ACCURACY: float(d_correct.mean()),
        "n_test": int(mine.sum()),
    }


def effects_table(rows: list[dict]) -> pd.DataFrame:
    """One row per (L, X): TracIn's effect beside the control draws' distribution.

    rows: dicts with test_language, train_language, kind (tracin/random), draw, the
    paired_effect fields and seconds (the retraining's run time).
    """
    frame = pd.DataFrame(rows)
    out = []
    for (lang, source), group in frame.groupby(["test_language", "train_language"], sort=False):
        tracin = group[group["kind"] == TRACIN].iloc[0]
        control = group[group["kind"] == RANDOM]
        losses = control[DELTA_LOSS].to_numpy(dtype=float)
        spread = losses.std(ddof=1) if len(losses) > 1 else np.nan
        out.append(
            {
                "test_language": lang,
                "train_language": source,
                "k": int(tracin["k"]),
                "tracin_delta_loss": tracin[DELTA_LOSS],
                "tracin_ci_low": tracin["delta_loss_ci_low"],
                "tracin_ci_high": tracin["delta_loss_ci_high"],
                "tracin_delta_accuracy": tracin[DELTA_ACCURACY],
                "control_delta_loss_mean": losses.mean() if len(losses) else np.nan,
                "control_delta_loss_sd": spread,
                "control_delta_loss_min": losses.min() if len(losses) else np.nan,
                "control_delta_loss_max": losses.max() if len(losses) else np.nan,
                "control_delta_accuracy_mean": control[DELTA_ACCURACY].mean(),
                "n_control": len(losses),
                **_verdict(float(tracin[DELTA_LOSS]), losses, spread),
                "seconds_per_retraining": group["seconds"].mean(),
                "n_test": int(tracin["n_test"]),
            }
        )
    return pd.DataFrame(out)


#: Control draws below which no p, z or verdict is printed: with n draws the smallest
#: attainable p is 1 / (n + 1), which reaches 0.05 only at n = 19.
MIN_CONTROL_DRAWS = 19


def _verdict(effect: float, losses: np.ndarray, spread: float) -> dict:
    """p (share of control draws hurting L at least as much, +1 corrected), z and
    `supported` (p <= 0.05), or, with too few draws, none of them and the reason."""
    if len(losses) < MIN_CONTROL_DRAWS:
        return {
            "p_control": np.nan,
            "z": np.nan,
            "supported": None,
            "verdict": f"none: {len(losses)} control draws cannot reach p <= 0.05 (the smallest "
            f"p is 1/{len(losses) + 1}); give control_draws >= {MIN_CONTROL_DRAWS}",
        }
    p = (1 + (losses >= effect).sum()) / (1 + len(losses))
    return {
        "p_control": p,
        "z": (effect - losses.mean()) / spread if spread else np.nan,
        "supported": bool(p <= 0.05),
        "verdict": "supported" if p <= 0.05 else "not supported",
    }


def effects_figure(table: pd.DataFrame, raw: pd.DataFrame) -> Figure:
    """Per (L, X): TracIn's loss change (with interval) and each control draw's."""
    labels = [f"{r.train_language}→{r.test_language}" for r in table.itertuples()]
    fig = Figure(figsize=(max(6.0, 1.1 * len(labels) + 2), 4.2))
    ax = fig.subplots()
    x = np.arange(len(labels))
    low = table["tracin_delta_loss"] - table["tracin_ci_low"]
    high = table["tracin_ci_high"] - table["tracin_delta_loss"]
    ax.errorbar(
        x,
        table["tracin_delta_loss"],
        yerr=[low, high],
        fmt="o",
        color="tab:red",
        capsize=3,
        label="remove TracIn's top-k",
    )
    for i, row in enumerate(table.itertuples()):
        draws = raw[
            (raw["test_language"] == row.test_language)
            & (raw["train_language"] == row.train_language)
            & (raw["kind"] == RANDOM)
        ]
        ax.scatter(
            np.full(len(draws), i + 0.15),
            draws[DELTA_LOSS],
            color="tab:gray",
            s=14,
            label="remove k random (same labels)" if i == 0 else None,
        )
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlim(-0.6, len(labels) - 0.4)  # a single pair would otherwise fill the width
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_xlabel("removed training language → test language")
    ax.set_ylabel("change of the test language's loss")
    ax.set_title("Counterfactual retraining: TracIn's picks vs random removals")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
