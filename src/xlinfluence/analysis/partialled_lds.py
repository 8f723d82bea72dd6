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

import numpy as np
import pandas as pd

from xlinfluence.analysis import lds
from xlinfluence.analysis.holm import holm

ALPHA = 0.05


def _quantile(values: np.ndarray, q: float) -> float:
    values = values[np.isfinite(values)]
    return float(np.quantile(values, q)) if len(values) else np.nan


def _residual_maker(cuts: np.ndarray) -> np.ndarray:
    """I - Z Z^+ for Z = [1, cut indicators]: what a prediction or outcome keeps once the
    composition's language amounts are partialled out."""
    z = np.column_stack([np.ones(len(cuts)), cuts.astype(float)])
    return np.eye(len(z)) - z @ np.linalg.pinv(z)


def _per_example(predicted: np.ndarray, outcome: np.ndarray, residual_maker) -> np.ndarray:
    """Per-test-example Spearman of partialled prediction and outcome; NaN where the
    prediction has nothing left after partialling (a label-only score on label-stratified
    cuts knows nothing beyond the amounts)."""
    left = residual_maker @ predicted
    scale = np.abs(predicted - predicted.mean(axis=0)).max(axis=0)
    flat = np.abs(left).max(axis=0) <= 1e-9 * np.maximum(scale, 1e-300)
    return np.where(flat, np.nan, lds.column_spearman(left, outcome))


def _groups(test_languages: np.ndarray) -> dict[str, np.ndarray]:
    return {lds.ALL: np.arange(len(test_languages))} | {
        lang: np.flatnonzero(test_languages == lang) for lang in pd.unique(test_languages)
    }


def partialled_lds(
    scores: dict[str, np.ndarray],
    kept: np.ndarray,
    outputs: dict[str, np.ndarray],
    cuts: np.ndarray,
    test_languages: np.ndarray,
    *,
    seed: int = 0,
    n_resamples: int = 2000,
) -> pd.DataFrame:
    """Example-level LDS over the compositions with the cut indicators partialled out of
    prediction and outcome (module doc). kept: (R, n_train); outputs: target -> (R, S,
    n_test); cuts: (R, k). A prediction with nothing left after partialling gets NaN."""
    residual_maker = _residual_maker(cuts)
    rng = np.random.default_rng([seed, 41])
    groups = _groups(test_languages)
    rows = []
    for target in lds.TARGETS:
        values = lds.realised(outputs, target)  # (R, S, n), larger = better
        outcome = residual_maker @ values.mean(axis=1)
        per_method = {
            method: _per_example(lds.predicted_outputs(method_scores, kept), outcome,
                                 residual_maker)
            for method, method_scores in scores.items()
        }  # fmt: skip
        n_seeds = values.shape[1]
        if n_seeds >= 2:
            single = np.mean(
                [lds.column_spearman(residual_maker @ values[:, a], residual_maker @ values[:, b])
                 for a in range(n_seeds) for b in range(a + 1, n_seeds)], axis=0,
            )  # fmt: skip
            per_method[lds.CEILING_MEAN] = lds._mean_of_seeds(single, n_seeds)
        ceiling = per_method.get(lds.CEILING_MEAN)
        for method, per_example in per_method.items():
            for language, idx in groups.items():
                sample = per_example[idx]
                valid = sample[np.isfinite(sample)]
                boot = (
                    rng.choice(valid, size=(n_resamples, len(valid))).mean(axis=1)
                    if len(valid) else np.full(n_resamples, np.nan)
                )  # fmt: skip
                point = float(valid.mean()) if len(valid) else np.nan
                roof = float(np.nanmean(ceiling[idx])) if ceiling is not None else np.nan
                rows.append({"method": method, "target": target, "test_language": language,
                             "lds": point, "low": _quantile(boot, ALPHA / 2),
                             "high": _quantile(boot, 1 - ALPHA / 2),
                             "ceiling": roof, "fraction_of_ceiling": point / roof
                             if method != lds.CEILING_MEAN and roof > 0 else np.nan,
                             "n_compositions": len(kept), "n_seeds": n_seeds,
                             "n_test": len(valid)})  # fmt: skip
    return pd.DataFrame(rows)


def partialled_differences(
    scores: dict[str, np.ndarray],
    kept: np.ndarray,
    outputs: dict[str, np.ndarray],
    cuts: np.ndarray,
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
    give the difference the sign of `diff`)."""
    if reference not in scores:
        raise KeyError(f"reference {reference!r} is none of {', '.join(scores)}")
    residual_maker = _residual_maker(cuts)
    rng = np.random.default_rng([seed, 43])
    groups = _groups(test_languages)
    draws = {name: rng.integers(0, len(idx), size=(n_resamples, len(idx)))
             for name, idx in groups.items()}  # fmt: skip
    rows = []
    for target in lds.TARGETS:
        values = lds.realised(outputs, target)  # (R, S, n)
        seed_outcomes = [residual_maker @ values[:, s] for s in range(values.shape[1])]
        pooled = residual_maker @ values.mean(axis=1)
        per_method = {}
        for method, method_scores in scores.items():
            predicted = lds.predicted_outputs(method_scores, kept)
            per_method[method] = (
                _per_example(predicted, pooled, residual_maker),
                [_per_example(predicted, o, residual_maker) for o in seed_outcomes],
            )
        ref_pooled, ref_seeds = per_method[reference]
        for method, (mine, mine_seeds) in per_method.items():
            if method == reference:
                continue
            for language, idx in groups.items():
                paired = mine[idx] - ref_pooled[idx]  # NaN where either is undefined
                if not np.isfinite(paired).any():
                    continue
                boot = np.nanmean(paired[draws[language]], axis=1)
                pairs = zip(mine_seeds, ref_seeds, strict=True)
                by_seed = np.array([np.nanmean(m[idx] - r[idx]) for m, r in pairs])
                diff = float(np.nanmean(paired))
                rows.append({
                    "method": method, "reference": reference, "target": target,
                    "test_language": language, "diff": diff,
                    "low": _quantile(boot, ALPHA / 2), "high": _quantile(boot, 1 - ALPHA / 2),
                    "p": lds._two_sided_p(boot),
                    "seed_low": float(np.nanmin(by_seed)), "seed_high": float(np.nanmax(by_seed)),
                    "seeds_agreeing": int((np.sign(by_seed) == np.sign(diff)).sum()),
                    "n_seeds": len(by_seed), "n_test": int(np.isfinite(paired).sum()),
                })  # fmt: skip
    table = pd.DataFrame(rows)
    if len(table):  # one family per question: which methods differ from the reference here
        table["p_holm"] = table.groupby(["target", "test_language"])["p"].transform(
            lambda p: holm(p.to_numpy())
        )
    return table
