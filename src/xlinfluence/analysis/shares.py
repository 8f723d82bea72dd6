"""Language shares of top-k proponents and opponents (Choenni, Garrette & Shutova 2023).

For a test example, the share of training language L is the fraction of its top-k slots
held by training examples in L. A test language's share of L is the mean of that over its
test examples, so every test example weighs the same. The own-language share says how much
a prediction relies on same-language data; 1 - own share is the cross-lingual share.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from xlinfluence.analysis.topk import (
    CHECKPOINT,
    KIND,
    KINDS,
    TEST_ID,
    TEST_INDEX,
    TEST_LANGUAGE,
    TRAIN_INDEX,
    TRAIN_LANGUAGE,
    require_columns,
)
from xlinfluence.errors import ConfigError, DataError

SHARE = "share"
COUNT = "count"
N_TEST = "n_test"
SELF_SHARE = "self_share"
CROSS_SHARE = "cross_share"
ZERO_SHOT = "zero_shot"

_NEEDED = (CHECKPOINT, TEST_INDEX, TEST_LANGUAGE, KIND, TRAIN_LANGUAGE)


def example_shares(
    topk_table: pd.DataFrame, train_languages: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per test example, the fraction of its top-k slots from each training language.

    Columns: checkpoint, kind, test_index, test_id, test_language, then one column per
    training language (fractions summing to 1 per row). The unit for bootstrap resampling.
    ``train_languages`` (train order) should list every language of the training set, so
    that a language never among anyone's top-k still gets a zero column; without it only
    the languages seen in the table are used (ordered by their first training index).
    """
    meta, counts = _example_counts(topk_table, train_languages)
    fractions = counts.div(counts.sum(axis=1), axis=0)
    return pd.concat([meta, fractions], axis=1)


def language_shares(
    topk_table: pd.DataFrame, train_languages: Sequence[str] | None = None
) -> pd.DataFrame:
    """Share of each training language in each test language's top-k, per checkpoint and kind.

    Columns: checkpoint, kind, test_language, train_language, share, count, n_test.
    ``share`` = mean over the test language's examples of the fraction of the example's
    top-k from ``train_language``; ``count`` = number of those top-k slots in total;
    ``n_test`` = number of test examples averaged. Complete: every test language x every
    training language, zeros included. Pass ``train_languages`` (all languages of the
    training set, in train order) so a language absent from every top-k is not dropped.
    Rows follow checkpoint order, proponents before opponents, test order, train order.
    """
    meta, counts = _example_counts(topk_table, train_languages)
    languages = list(counts.columns)
    fractions = counts.div(counts.sum(axis=1), axis=0)
    group = [CHECKPOINT, KIND, TEST_LANGUAGE]
    keys = [meta[c] for c in group]
    share = fractions.groupby(keys, sort=False).mean()
    count = counts.groupby(keys, sort=False).sum()
    n_test = counts.groupby(keys, sort=False).size().rename(N_TEST).reset_index()
    long = _long(share, SHARE).merge(_long(count, COUNT), on=[*group, TRAIN_LANGUAGE])
    long = long.merge(n_test, on=group)
    long[TRAIN_LANGUAGE] = pd.Categorical(long[TRAIN_LANGUAGE], categories=languages)
    long = _sort(long, topk_table, extra=[TRAIN_LANGUAGE])
    long[TRAIN_LANGUAGE] = long[TRAIN_LANGUAGE].astype(str)
    long[COUNT] = long[COUNT].astype("int64")
    return long[[*group, TRAIN_LANGUAGE, SHARE, COUNT, N_TEST]].reset_index(drop=True)


def share_matrix(shares: pd.DataFrame, checkpoint: str, kind: str) -> pd.DataFrame:
    """The test language x training language share matrix of one checkpoint and kind.

    Rows are test languages in test order, columns training languages in train order
    (the order of ``language_shares`` output); each row sums to 1.
    """
    require_columns(
        shares, (CHECKPOINT, KIND, TEST_LANGUAGE, TRAIN_LANGUAGE, SHARE), what="the shares table"
    )
    rows = shares[(shares[CHECKPOINT] == checkpoint) & (shares[KIND] == kind)]
    if rows.empty:
        raise ConfigError(
            f"no shares for checkpoint={checkpoint!r}, kind={kind!r}; available checkpoints "
            f"{list(pd.unique(shares[CHECKPOINT]))}, kinds {list(pd.unique(shares[KIND]))}."
        )
    matrix = rows.pivot(index=TEST_LANGUAGE, columns=TRAIN_LANGUAGE, values=SHARE)
    matrix = matrix.loc[pd.unique(rows[TEST_LANGUAGE]), pd.unique(rows[TRAIN_LANGUAGE])]
    matrix.index.name, matrix.columns.name = TEST_LANGUAGE, TRAIN_LANGUAGE
    return matrix


