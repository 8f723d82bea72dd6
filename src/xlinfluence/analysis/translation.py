"""Reinforcing vs complementary cross-lingual proponents (Choenni et al. 2023, Sec. 6).

With parallel training data (``pair_id`` links translations), a cross-lingual proponent of
a test example is *reinforcing* when it is a translation of one of the example's own-language
top-k proponents: it brings the same content again. Otherwise it is *complementary*: it
brings something the own-language data did not. The translation share is the fraction of
reinforcing ones among the cross-lingual proponents.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xlinfluence.analysis.topk import (
    CHECKPOINT,
    KIND,
    PROPONENT,
    TEST_ID,
    TEST_INDEX,
    TEST_LANGUAGE,
    TRAIN_INDEX,
    TRAIN_LANGUAGE,
    require_columns,
)
from xlinfluence.data import schema
from xlinfluence.errors import ArtifactError

TRANSLATION_SHARE = "translation_share"
CONTROL_SHARE = "control_translation_share"
CONTROL_DRAWS = 20
N_OWN_PROPONENTS = "n_own_proponents"
N_CROSS_PROPONENTS = "n_cross_proponents"
N_REINFORCING = "n_reinforcing"
N_EXAMPLES = "n_examples"


def translation_share_per_example(topk_table: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """Translation share of every (checkpoint, test example), from its top-k proponents.

    Columns: checkpoint, test_index, test_id, test_language, n_own_proponents,
    n_cross_proponents, n_reinforcing, translation_share.
    ``translation_share`` = n_reinforcing / n_cross_proponents, where a cross-lingual
    proponent (train language != test language) is reinforcing when its pair_id equals the
    pair_id of one of the example's own-language top-k proponents. NaN when the example has
    no cross-lingual proponent, or when none of its proponents has a pair_id (nothing is
    known about translations). With no own-language proponent (e.g. zero-shot) it is 0.

    Partially parallel data: proponents from a training language that shares no pair_id
    with any other (see `unrelated_languages`) cannot be translations, so they are left out
    of n_cross_proponents; a test language that is itself unrelated gets NaN.
    """
    require_columns(
        topk_table,
        (CHECKPOINT, TEST_INDEX, TEST_LANGUAGE, KIND, TRAIN_INDEX, TRAIN_LANGUAGE),
        what="the top-k table",
    )
    pro = topk_table.loc[topk_table[KIND] == PROPONENT]
    if len(pro) and int(pro[TRAIN_INDEX].max()) >= len(train):
        raise ArtifactError(
            f"the top-k table points at training example {int(pro[TRAIN_INDEX].max())} but "
            f"the training set has {len(train)}; they come from different runs."
        )
    pair_ids = (
        train[schema.PAIR_ID].astype("string")
        if schema.PAIR_ID in train
        else pd.Series(pd.NA, index=train.index, dtype="string")
    ).to_numpy(dtype=object, na_value=None)
    unrelated = unrelated_languages(train)
    pro = pro.loc[~pro[TEST_LANGUAGE].isin(unrelated)]
    parallel = ~pro[TRAIN_LANGUAGE].isin(unrelated).to_numpy()
    own = (pro[TRAIN_LANGUAGE] == pro[TEST_LANGUAGE]).to_numpy()
    pair = pair_ids[pro[TRAIN_INDEX].to_numpy()]

    keys = [CHECKPOINT, TEST_INDEX]
    rows = []
    for group_key, idx in pro.groupby(keys, sort=False).indices.items():
        is_own, pairs = own[idx], pair[idx]
        own_pairs = {p for p in pairs[is_own] if p is not None}
        cross = pairs[~is_own & parallel[idx]]
        n_reinforcing = sum(p is not None and p in own_pairs for p in cross)
        known = any(p is not None for p in pairs)
        share = n_reinforcing / len(cross) if len(cross) and known else np.nan
        rows.append((*group_key, int(is_own.sum()), len(cross), n_reinforcing, share))
    columns = [*keys, N_OWN_PROPONENTS, N_CROSS_PROPONENTS, N_REINFORCING, TRANSLATION_SHARE]
    counts = pd.DataFrame(rows, columns=columns)
    meta_columns = [*keys, *([TEST_ID] if TEST_ID in pro else []), TEST_LANGUAGE]
    every = topk_table.loc[topk_table[KIND] == PROPONENT]
    out = every.drop_duplicates(keys)[meta_columns].merge(counts, on=keys, how="left")
    for column in (N_OWN_PROPONENTS, N_CROSS_PROPONENTS, N_REINFORCING):
        out[column] = out[column].fillna(0).astype("int64")  # unrelated test languages
    out[TRANSLATION_SHARE] = out[TRANSLATION_SHARE].astype("float64")
    return out.reset_index(drop=True)


def unrelated_languages(train: pd.DataFrame) -> set[str]:
    """Training languages none of whose pair_ids occurs in another language: their examples
    have no translation in the data (a partially parallel set)."""
    if schema.PAIR_ID not in train:
        return set()
    paired = train.dropna(subset=[schema.PAIR_ID])
    languages_per_pair = paired.groupby(schema.PAIR_ID)[schema.LANGUAGE].nunique()
    shared = set(languages_per_pair.index[languages_per_pair > 1])
    has_shared = paired[schema.PAIR_ID].isin(shared).groupby(paired[schema.LANGUAGE]).any()
    paired_languages = set(has_shared.index[has_shared])
    if not paired_languages:  # nothing parallel at all: the shares are NaN anyway
        return set()
    return set(train[schema.LANGUAGE].unique()) - paired_languages


def within_label_shuffle(train: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The training set with pair_ids permuted among examples of the same language and label.

    The control for the translation share: a cross-lingual proponent then "matches" an
    own-language proponent by label alone, which is what the share would be if TracIn
    picked same-label examples but did not single out translations.
    """
    control = train.copy()
    rng = np.random.default_rng(seed)
    paired = control[schema.PAIR_ID].notna()
    for _, rows in (
        control[paired].groupby([schema.LANGUAGE, schema.LABEL], sort=True).groups.items()
    ):
        values = control.loc[rows, schema.PAIR_ID].to_numpy()
        control.loc[rows, schema.PAIR_ID] = rng.permutation(values)
    return control


