"""Percentile bootstrap confidence intervals over test examples (Efron & Tibshirani 1993).

Every share this package reports is a mean over a test language's examples of a
per-example value (the fraction of the example's top-k from a training language, its
translation share, its fraction of positive influence mass). The uncertainty that matters
is which test examples happened to be drawn, so the bootstrap resamples test examples,
with replacement, *within each test language* (stratified: every resample keeps each
language's example count), recomputes the mean, and reports the ``alpha/2`` and
``1 - alpha/2`` percentiles of the ``n_resamples`` resampled means (``alpha = 1 -
confidence``). Means skip NaN per-example values (an undefined translation share); a
resample in which every drawn value is NaN is left out of the percentiles.

One draw of example indices, shape (n_resamples, n_examples), is made per test language
and shared by every checkpoint, kind and column, so intervals from the same seed are
consistent with each other (the own-language share's interval is exactly the interval of
that language's cell in the shares table). Draws are turned into count weights and
contracted with a matmul, so memory is (n_resamples, n_examples) whatever the number of
checkpoints.

With several training seeds, ``hierarchical_bootstrap_means`` pools them: each resample
draws seeds with replacement, then, within every drawn seed, that seed's test examples
with replacement (two-level bootstrap, Davison & Hinkley 1997, Sec. 3.8), so the interval
covers both the seed-to-seed and the example-to-example variation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from xlinfluence.analysis.shares import CROSS_SHARE, N_TEST, SELF_SHARE, SHARE, ZERO_SHOT
from xlinfluence.analysis.topk import (
    CHECKPOINT,
    KIND,
    TEST_ID,
    TEST_INDEX,
    TEST_LANGUAGE,
    TRAIN_LANGUAGE,
    require_columns,
)
from xlinfluence.analysis.translation import CONTROL_SHARE, TRANSLATION_SHARE
from xlinfluence.errors import ConfigError, DataError

CI_LOW = "ci_low"
CI_HIGH = "ci_high"
N_SEEDS = "n_seeds"
DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95

#: Metadata columns of an ``example_shares`` table; every other column is a train language.
_EXAMPLE_META = (CHECKPOINT, KIND, TEST_INDEX, TEST_ID, TEST_LANGUAGE)

Seed = int | np.random.Generator | None


def low_column(column: str) -> str:
    return f"{column}_{CI_LOW}"


def high_column(column: str) -> str:
    return f"{column}_{CI_HIGH}"


# --------------------------------------------------------------------------- generic core


def bootstrap_means(
    per_example: pd.DataFrame,
    value_columns: Sequence[str],
    by: Sequence[str] = (CHECKPOINT,),
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: Seed = 0,
) -> pd.DataFrame:
    """Mean of each value column per (``by``..., test_language) with its bootstrap interval.

    ``per_example`` has one row per (``by``..., test example) with columns ``by``,
    test_index, test_language and ``value_columns``; within a test language every ``by``
    group must hold the same test examples. Resamples test examples within each test
    language (module doc). Columns: ``by``..., test_language, n_test, then per value column
    ``c``: ``c`` (NaN-skipping mean over the language's examples), ``c_ci_low``,
    ``c_ci_high``. Rows: ``by`` groups in table order, then test languages in test order.
    """
    return hierarchical_bootstrap_means(
        [per_example],
        value_columns,
        by,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    ).drop(columns=N_SEEDS)


def hierarchical_bootstrap_means(
    per_example_tables: Sequence[pd.DataFrame],
    value_columns: Sequence[str],
    by: Sequence[str] = (CHECKPOINT,),
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: Seed = 0,
) -> pd.DataFrame:
    """``bootstrap_means`` pooled over seeds: one per-example table per training seed.

    The point estimate is the NaN-skipping mean over all (seed, test example) values of a
    test language (with equal example counts per seed: the mean of the per-seed means).
    Each resample draws S of the S seeds with replacement, then for every drawn seed its
    n test examples of the language with replacement, and takes the mean of those S x n
    values (two-level bootstrap). Every table needs the same ``by`` groups and, per test
    language, the same number of test examples (the examples themselves may differ).
    With one table this is the plain stratified bootstrap. Columns as
    ``bootstrap_means`` plus n_seeds; n_test is the examples per seed.
    """
    _check_settings(n_resamples, confidence)
    if not per_example_tables:
        raise ConfigError("no per-example tables given; pass one table per seed.")
    by, value_columns = list(by), list(value_columns)
    for table in per_example_tables:
        require_columns(
            table, (*by, TEST_INDEX, TEST_LANGUAGE, *value_columns), what="the per-example table"
        )
    rng = np.random.default_rng(seed)
    n_seeds = len(per_example_tables)
    frames = []
    for language in _test_languages(per_example_tables[0]):
        groups, values = zip(
            *(_layout(t, language, value_columns, by) for t in per_example_tables), strict=True
        )
        _check_alike(groups, values, language)
        n = values[0].shape[0]
        pooled = np.concatenate(values, axis=0)  # (S * n, G * C)
        weights = _hierarchical_weights(n_seeds, n, n_resamples, rng)  # (B, S * n)
        means = _weighted_means(weights, pooled)  # (B, G * C)
        point = _weighted_means(np.ones((1, n_seeds * n)), pooled)[0]  # (G * C,)
        low, high = _percentiles(means, confidence)
        g, c = len(groups[0]), len(value_columns)
        frame = groups[0].reset_index(drop=True)
        frame[TEST_LANGUAGE] = language
        frame[N_SEEDS] = n_seeds
        frame[N_TEST] = n
        for j, column in enumerate(value_columns):
            frame[column] = point.reshape(g, c)[:, j]
            frame[low_column(column)] = low.reshape(g, c)[:, j]
            frame[high_column(column)] = high.reshape(g, c)[:, j]
        frames.append(frame)
    out = _group_order(pd.concat(frames, ignore_index=True), per_example_tables[0], by)
    order = [*by, TEST_LANGUAGE, N_SEEDS, N_TEST]
    order += [x for col in value_columns for x in (col, low_column(col), high_column(col))]
    return out[order]


# ------------------------------------------------------------------- the package's tables


def share_intervals(
    shares: pd.DataFrame,
    per_example: pd.DataFrame,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: Seed = 0,
) -> pd.DataFrame:
    """``language_shares`` output with ``ci_low``, ``ci_high`` added to every row.

    ``per_example`` is the ``example_shares`` table of the same top-k table and training
    languages. The interval is for ``share`` (mean over the test language's examples of the
    per-example fraction of top-k from ``train_language``).
    """
    require_columns(
        shares, (CHECKPOINT, KIND, TEST_LANGUAGE, TRAIN_LANGUAGE, SHARE), what="the shares table"
    )
    languages = _train_language_columns(per_example)
    wide = bootstrap_means(
        per_example,
        languages,
        (CHECKPOINT, KIND),
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    ci = _long_intervals(wide, languages, (CHECKPOINT, KIND, TEST_LANGUAGE))
    return _attach(shares, ci, (CHECKPOINT, KIND, TEST_LANGUAGE, TRAIN_LANGUAGE))


def self_share_intervals(
    self_shares: pd.DataFrame,
    per_example: pd.DataFrame,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: Seed = 0,
) -> pd.DataFrame:
    """``self_shares`` output with ``self_share_ci_low/high`` and ``cross_share_ci_low/high``.

    Per test example, the own share is its fraction of top-k from its own language and the
    cross share 1 minus that; for a zero-shot language (no training data) the own share is
    NaN and the cross share 1, so its intervals are NaN and [1, 1].
    """
    require_columns(
        self_shares, (CHECKPOINT, KIND, TEST_LANGUAGE, SELF_SHARE), what="the self-shares table"
    )
    per = _own_cross(per_example)
    wide = bootstrap_means(
        per,
        [SELF_SHARE, CROSS_SHARE],
        (CHECKPOINT, KIND),
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    ci_columns = [low_column(SELF_SHARE), high_column(SELF_SHARE)]
    ci_columns += [low_column(CROSS_SHARE), high_column(CROSS_SHARE)]
    ci = wide[[CHECKPOINT, KIND, TEST_LANGUAGE, *ci_columns]]
    return _attach(self_shares, ci, (CHECKPOINT, KIND, TEST_LANGUAGE))


def translation_share_intervals(
    aggregated: pd.DataFrame,
    per_example: pd.DataFrame,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: Seed = 0,
) -> pd.DataFrame:
    """``aggregate_translation_share`` output with ``translation_share_ci_low/high`` (and
    ``control_translation_share_ci_low/high`` when the table has the control).

    ``per_example`` is ``translation_share_per_example``; its NaN shares (no cross-lingual
    proponent, or no pair ids) are skipped, as in the point estimate, but the examples
    stay in the resampling pool, so the number of defined examples varies by resample.
    """
    require_columns(
        aggregated, (CHECKPOINT, TEST_LANGUAGE, TRANSLATION_SHARE), what="the translation table"
    )
    values = [c for c in (TRANSLATION_SHARE, CONTROL_SHARE) if c in per_example]
    wide = bootstrap_means(
        per_example,
        values,
        (CHECKPOINT,),
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    columns = [name for c in values for name in (low_column(c), high_column(c))]
    return _attach(
        aggregated, wide[[CHECKPOINT, TEST_LANGUAGE, *columns]], (CHECKPOINT, TEST_LANGUAGE)
    )


def pooled_share_intervals(
    per_example_tables: Sequence[pd.DataFrame],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: Seed = 0,
) -> pd.DataFrame:
    """Language shares pooled over seeds, from one ``example_shares`` table per seed.

    Columns: checkpoint, kind, test_language, train_language, share, n_seeds, n_test,
    ci_low, ci_high; ``share`` is the mean over all seeds' examples, the interval from
    ``hierarchical_bootstrap_means``. All tables need the same training languages.
    """
    languages = _train_language_columns(per_example_tables[0]) if per_example_tables else []
    for table in per_example_tables[1:]:
        if _train_language_columns(table) != languages:
            raise DataError(
                f"the seeds' per-example tables have different training languages "
                f"({_train_language_columns(table)} vs {languages}); pass the same "
                "train_languages to example_shares for every seed."
            )
    wide = hierarchical_bootstrap_means(
        per_example_tables,
        languages,
        (CHECKPOINT, KIND),
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    keys = (CHECKPOINT, KIND, TEST_LANGUAGE)
    long = _long_intervals(wide, languages, keys, point=True)
    counts = wide[[*keys, N_SEEDS, N_TEST]]
    long = long.merge(counts, on=list(keys), how="left")
    return long[[*keys, TRAIN_LANGUAGE, SHARE, N_SEEDS, N_TEST, CI_LOW, CI_HIGH]]


def pooled_self_share_intervals(
    per_example_tables: Sequence[pd.DataFrame],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: Seed = 0,
) -> pd.DataFrame:
    """Own-language and cross-lingual shares pooled over seeds (``example_shares`` per seed).

    Columns: checkpoint, kind, test_language, n_seeds, n_test, self_share,
    self_share_ci_low, self_share_ci_high, cross_share, cross_share_ci_low,
    cross_share_ci_high, zero_shot.
    """
    out = hierarchical_bootstrap_means(
        [_own_cross(t) for t in per_example_tables],
        [SELF_SHARE, CROSS_SHARE],
        (CHECKPOINT, KIND),
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    out[ZERO_SHOT] = ~out[TEST_LANGUAGE].isin(_train_language_columns(per_example_tables[0]))
    return out


def pooled_translation_share_intervals(
    per_example_tables: Sequence[pd.DataFrame],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: Seed = 0,
) -> pd.DataFrame:
    """Translation share pooled over seeds (``translation_share_per_example`` per seed).

    Columns: checkpoint, test_language, n_seeds, n_test, translation_share,
    translation_share_ci_low, translation_share_ci_high.
    """
    return hierarchical_bootstrap_means(
        per_example_tables,
        [TRANSLATION_SHARE],
        (CHECKPOINT,),
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )


# ----------------------------------------------------------------------------- internals


def _check_settings(n_resamples: int, confidence: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)):
        raise ConfigError(f"n_resamples={n_resamples!r} must be an integer, e.g. 1000.")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples={n_resamples} must be at least 1; use e.g. 1000.")
    if not 0.0 < float(confidence) < 1.0:
        raise ConfigError(
            f"confidence={confidence!r} must lie strictly between 0 and 1; use e.g. 0.95."
        )


def _test_languages(table: pd.DataFrame) -> list[str]:
    """Test languages in test order (by their first test_index)."""
    first = table.groupby(TEST_LANGUAGE, sort=False)[TEST_INDEX].min().sort_values(kind="stable")
    return list(first.index)


def _layout(
    table: pd.DataFrame, language: str, value_columns: list[str], by: list[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """The ``by`` groups of one test language and its values as (n_examples, G * C).

    Row i is the language's i-th test example (by test_index); columns run over groups
    (outer) and value columns (inner).
    """
    rows = table.loc[table[TEST_LANGUAGE] == language]
    groups = rows[by].drop_duplicates().reset_index(drop=True)  # (G, len(by))
    examples = np.sort(pd.unique(rows[TEST_INDEX]))  # (n,)
    if rows.duplicated([*by, TEST_INDEX]).any():
        raise DataError(
            f"test language {language!r}: a test example occurs twice in one "
            f"{by} group; pass a per-example table (one row per group and test example)."
        )
    if len(rows) != len(groups) * len(examples):
        raise DataError(
            f"test language {language!r}: the {by} groups do not all hold the same "
            f"{len(examples)} test examples; pass a per-example table made from one top-k table."
        )
    key_group = pd.MultiIndex.from_frame(groups).get_indexer(pd.MultiIndex.from_frame(rows[by]))
    key_example = np.searchsorted(examples, rows[TEST_INDEX].to_numpy())
    order = np.lexsort((key_example, key_group))
    values = rows[value_columns].to_numpy(dtype=float)[order]  # (G * n, C)
    g, n, c = len(groups), len(examples), len(value_columns)
    values = values.reshape(g, n, c).transpose(1, 0, 2).reshape(n, g * c)
    return groups, values


def _check_alike(groups: Sequence[pd.DataFrame], values: Sequence[np.ndarray], language: str):
    for i, (g, v) in enumerate(zip(groups[1:], values[1:], strict=True), start=1):
        if not g.equals(groups[0]) or v.shape != values[0].shape:
            raise DataError(
                f"test language {language!r}: seed table {i} has {len(g)} groups x "
                f"{v.shape[0]} test examples but table 0 has {len(groups[0])} x "
                f"{values[0].shape[0]}; pooling seeds needs the same checkpoints and the same "
                "number of test examples per language in every seed."
            )


def _group_order(out: pd.DataFrame, table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Rows in the table's order of ``by`` groups (e.g. checkpoint order), then test order."""
    groups = pd.MultiIndex.from_frame(table[by].drop_duplicates())
    code = groups.get_indexer(pd.MultiIndex.from_frame(out[by]))
    order = np.argsort(code, kind="stable")  # test order kept within a group
    return out.iloc[order].reset_index(drop=True)


def _hierarchical_weights(
    n_seeds: int, n: int, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """How often each (seed, example) is drawn in each resample: (B, S * n) counts.

    Seeds are drawn with replacement (B, S); then, per drawn seed, n examples with
    replacement (B, S, n). With one seed the seed draw is skipped, so the result is the
    plain stratified bootstrap and does not consume extra random numbers.
    """
    if n_seeds == 1:
        flat = rng.integers(0, n, size=(n_resamples, n))  # (B, n) example indices
    else:
        seeds = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))  # (B, S)
        examples = rng.integers(0, n, size=(n_resamples, n_seeds, n))  # (B, S, n)
        flat = (seeds[:, :, None] * n + examples).reshape(n_resamples, n_seeds * n)
    width = n_seeds * n
    offsets = np.arange(n_resamples)[:, None] * width  # (B, 1)
    counts = np.bincount((flat + offsets).ravel(), minlength=n_resamples * width)
    return counts.reshape(n_resamples, width).astype(float)


