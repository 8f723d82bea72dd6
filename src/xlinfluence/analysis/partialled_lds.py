"""The example-level LDS of a designed retraining experiment (the language datamodel), with
the language amounts partialled out, and each method's paired difference from a reference.

Each composition keeps a fresh random draw of every cut language, so an attribution's
summed prediction varies within a design cell. With the cut indicators partialled out of
both the prediction and the realised output (mean over seeds), the per-test-example
Spearman over compositions measures what the attribution knows beyond the language
amounts. Beside it the seed ceiling for the seed mean, and each method's LDS as a fraction
of it.

A choice between methods rests on their paired difference: over the same test examples,
one method's per-example LDS minus the reference's, with a bootstrap interval over test
examples and a two-sided p, Holm-adjusted over the methods compared for one target and
test language. The retrainings are
shared by every example, which that bootstrap does not resample, so beside it each seed's
outputs alone give the difference again: how many seeds agree in sign is the check that
the difference is not one seed's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from xlinfluence.analysis import lds
from xlinfluence.analysis.bootstrap import finite_quantile
from xlinfluence.analysis.holm import holm

ALPHA = 0.05
# A partialled prediction whose largest value is under this fraction of the score row's L1
# norm (the most any composition could move the prediction) is flat: what is left is
# rounding or a tie-break, and ranking it would score noise. On the two SIB-200 designs
# label-only's jitter (under 1e-6 a row) leaves at most 7e-8 of it, while every real
# attribution and random scores keep 2e-5 or more (docs/findings.md 1f).
FLAT = 1e-6
# Partialled values closer than this fraction of their column's magnitude (a prediction's
# score L1 norm, an outcome's largest absolute value) rank as ties (_tied_ranks); rounding
# in the products that partial them out is about 1e-15 of it.
TIE = 1e-9


def _residual_maker(cuts: np.ndarray) -> np.ndarray:
    """I - Z Z^+ for Z = [1, cut indicators]: what a prediction or outcome keeps once the
    composition's language amounts are partialled out."""
    z = np.column_stack([np.ones(len(cuts)), cuts.astype(float)])
    return np.eye(len(z)) - z @ np.linalg.pinv(z)


def _tied_ranks(values: np.ndarray, tolerance: np.ndarray) -> np.ndarray:
    """Average ranks over the leading axis of (R, n), per column, where values closer than
    that column's `tolerance` are one tie. A regular fractional design makes exact ties:
    the 2^(5-2) design's residual space is spanned by two +-1 contrasts, so the 8 partialled
    values of any column take 4 values, each twice. Ranked as they come out of floating
    point, those pairs would be ordered by rounding noise, and the LDS would change with
    the BLAS build."""
    n_rows, n_cols = values.shape
    order = np.argsort(values, axis=0, kind="stable")
    ordered = np.take_along_axis(values, order, axis=0)
    starts = np.vstack([np.ones((1, n_cols), bool), np.diff(ordered, axis=0) > tolerance])
    group = np.cumsum(starts, axis=0) - 1  # (R, n): each sorted value's tie group
    cols = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    position = np.broadcast_to(np.arange(1, n_rows + 1, dtype=float)[:, None], group.shape)
    total, count = np.zeros((n_rows, n_cols)), np.zeros((n_rows, n_cols))
    np.add.at(total, (group, cols), position)
    np.add.at(count, (group, cols), 1.0)
    ranks = np.empty_like(ordered)
    np.put_along_axis(ranks, order, (total / np.maximum(count, 1.0))[group, cols], axis=0)
    return ranks


def _partialled_ranks(values: np.ndarray, magnitude: np.ndarray, residual_maker) -> np.ndarray:
    """Ranks of a (R, n) prediction or outcome once the amounts are partialled out; values
    within TIE of `magnitude` (per column) are tied."""
    return _tied_ranks(residual_maker @ values, TIE * magnitude)


