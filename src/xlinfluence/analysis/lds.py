"""The linear datamodeling score (LDS): does an attribution predict retraining on subsets?

For M random training subsets (masks, data/subsets.py), each retrained with S seeds, an
attribution's predicted output of test example j on subset m is the sum of its scores
over the kept rows, sum_{i in m} score[j, i]; the realised output is the retrained
model's margin (gold logit minus the best other), averaged over seeds, or its negated
loss. LDS of j = Spearman over the M subsets between predicted and realised; LDS = the
mean over test examples (Ilyas et al. 2022; Park et al. 2023, TRAK; dattri). Positive
means larger scores go with better outputs, as TracIn's sign convention says.

Intervals resample the subsets (the unit that was drawn at random), recomputing every
rank. The seed ceiling is the LDS that one seed's outputs reach in predicting another
seed's on the same subsets: how much of the target is predictable at all. The methods are
scored against the mean of S seeds, which is less noisy than one seed, so beside it stands
the ceiling for that mean (Spearman-Brown from the seed-to-seed correlation). Differences
between methods are paired (same resampled subsets) and Holm-corrected.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import rankdata

from xlinfluence.analysis.holm import holm
from xlinfluence.errors import DataError

MARGIN, LOSS = "margin", "loss"
TARGETS = (MARGIN, LOSS)
ALL = "all"
CEILING = "seed-ceiling"  # one seed's outputs predicting another's (the definition)
CEILING_MEAN = "seed-ceiling-mean"  # the ceiling for the seed mean the methods are scored on
RANDOM = "random"


def predicted_outputs(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(M, n_test): each subset's summed score over its kept rows, per test example.

    scores: (n_test, n_train); masks: (M, n_train) booleans."""
    return masks.astype(np.float64) @ np.asarray(scores, dtype=np.float64).T


