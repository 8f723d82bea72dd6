"""Top-k proponents and opponents per test example, and the long table built from them.

A proponent of test example z' is a training example z with a positive TracIn score
(training on z pushed the loss on z' down); an opponent has a negative score
(Pruthi et al. 2020). The language-share analysis of Choenni et al. (2023) counts the
languages of the k strongest of each.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from xlinfluence.data import schema
from xlinfluence.errors import ArtifactError, ConfigError

#: Name of the learning-rate-weighted sum over checkpoints in a ``scores`` dict.
PROPONENT = "proponent"
OPPONENT = "opponent"
KINDS = (PROPONENT, OPPONENT)

#: Columns of the top-k table, in order (written by the influence step as topk.parquet).
CHECKPOINT = "checkpoint"
TEST_INDEX = "test_index"
TEST_ID = "test_id"
TEST_LANGUAGE = "test_language"
KIND = "kind"
RANK = "rank"
TRAIN_INDEX = "train_index"
TRAIN_ID = "train_id"
TRAIN_LANGUAGE = "train_language"
SCORE = "score"
TOPK_COLUMNS = (
    CHECKPOINT, TEST_INDEX, TEST_ID, TEST_LANGUAGE, KIND, RANK,
    TRAIN_INDEX, TRAIN_ID, TRAIN_LANGUAGE, SCORE,
)  # fmt: skip


def top_k(
    scores: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k strongest proponents and opponents of every test example.

    ``scores`` is (M test, N train). Proponents are the k largest scores of a row, in
    descending order; opponents the k most negative, in ascending order (rank 0 is the
    strongest opponent). If a row has fewer than k negative scores its opponent list is
    filled with the least positive ones: "opponent" means "lowest ranked", as in the paper.

    Returns ``(proponent_idx, proponent_scores, opponent_idx, opponent_scores)``, each (M, k).
    """
    if scores.ndim != 2:
        raise ArtifactError(
            f"scores must be a 2-D (n_test, n_train) matrix; got shape {tuple(scores.shape)}."
        )
    n_train = scores.shape[1]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"top_k={k!r} must be a positive integer; use e.g. top_k=100.")
    if k > n_train:
        raise ConfigError(f"top_k={k} exceeds the {n_train} training examples; lower top_k.")
    pro_scores, pro_idx = torch.topk(scores, int(k), dim=1, largest=True, sorted=True)  # (M, k)
    opp_scores, opp_idx = torch.topk(scores, int(k), dim=1, largest=False, sorted=True)  # (M, k)
    return pro_idx, pro_scores, opp_idx, opp_scores


def topk_table(
    scores_by_name: Mapping[str, torch.Tensor],
    train: pd.DataFrame,
    test: pd.DataFrame,
    k: int,
) -> pd.DataFrame:
    """Long table of the top-k proponents and opponents for every checkpoint and test example.

    One row per (checkpoint, test example, kind, rank); columns ``TOPK_COLUMNS``. Rows are
    ordered by checkpoint (the dict's order), test_index, kind (proponents first), rank.
    ``train`` and ``test`` are in tensor order: row i of ``train`` is column i of each
    score matrix, row j of ``test`` is row j.
    """
    if not scores_by_name:
        raise ConfigError("no score matrices given; pass at least one checkpoint's scores.")
    expected = (len(test), len(train))
    for name, scores in scores_by_name.items():
        if tuple(scores.shape) != expected:
            raise ArtifactError(
                f"scores[{name!r}] has shape {tuple(scores.shape)} but there are "
                f"{expected[0]} test and {expected[1]} training examples; the score "
                "matrices and the data manifest come from different runs."
            )
    train_ids = train[schema.ID].to_numpy(dtype=object)
    train_langs = train[schema.LANGUAGE].to_numpy(dtype=object)
    test_ids = test[schema.ID].to_numpy(dtype=object)
    test_langs = test[schema.LANGUAGE].to_numpy(dtype=object)

    m = len(test)
    frames = []
    for name, scores in scores_by_name.items():
        pro_idx, pro_s, opp_idx, opp_s = top_k(scores, k)
        idx = torch.stack([pro_idx, opp_idx], dim=1).reshape(-1).numpy()  # (M * 2 * k,)
        val = torch.stack([pro_s, opp_s], dim=1).reshape(-1).float().numpy()
        test_index = np.repeat(np.arange(m), 2 * k)
        frames.append(
            pd.DataFrame(
                {
                    CHECKPOINT: name,
                    TEST_INDEX: test_index,
                    TEST_ID: test_ids[test_index],
                    TEST_LANGUAGE: test_langs[test_index],
                    KIND: np.tile(np.repeat(np.array(KINDS, dtype=object), k), m),
                    RANK: np.tile(np.arange(k), 2 * m),
                    TRAIN_INDEX: idx.astype(np.int64),
                    TRAIN_ID: train_ids[idx],
                    TRAIN_LANGUAGE: train_langs[idx],
                    SCORE: val,
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    for column in (CHECKPOINT, TEST_ID, TEST_LANGUAGE, KIND, TRAIN_ID, TRAIN_LANGUAGE):
        table[column] = table[column].astype(str)
    return table


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], *, what: str) -> None:
    """Raise ArtifactError naming the missing columns of a table read back from disk."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ArtifactError(
            f"{what} lacks column(s) {missing}; found {list(frame.columns)}. "
            "Was it written by an older version? Recompute it with this one."
        )