def self_shares(shares: pd.DataFrame) -> pd.DataFrame:
    """Own-language and cross-lingual share per checkpoint, kind and test language.

    Columns: checkpoint, kind, test_language, self_share, cross_share, zero_shot.
    ``self_share`` = share of the test language's own language; NaN for a zero-shot test
    language (absent from training, so "own share" is undefined), whose ``cross_share``
    is 1 since all of its top-k is cross-lingual. Otherwise cross_share = 1 - self_share.
    """
    require_columns(
        shares, (CHECKPOINT, KIND, TEST_LANGUAGE, TRAIN_LANGUAGE, SHARE), what="the shares table"
    )
    keys = [CHECKPOINT, KIND, TEST_LANGUAGE]
    out = shares[keys].drop_duplicates().reset_index(drop=True)
    own = shares.loc[shares[TRAIN_LANGUAGE] == shares[TEST_LANGUAGE], [*keys, SHARE]]
    out = out.merge(own.rename(columns={SHARE: SELF_SHARE}), on=keys, how="left")
    out[ZERO_SHOT] = ~out[TEST_LANGUAGE].isin(set(shares[TRAIN_LANGUAGE]))
    out[SELF_SHARE] = out[SELF_SHARE].astype("float64")
    out[CROSS_SHARE] = np.where(out[ZERO_SHOT], 1.0, 1.0 - out[SELF_SHARE])
    return out[[*keys, SELF_SHARE, CROSS_SHARE, ZERO_SHOT]]


def _example_counts(
    table: pd.DataFrame, train_languages: Sequence[str] | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (checkpoint, kind, test example): its metadata, and top-k slots per train language.

    Both frames share a RangeIndex and the row order of ``_sort``.
    """
    require_columns(table, _NEEDED, what="the top-k table")
    languages = _train_languages(table, train_languages)
    keys = [CHECKPOINT, KIND, TEST_INDEX]
    counts = (
        table.groupby([*keys, TRAIN_LANGUAGE], sort=False)
        .size()
        .unstack(TRAIN_LANGUAGE, fill_value=0)
        .reindex(columns=languages, fill_value=0)
    )
    counts.columns.name = None
    meta_columns = [*keys, *([TEST_ID] if TEST_ID in table else []), TEST_LANGUAGE]
    meta = _sort(table.drop_duplicates(keys)[meta_columns], table, extra=[TEST_INDEX])
    counts = counts.loc[list(zip(*(meta[c] for c in keys), strict=True))]
    return meta.reset_index(drop=True), counts.reset_index(drop=True).astype("int64")


def _train_languages(table: pd.DataFrame, given: Sequence[str] | None) -> list[str]:
    if TRAIN_INDEX in table:  # seen languages in train order
        seen = list(table.groupby(TRAIN_LANGUAGE)[TRAIN_INDEX].min().sort_values().index)
    else:
        seen = list(pd.unique(table[TRAIN_LANGUAGE]))
    if given is None:
        return [str(lang) for lang in seen]
    languages = [str(lang) for lang in pd.unique(pd.Series(list(given), dtype=object))]
    unknown = sorted(set(seen) - set(languages))
    if unknown:
        raise DataError(
            f"the top-k table has training language(s) {unknown} that are not in "
            f"train_languages={languages}; pass the languages of the same training set."
        )
    return languages


def _long(wide: pd.DataFrame, name: str) -> pd.DataFrame:
    wide = wide.copy()
    wide.columns.name = None
    return wide.reset_index().melt(
        id_vars=list(wide.index.names), var_name=TRAIN_LANGUAGE, value_name=name
    )


def _sort(frame: pd.DataFrame, table: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    """Order rows by checkpoint order, kind (proponents first), test order, then ``extra``."""
    checkpoints = list(pd.unique(table[CHECKPOINT]))
    test_order = table.groupby(TEST_LANGUAGE, sort=False)[TEST_INDEX].min().sort_values()
    kinds = [k for k in KINDS if k in set(table[KIND])] + sorted(set(table[KIND]) - set(KINDS))
    keys = {
        "_c": frame[CHECKPOINT].map({c: i for i, c in enumerate(checkpoints)}),
        "_k": frame[KIND].map({k: i for i, k in enumerate(kinds)}),
        "_t": frame[TEST_LANGUAGE].map({t: i for i, t in enumerate(test_order.index)}),
    }
    for column in extra:
        values = frame[column]
        keys[f"_{column}"] = (
            values.cat.codes if isinstance(values.dtype, pd.CategoricalDtype) else values
        )
    order = pd.DataFrame(keys, index=frame.index).sort_values(list(keys), kind="stable").index
    return frame.loc[order]