def control_share_per_example(
    topk_table: pd.DataFrame, train: pd.DataFrame, *, draws: int = CONTROL_DRAWS, seed: int = 0
) -> pd.Series:
    """Per (checkpoint, test example), in translation_share_per_example's row order: the mean
    translation share over `draws` within-label shuffles of the pair_ids."""
    shares = [
        translation_share_per_example(topk_table, within_label_shuffle(train, seed + draw))[
            TRANSLATION_SHARE
        ]
        for draw in range(draws)
    ]
    return pd.concat(shares, axis=1).mean(axis=1).rename(CONTROL_SHARE)


def aggregate_translation_share(per_example: pd.DataFrame) -> pd.DataFrame:
    """Per (checkpoint, test_language): mean translation share over test examples.

    Columns: checkpoint, test_language, translation_share (NaN-skipping mean over examples),
    control_translation_share (the same for the within-label shuffled control, when
    per_example has it), n_examples (examples with a defined share), n_cross_proponents and
    n_reinforcing (sums over all the language's examples). Rows in checkpoint order, then
    test order.
    """
    group = [CHECKPOINT, TEST_LANGUAGE]
    grouped = per_example.groupby(group, sort=False)
    columns = {TRANSLATION_SHARE: grouped[TRANSLATION_SHARE].mean()}  # skips NaN
    if CONTROL_SHARE in per_example:
        columns[CONTROL_SHARE] = grouped[CONTROL_SHARE].mean()
    return pd.DataFrame(
        columns
        | {
            N_EXAMPLES: grouped[TRANSLATION_SHARE].count(),
            N_CROSS_PROPONENTS: grouped[N_CROSS_PROPONENTS].sum(),
            N_REINFORCING: grouped[N_REINFORCING].sum(),
        }
    ).reset_index()


def translation_share(topk_table: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """Aggregated translation share per checkpoint and test language (see module doc).

    Same as ``aggregate_translation_share(translation_share_per_example(topk_table, train))``.
    """
    return aggregate_translation_share(translation_share_per_example(topk_table, train))


TRANSLATION_INFLUENTIAL_SHARE = "translation_influential_share"
N_TRANSLATED = "n_cross_with_translation"


def translation_influence(
    topk_table: pd.DataFrame, train: pd.DataFrame, scores_by_name
) -> pd.DataFrame:
    """Per (checkpoint, test example): of its cross-lingual top-k proponents whose translation
    into the test language is in the training set, the fraction whose translation itself has
    a positive score for that test example (it helps too, top-k or not).

    The complement of `translation_share`'s question: not "is the translation among the top
    proponents?" but "does the translation help at all?". Needs the full score matrices.
    Columns: checkpoint, test_index, test_language, n_cross_with_translation,
    translation_influential_share (NaN when no cross proponent has a translation).
    """
    pro = topk_table[topk_table[KIND] == PROPONENT]
    cross = pro[pro[TRAIN_LANGUAGE] != pro[TEST_LANGUAGE]]
    pairs = train[schema.PAIR_ID].to_numpy(dtype=object)
    where = {
        (lang, pair): i
        for i, (lang, pair) in enumerate(zip(train[schema.LANGUAGE], pairs, strict=True))
        if isinstance(pair, str)
    }
    translation = [
        where.get((lang, pairs[i]), -1)
        for lang, i in zip(cross[TEST_LANGUAGE], cross[TRAIN_INDEX], strict=True)
    ]
    frame = cross[[CHECKPOINT, TEST_INDEX, TEST_LANGUAGE]].assign(translation=translation)
    frame = frame[frame["translation"] >= 0]
    positive = np.zeros(len(frame), dtype=bool)
    for name, rows in frame.groupby(CHECKPOINT, sort=False).groups.items():
        block = frame.loc[rows]
        scores = scores_by_name[name]
        # copies: torch warns on indexing with pandas' read-only arrays
        at = (block[TEST_INDEX].to_numpy(copy=True), block["translation"].to_numpy(copy=True))
        values = scores[at]
        positive[frame.index.get_indexer(rows)] = (values > 0).numpy()
    frame = frame.assign(positive=positive)
    keys = [CHECKPOINT, TEST_INDEX, TEST_LANGUAGE]
    out = pro.drop_duplicates(keys)[keys].merge(
        frame.groupby(keys, sort=False)
        .agg(
            **{
                N_TRANSLATED: ("positive", "size"),
                TRANSLATION_INFLUENTIAL_SHARE: ("positive", "mean"),
            }
        )
        .reset_index(),
        on=keys,
        how="left",
    )
    out[N_TRANSLATED] = out[N_TRANSLATED].fillna(0).astype("int64")
    return out.reset_index(drop=True)