def _weighted_means(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """NaN-skipping weighted means: (B, U) weights x (U, K) values -> (B, K)."""
    defined = ~np.isnan(values)
    sums = weights @ np.where(defined, values, 0.0)  # (B, K)
    counts = weights @ defined.astype(float)  # (B, K)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def finite_quantile(values: np.ndarray, q: float) -> float:
    """The q-quantile of the defined values of a 1-D resample (NaN when none is)."""
    values = values[np.isfinite(values)]
    return float(np.quantile(values, q)) if len(values) else np.nan


def _percentiles(means: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over resamples (axis 0), skipping undefined resamples."""
    alpha = 1.0 - float(confidence)
    q = [alpha / 2, 1.0 - alpha / 2]
    if not np.isnan(means).any():
        low, high = np.quantile(means, q, axis=0)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            low, high = np.nanquantile(means, q, axis=0)
    return low, high


def _train_language_columns(per_example: pd.DataFrame) -> list[str]:
    require_columns(
        per_example, (CHECKPOINT, KIND, TEST_INDEX, TEST_LANGUAGE), what="the example_shares table"
    )
    return [str(c) for c in per_example.columns if c not in _EXAMPLE_META]


def _own_cross(per_example: pd.DataFrame) -> pd.DataFrame:
    """Per example: own-language fraction (NaN if zero-shot) and cross-lingual fraction."""
    languages = _train_language_columns(per_example)
    fractions = per_example[languages].to_numpy(dtype=float)  # (rows, L)
    column = pd.Index(languages).get_indexer(per_example[TEST_LANGUAGE])  # -1: zero-shot
    own = np.where(column >= 0, fractions[np.arange(len(fractions)), column], np.nan)
    out = per_example[[CHECKPOINT, KIND, TEST_INDEX, TEST_LANGUAGE]].copy()
    out[SELF_SHARE] = own
    out[CROSS_SHARE] = np.where(column >= 0, 1.0 - own, 1.0)
    return out


def _long_intervals(
    wide: pd.DataFrame, languages: list[str], keys: Sequence[str], point: bool = False
) -> pd.DataFrame:
    """Per-language columns of ``bootstrap_means`` output -> one row per train language."""
    frames = []
    for language in languages:
        part = wide[list(keys)].copy()
        part[TRAIN_LANGUAGE] = language
        if point:
            part[SHARE] = wide[language].to_numpy()
        part[CI_LOW] = wide[low_column(language)].to_numpy()
        part[CI_HIGH] = wide[high_column(language)].to_numpy()
        frames.append(part)
    long = pd.concat(frames)  # index = row of ``wide``; rows of one language together
    return long.sort_index(kind="stable").reset_index(drop=True)  # train order within a row


def _attach(table: pd.DataFrame, ci: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """``table`` with the interval columns of ``ci`` added, rows and order unchanged."""
    added = [c for c in ci.columns if c not in keys]
    out = table.drop(columns=[c for c in added if c in table.columns])
    out = out.merge(ci, on=list(keys), how="left", validate="many_to_one")
    return out.set_axis(table.index)
