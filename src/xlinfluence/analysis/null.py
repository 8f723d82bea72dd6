"""The language-blind null beside every language share.

With small pools, top-k is forced toward the data proportions: an attribution that ignored
language entirely and picked same-label training rows at random would still give each
training language its share of the test example's label. That share is the null; the
excess over it, paired per test example and with its own interval, is what an attribution
says about language beyond the data's make-up.

For a test example with gold label y, the null proponent share of training language X is
the expected fraction of X among k rows drawn at random from the rows labelled y (and, if
fewer than k are labelled y, all of them plus the rest drawn from the other rows);
opponents draw from the rows with another label first, as opponents mostly do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xlinfluence.analysis.bootstrap import (
    _long_intervals,
    _train_language_columns,
    bootstrap_means,
)
from xlinfluence.analysis.shares import SHARE
from xlinfluence.analysis.topk import (
    CHECKPOINT,
    KIND,
    OPPONENT,
    TEST_INDEX,
    TEST_LANGUAGE,
    TRAIN_LANGUAGE,
)
from xlinfluence.data import schema

NULL_SHARE, EXCESS = "null_share", "excess"


def null_fractions(
    train: pd.DataFrame, labels: np.ndarray, languages: list[str], k: int, *, same_label: bool
) -> np.ndarray:
    """(n_test, n_languages): expected share of each training language among k language-blind
    picks for test examples with the given gold labels."""
    train_label = train[schema.LABEL].to_numpy()
    train_language = train[schema.LANGUAGE].to_numpy()
    counts = {
        label: np.array([((train_label == label) & (train_language == x)).sum() for x in languages])
        for label in np.unique(train_label)
    }
    total = np.array([(train_language == x).sum() for x in languages], dtype=float)
    out = np.empty((len(labels), len(languages)))
    for row, label in enumerate(labels):
        matching = counts.get(label, np.zeros(len(languages))).astype(float)
        first = matching if same_label else total - matching
        rest = total - first
        taken = min(k, first.sum())
        share = taken * first / first.sum() if first.sum() else np.zeros(len(languages))
        if k > taken and rest.sum():
            share = share + (min(k, total.sum()) - taken) * rest / rest.sum()
        out[row] = share / share.sum()
    return out


def with_null(
    shares: pd.DataFrame,
    per_example: pd.DataFrame,
    train: pd.DataFrame,
    test: pd.DataFrame,
    k: int,
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """`shares` (share_intervals output) with null_share, excess (share - null) and its
    bootstrap interval over test examples (paired: the same examples on both sides)."""
    languages = _train_language_columns(per_example)
    labels = test[schema.LABEL].to_numpy()[per_example[TEST_INDEX].to_numpy()]
    null = np.empty((len(per_example), len(languages)))
    opponent = (per_example[KIND] == OPPONENT).to_numpy()
    for mask, same in ((~opponent, True), (opponent, False)):
        if mask.any():
            null[mask] = null_fractions(train, labels[mask], languages, k, same_label=same)
    excess = per_example.copy()
    excess[languages] = per_example[languages].to_numpy(dtype=float) - null
    null_frame = per_example.copy()
    null_frame[languages] = null
    keys = (CHECKPOINT, KIND)
    point = _long_intervals(bootstrap_means(null_frame, languages, keys, n_resamples=1),
                            languages, (*keys, TEST_LANGUAGE), point=True)  # fmt: skip
    wide = bootstrap_means(excess, languages, keys, seed=seed)
    ci = _long_intervals(wide, languages, (*keys, TEST_LANGUAGE))
    ci = ci.rename(columns={"ci_low": f"{EXCESS}_ci_low", "ci_high": f"{EXCESS}_ci_high"})
    on = [CHECKPOINT, KIND, TEST_LANGUAGE, TRAIN_LANGUAGE]
    out = shares.merge(point[[*on, SHARE]].rename(columns={SHARE: NULL_SHARE}), on=on, how="left")
    out[EXCESS] = out[SHARE] - out[NULL_SHARE]
    return out.merge(ci, on=on, how="left").set_axis(shares.index)