def column_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of every column pair (a[:, j], b[:, j]) over the leading axis;
    works on stacks (..., M, n). NaN where a column is constant."""
    return rank_correlation(rankdata(a, axis=-2), rankdata(b, axis=-2))


def rank_correlation(ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """Pearson correlation of rank columns over the leading axis of (..., M, n) (Spearman's
    rho once they are ranks); NaN where one is constant."""
    ra = ra - ra.mean(axis=-2, keepdims=True)
    rb = rb - rb.mean(axis=-2, keepdims=True)
    denominator = np.sqrt((ra**2).sum(-2) * (rb**2).sum(-2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(-2) / denominator, np.nan)


def realised(outputs: dict[str, np.ndarray], target: str) -> np.ndarray:
    """(M, S, n) outputs per seed, oriented so that larger is better (negated loss)."""
    values = np.asarray(outputs[target], dtype=np.float64)
    return -values if target == LOSS else values


def lds_table(
    scores: dict[str, np.ndarray],
    masks: np.ndarray,
    outputs: dict[str, np.ndarray],
    test_languages: np.ndarray,
    *,
    reference: str | None = None,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """LDS per (method, target, test language and ALL) with a bootstrap interval over
    subsets; the seed ceiling as method CEILING; with `reference`, each method's paired
    difference from it (diff, its interval, a two-sided bootstrap p, Holm-adjusted over
    every (method, target, language) row; 10,000 resamples keep the smallest p, 2e-4,
    below 0.05 after Holm over a hundred rows).

    scores: method -> (n_test, n_train); masks: (M, n_train); outputs: target ->
    (M, S, n_test) realised margin and loss per subset and seed.
    """
    n_subsets = masks.shape[0]
    if n_subsets < 3:
        raise DataError(f"LDS needs at least 3 subsets, got {n_subsets}.")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_subsets, size=(n_resamples, n_subsets))
    groups = {ALL: np.arange(len(test_languages))} | {
        lang: np.flatnonzero(test_languages == lang) for lang in pd.unique(test_languages)
    }
    per_example: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for target in TARGETS:
        values = realised(outputs, target)  # (M, S, n)
        target_mean = values.mean(axis=1)
        for method, method_scores in scores.items():
            predicted = predicted_outputs(method_scores, masks)
            per_example[(method, target)] = (
                column_spearman(predicted, target_mean),
                _resampled(predicted, target_mean, draws),
            )
        if values.shape[1] >= 2:
            single = _seed_ceiling(values, draws)
            per_example[(CEILING, target)] = single
            per_example[(CEILING_MEAN, target)] = tuple(
                _mean_of_seeds(r, values.shape[1]) for r in single
            )
    with warnings.catch_warnings():  # a resample with constant outputs has no rank
        warnings.simplefilter("ignore", RuntimeWarning)
        rows = _rows(per_example, groups, reference, (1 - confidence) / 2, outputs)
    table = pd.DataFrame(rows)
    if reference is not None and "p_vs_reference" in table:
        tested = table["p_vs_reference"].notna()
        table.loc[tested, "p_holm"] = holm(table.loc[tested, "p_vs_reference"].to_numpy())
        table["reference"] = reference
    return table


def _rows(per_example, groups, reference, alpha, outputs) -> list[dict]:
    """One row per (method, target, test-language group) with intervals (lds_table)."""
    rows = []
    for (method, target), (point, boot) in per_example.items():
        n_subsets = outputs[target].shape[0]
        for language, idx in groups.items():
            boot_means = np.nanmean(boot[:, idx], axis=1)
            row = {
                "method": method,
                "target": target,
                "test_language": language,
                "lds": float(np.nanmean(point[idx])),
                "ci_low": float(np.nanquantile(boot_means, alpha)),
                "ci_high": float(np.nanquantile(boot_means, 1 - alpha)),
                "n_subsets": n_subsets,
                "n_seeds": outputs[target].shape[1],
                "n_test": len(idx),
            }
            if reference is not None and method not in (reference, CEILING, CEILING_MEAN):
                ref_point, ref_boot = per_example[(reference, target)]
                # paired: each resample averages both methods over the same examples
                both = ~np.isnan(boot[:, idx]) & ~np.isnan(ref_boot[:, idx])
                diff = np.nanmean(np.where(both, boot[:, idx] - ref_boot[:, idx], np.nan), 1)
                row |= {
                    "diff_vs_reference": row["lds"] - float(np.nanmean(ref_point[idx])),
                    "diff_ci_low": float(np.nanquantile(diff, alpha)),
                    "diff_ci_high": float(np.nanquantile(diff, 1 - alpha)),
                    "p_vs_reference": _two_sided_p(diff),
                }
            rows.append(row)
    return rows


def _resampled(predicted: np.ndarray, target: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(B, n): per-example Spearman on each resample of subsets, in blocks to bound memory."""
    out = []
    for block in np.array_split(draws, max(1, len(draws) // 100)):
        out.append(column_spearman(predicted[block], target[block]))
    return np.concatenate(out)


def _seed_ceiling(values: np.ndarray, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over ordered seed pairs (a != b) of Spearman(seed a's outputs, seed b's)."""
    n_seeds = values.shape[1]
    pairs = [(a, b) for a in range(n_seeds) for b in range(n_seeds) if a < b]
    point = np.mean([column_spearman(values[:, a], values[:, b]) for a, b in pairs], axis=0)
    boot = np.mean([_resampled(values[:, a], values[:, b], draws) for a, b in pairs], axis=0)
    return point, boot


def _mean_of_seeds(r: np.ndarray, n_seeds: int) -> np.ndarray:
    """What a perfect predictor of the expected output could reach against the mean of
    n_seeds seeds, from the seed-to-seed correlation r: sqrt of the Spearman-Brown
    reliability n r / (1 + (n - 1) r) (classical test theory; r < 0 counts as 0)."""
    r = np.clip(r, 0.0, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(n_seeds * r / (1 + (n_seeds - 1) * r))


def _two_sided_p(differences: np.ndarray) -> float:
    """Bootstrap two-sided p of a zero difference, with the +1 correction (never 0)."""
    valid = differences[~np.isnan(differences)]
    below = (1 + (valid <= 0).sum()) / (1 + len(valid))
    above = (1 + (valid >= 0).sum()) / (1 + len(valid))
    return float(min(1.0, 2 * min(below, above)))


def random_scores(n_test: int, n_train: int, seed: int = 0) -> np.ndarray:
    """Scores blind to everything: the LDS every method must beat (about 0)."""
    return np.random.default_rng([seed, 7]).standard_normal((n_test, n_train))


def figure(table: pd.DataFrame) -> Figure:
    """LDS per method (margin target, all test languages) with intervals, ceiling marked."""
    frame = table[(table["target"] == MARGIN) & (table["test_language"] == ALL)]
    ceiling = frame[frame["method"] == CEILING_MEAN]
    methods = frame[~frame["method"].isin([CEILING, CEILING_MEAN])].sort_values("lds")
    fig = Figure(figsize=(6.5, 0.45 * len(methods) + 1.6))
    ax = fig.subplots()
    y = np.arange(len(methods))
    ax.errorbar(
        methods["lds"],
        y,
        xerr=[methods["lds"] - methods["ci_low"], methods["ci_high"] - methods["lds"]],
        fmt="o",
        capsize=3,
    )
    ax.set_yticks(y, methods["method"])
    ax.axvline(0, color="grey", lw=0.8)
    if len(ceiling):
        value = float(ceiling["lds"].iloc[0])
        label = f"ceiling for the seed mean {value:.2f}"
        ax.axvline(value, color="tab:red", ls="--", lw=1, label=label)
        ax.legend(loc="lower right")
    m = int(frame["n_subsets"].iloc[0])
    s = int(frame["n_seeds"].iloc[0])
    ax.set_xlabel(f"LDS (Spearman, margin; {m} subsets x {s} seeds; 95% CI over subsets)")
    fig.tight_layout()
    return fig