@dataclass(frozen=True)
class PerExample:
    """Each method's per-test-example partialled LDS, per target: against the seed-mean
    outputs (`pooled`) and against each seed's alone (`by_seed`), with the seed ceiling of
    the seed mean (`ceiling`, absent with one seed). Both tables read it, so each
    prediction is made and ranked once."""

    pooled: dict[str, dict[str, np.ndarray]]  # target -> method -> (n_test,)
    by_seed: dict[str, dict[str, list[np.ndarray]]]  # target -> method -> S x (n_test,)
    ceiling: dict[str, np.ndarray]  # target -> (n_test,)
    n_compositions: int
    n_seeds: int


def per_example(
    scores: dict[str, np.ndarray], kept: np.ndarray, outputs: dict[str, np.ndarray],
    cuts: np.ndarray,
) -> PerExample:  # fmt: skip
    """kept: (R, n_train) rows each composition kept; outputs: target -> (R, S, n_test);
    cuts: (R, k) the design's cut indicators."""
    residual_maker = _residual_maker(cuts)
    ranks, flat = {}, {}
    for method, method_scores in scores.items():
        predicted = lds.predicted_outputs(method_scores, kept)
        reach = np.abs(np.asarray(method_scores, dtype=np.float64)).sum(axis=1)
        flat[method] = np.abs(residual_maker @ predicted).max(axis=0) <= FLAT * reach
        ranks[method] = _partialled_ranks(predicted, reach, residual_maker)
    pooled, by_seed, ceiling = {}, {}, {}
    for target in lds.TARGETS:
        values = lds.realised(outputs, target)  # (R, S, n), larger = better
        n_seeds = values.shape[1]
        magnitude = np.abs(values).max(axis=(0, 1))
        outcome = _partialled_ranks(values.mean(axis=1), magnitude, residual_maker)
        seed_outcomes = [_partialled_ranks(values[:, s], magnitude, residual_maker)
                         for s in range(n_seeds)]  # fmt: skip

        def rho(method, outcome_ranks):
            correlation = lds.rank_correlation(ranks[method], outcome_ranks)
            return np.where(flat[method], np.nan, correlation)

        pooled[target] = {m: rho(m, outcome) for m in scores}
        by_seed[target] = {m: [rho(m, o) for o in seed_outcomes] for m in scores}
        if n_seeds >= 2:
            single = np.mean(
                [lds.rank_correlation(seed_outcomes[a], seed_outcomes[b])
                 for a in range(n_seeds) for b in range(a + 1, n_seeds)], axis=0,
            )  # fmt: skip
            ceiling[target] = lds._mean_of_seeds(single, n_seeds)
    return PerExample(pooled, by_seed, ceiling, len(kept), values.shape[1])


def _draws(groups: dict[str, np.ndarray], n: int, rng: np.random.Generator) -> dict:
    """Bootstrap index draws per test-language group, drawn once and shared by every method,
    so that one method's interval does not depend on which methods are scored beside it."""
    return {name: rng.integers(0, len(idx), size=(n, len(idx))) for name, idx in groups.items()}


