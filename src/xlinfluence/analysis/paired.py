"""Paired differences over the same test examples, with their own interval and p.

A verdict such as "the translation share lies above its shuffled control" or "the own share
fell from epoch 1 to 3" compares two means over the same test examples; setting their two
intervals side by side is not the test. The per-example differences are, resampled
(percentile bootstrap) with a two-sided p, Holm-adjusted over the test languages. With
fewer than 2 examples, or differences that are all equal, resampling says nothing about
uncertainty: the interval and p are then NaN, not a spurious floor.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xlinfluence.analysis.holm import holm
from xlinfluence.analysis.topk import CHECKPOINT, TEST_LANGUAGE
from xlinfluence.analysis.translation import CONTROL_SHARE, TRANSLATION_SHARE

TRANSLATION_EXCESS = "translation_minus_control"


def paired_mean_test(
    differences: np.ndarray, *, n_resamples: int = 10_000, rng: np.random.Generator
) -> dict[str, float]:
    """Mean of per-example differences (NaN skipped), 95% percentile interval and the
    two-sided bootstrap p of "mean = 0" (its floor is 2 / (n_resamples + 1))."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) < 2 or np.ptp(d) == 0:
        mean = float(d.mean()) if len(d) else np.nan
        return {"mean": mean, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "n": len(d)}
    boot = d[rng.integers(0, len(d), (n_resamples, len(d)))].mean(axis=1)
    below = (1 + (boot <= 0).sum()) / (1 + n_resamples)
    above = (1 + (boot >= 0).sum()) / (1 + n_resamples)
    return {
        "mean": float(d.mean()),
        "ci_low": float(np.quantile(boot, 0.025)),
        "ci_high": float(np.quantile(boot, 0.975)),
        "p": float(min(1.0, 2 * min(below, above))),
        "n": len(d),
    }


def translation_excess(
    per_example: pd.DataFrame, *, n_resamples: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Per (checkpoint, test language): translation share minus its within-label shuffled
    control, paired per test example; Holm over the test languages of each checkpoint.

    per_example: translation_share_per_example with the control column."""
    rng = np.random.default_rng(seed)
    rows = []
    for (checkpoint, language), part in per_example.groupby(
        [CHECKPOINT, TEST_LANGUAGE], sort=False
    ):
        d = part[TRANSLATION_SHARE].to_numpy(float) - part[CONTROL_SHARE].to_numpy(float)
        result = paired_mean_test(d, n_resamples=n_resamples, rng=rng)
        rows.append({CHECKPOINT: checkpoint, TEST_LANGUAGE: language,
                     TRANSLATION_EXCESS: result["mean"], "ci_low": result["ci_low"],
                     "ci_high": result["ci_high"], "p": result["p"],
                     "n_test": result["n"]})  # fmt: skip
    table = pd.DataFrame(rows)
    if len(table):
        table["p_holm"] = table.groupby(CHECKPOINT, sort=False)["p"].transform(
            lambda p: holm(p.to_numpy())
        )
    return table
