"""Influence mass per training language, beside the top-k counts.

Top-k shares count who holds the k strongest slots; mass asks how much of the total
TracIn influence (Pruthi et al. 2020) a training language carries. For test example j and
training language L, the proponent mass is the sum of the positive scores of L's training
examples on j, the opponent mass the sum of the negative ones. A language with many
weakly helpful examples can carry much mass while holding few top-k slots, and the other
way round; reading both guards against an artefact of the cut-off k.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from xlinfluence.analysis.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    Seed,
    bootstrap_means,
    high_column,
    low_column,
)
from xlinfluence.analysis.shares import N_TEST
from xlinfluence.analysis.topk import (
    CHECKPOINT,
    TEST_ID,
    TEST_INDEX,
    TEST_LANGUAGE,
    TRAIN_LANGUAGE,
    check_scores,
)
from xlinfluence.data import schema

N_TRAIN_EXAMPLES = "n_train_examples"
PROPONENT_MASS = "proponent_mass"
OPPONENT_MASS = "opponent_mass"
PROPONENT_MASS_PER_EXAMPLE = "proponent_mass_per_example"
PROPONENT_MASS_SHARE = "proponent_mass_share"
MASS_COLUMNS = (
    CHECKPOINT, TEST_LANGUAGE, TRAIN_LANGUAGE, N_TRAIN_EXAMPLES, PROPONENT_MASS,
    OPPONENT_MASS, PROPONENT_MASS_PER_EXAMPLE, PROPONENT_MASS_SHARE, N_TEST,
    low_column(PROPONENT_MASS_SHARE), high_column(PROPONENT_MASS_SHARE),
)  # fmt: skip


def example_mass(
    scores_by_name: Mapping[str, torch.Tensor], train: pd.DataFrame, test: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """Per (checkpoint, test example) and training language: proponent and opponent mass.

    Returns three wide tables keyed ``proponent_mass``, ``opponent_mass`` and
    ``proponent_mass_share``, each with columns checkpoint, test_index, test_id,
    test_language, then one column per training language (train order):
    the sum of positive scores, the sum of negative scores (<= 0), and the fraction of the
    example's total positive mass (rows sum to 1; NaN when the example has no positive
    score at all). ``train`` and ``test`` are in tensor order (row i of ``train`` is
    column i of every score matrix).
    """
    languages, onehot = _language_indicator(train)  # (N, L)
    frames: dict[str, list[pd.DataFrame]] = {
        PROPONENT_MASS: [], OPPONENT_MASS: [], PROPONENT_MASS_SHARE: []
    }  # fmt: skip
    meta = pd.DataFrame(
        {
            TEST_INDEX: np.arange(len(test)),
            TEST_ID: test[schema.ID].astype(str).to_numpy(),
            TEST_LANGUAGE: test[schema.LANGUAGE].astype(str).to_numpy(),
        }
    )
    for name, scores in check_scores(scores_by_name, train, test).items():
        scores = scores.detach().to("cpu", torch.float64)  # (M, N); fp64 sums
        pro = (scores.clamp(min=0.0) @ onehot).numpy()  # (M, L)
        opp = (scores.clamp(max=0.0) @ onehot).numpy()  # (M, L)
        total = pro.sum(axis=1, keepdims=True)  # (M, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(total > 0, pro / total, np.nan)
        for key, values in (
            (PROPONENT_MASS, pro),
            (OPPONENT_MASS, opp),
            (PROPONENT_MASS_SHARE, share),
        ):
            frame = pd.concat([meta, pd.DataFrame(values, columns=languages)], axis=1)
            frame.insert(0, CHECKPOINT, name)
            frames[key].append(frame)
    return {key: pd.concat(parts, ignore_index=True) for key, parts in frames.items()}


def influence_mass(
    scores_by_name: Mapping[str, torch.Tensor],
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: Seed = 0,
) -> pd.DataFrame:
    """Influence mass per checkpoint, test language and training language (long table).

    Columns ``MASS_COLUMNS``: checkpoint, test_language, train_language,
    n_train_examples (training examples of train_language), proponent_mass (mean over the
    test language's examples of the sum of positive scores of train_language's examples),
    opponent_mass (the same for negative scores; <= 0), proponent_mass_per_example
    (proponent_mass / n_train_examples), proponent_mass_share (mean over the test
    language's examples of the example's fraction of positive mass from train_language;
    each test example weighs the same, as in the top-k shares), n_test, and the
    percentile bootstrap interval of proponent_mass_share over test examples
    (``bootstrap.py``). Rows: checkpoint order, test order, train order.
    """
    per = example_mass(scores_by_name, train, test)
    languages = [c for c in per[PROPONENT_MASS].columns if c not in _META]
    keys = [CHECKPOINT, TEST_LANGUAGE]
    share = bootstrap_means(
        per[PROPONENT_MASS_SHARE],
        languages,
        (CHECKPOINT,),
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    ).set_index(keys)
    means = {
        key: per[key].groupby(keys, sort=False)[languages].mean().reindex(share.index)
        for key in (PROPONENT_MASS, OPPONENT_MASS)
    }
    n_train = train[schema.LANGUAGE].astype(str).value_counts()
    frames = []
    for language in languages:
        part = share[[N_TEST]].reset_index()
        part[TRAIN_LANGUAGE] = language
        part[N_TRAIN_EXAMPLES] = int(n_train[language])
        part[PROPONENT_MASS] = means[PROPONENT_MASS][language].to_numpy()
        part[OPPONENT_MASS] = means[OPPONENT_MASS][language].to_numpy()
        part[PROPONENT_MASS_PER_EXAMPLE] = part[PROPONENT_MASS] / part[N_TRAIN_EXAMPLES]
        part[PROPONENT_MASS_SHARE] = share[language].to_numpy()
        part[low_column(PROPONENT_MASS_SHARE)] = share[low_column(language)].to_numpy()
        part[high_column(PROPONENT_MASS_SHARE)] = share[high_column(language)].to_numpy()
        frames.append(part)
    out = pd.concat(frames, ignore_index=True)
    order = {
        "_c": out[CHECKPOINT].map({c: i for i, c in enumerate(scores_by_name)}),
        "_t": out[TEST_LANGUAGE].map(
            {t: i for i, t in enumerate(pd.unique(test[schema.LANGUAGE].astype(str)))}
        ),
        "_l": out[TRAIN_LANGUAGE].map({lang: i for i, lang in enumerate(languages)}),
    }
    out = out.loc[pd.DataFrame(order).sort_values(list(order), kind="stable").index]
    return out[list(MASS_COLUMNS)].reset_index(drop=True)


_META = (CHECKPOINT, TEST_INDEX, TEST_ID, TEST_LANGUAGE)


def _language_indicator(train: pd.DataFrame) -> tuple[list[str], torch.Tensor]:
    """Training languages in train order and the (N, L) float64 one-hot membership matrix."""
    langs = train[schema.LANGUAGE].astype(str)
    languages = [str(lang) for lang in pd.unique(langs)]
    codes = torch.as_tensor(pd.Index(languages).get_indexer(langs), dtype=torch.long)  # (N,)
    onehot = torch.zeros(len(train), len(languages), dtype=torch.float64)
    onehot[torch.arange(len(train)), codes] = 1.0
    return languages, onehot