def _resampled_mean(sample: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The mean of each resample's defined values (NaN where a resample has none)."""
    picked = sample[draws]
    defined = np.isfinite(picked)
    count = defined.sum(axis=1)
    total = np.where(defined, picked, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _groups(test_languages: np.ndarray) -> dict[str, np.ndarray]:
    return {lds.ALL: np.arange(len(test_languages))} | {
        lang: np.flatnonzero(test_languages == lang) for lang in pd.unique(test_languages)
    }


def partialled_lds(
    examples: PerExample, test_languages: np.ndarray, *, seed: int = 0, n_resamples: int = 2000
) -> pd.DataFrame:
    """Example-level LDS per (method, target, test language and ALL) with the cut indicators
    partialled out of prediction and outcome (module doc), a bootstrap interval over test
    examples and the fraction of the seed ceiling. A method whose prediction has nothing
    left after partialling gets NaN (n_test counts the examples it is defined on)."""
    groups = _groups(test_languages)
    draws = _draws(groups, n_resamples, np.random.default_rng([seed, 41]))
    rows = []
    for target in lds.TARGETS:
        per_method = dict(examples.pooled[target])
        ceiling = examples.ceiling.get(target)
        if ceiling is not None:
            per_method[lds.CEILING_MEAN] = ceiling
        for method, values in per_method.items():
            for language, idx in groups.items():
                sample = values[idx]
                valid = sample[np.isfinite(sample)]
                boot = _resampled_mean(sample, draws[language])
                point = float(valid.mean()) if len(valid) else np.nan
                roof = float(np.nanmean(ceiling[idx])) if ceiling is not None else np.nan
                rows.append({"method": method, "target": target, "test_language": language,
                             "lds": point, "low": finite_quantile(boot, ALPHA / 2),
                             "high": finite_quantile(boot, 1 - ALPHA / 2),
                             "ceiling": roof, "fraction_of_ceiling": point / roof
                             if method != lds.CEILING_MEAN and roof > 0 else np.nan,
                             "n_compositions": examples.n_compositions,
                             "n_seeds": examples.n_seeds, "n_test": len(valid)})  # fmt: skip
    return pd.DataFrame(rows)


def partialled_differences(
    examples: PerExample,
    test_languages: np.ndarray,
    *,
    reference: str,
    seed: int = 0,
    n_resamples: int = 10_000,
) -> pd.DataFrame:
    """Each method's partialled LDS minus `reference`'s, paired over the test examples
    where both are defined (module doc): diff, low, high (bootstrap over test examples),
    p (two-sided, +1 corrected), p_holm over the methods of one (target, test language),
    the family a choice of method for that target and language faces (10,000 resamples put
    the smallest p_holm at 2e-4 times the methods); seed_low and seed_high (the smallest and
    largest difference that one seed's outputs give) and seeds_agreeing (how many seeds
    give the difference the sign of `diff`). A method defined on no example (flat after
    partialling) has no row and is not in the family."""
    methods = examples.pooled[lds.TARGETS[0]]
    if reference not in methods:
        raise KeyError(f"reference {reference!r} is none of {', '.join(methods)}")
    groups = _groups(test_languages)
    draws = _draws(groups, n_resamples, np.random.default_rng([seed, 43]))
    rows = []
    for target in lds.TARGETS:
        pooled, by_seed = examples.pooled[target], examples.by_seed[target]
        for method, mine in pooled.items():
            if method == reference:
                continue
            for language, idx in groups.items():
                paired = mine[idx] - pooled[reference][idx]  # NaN where either is undefined
                if not np.isfinite(paired).any():
                    continue
                boot = _resampled_mean(paired, draws[language])
                pairs = zip(by_seed[method], by_seed[reference], strict=True)
                by_one = np.array([np.nanmean(m[idx] - r[idx]) for m, r in pairs])
                diff = float(np.nanmean(paired))
                rows.append({
                    "method": method, "reference": reference, "target": target,
                    "test_language": language, "diff": diff,
                    "low": finite_quantile(boot, ALPHA / 2),
                    "high": finite_quantile(boot, 1 - ALPHA / 2),
                    "p": lds._two_sided_p(boot),
                    "seed_low": float(np.nanmin(by_one)), "seed_high": float(np.nanmax(by_one)),
                    "seeds_agreeing": int((np.sign(by_one) == np.sign(diff)).sum()),
                    "n_seeds": len(by_one), "n_test": int(np.isfinite(paired).sum()),
                })  # fmt: skip
    table = pd.DataFrame(rows)
    if len(table):  # one family per question: which methods differ from the reference here
        table["p_holm"] = table.groupby(["target", "test_language"])["p"].transform(
            lambda p: holm(p.to_numpy())
        )
    return table
