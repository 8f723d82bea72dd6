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


class StreamingTopK:
    """Top-k proponents and opponents of every test row, fed one column block at a time.

    Memory is (M, k) whatever the number of training examples, so top-k can be kept
    without ever holding the (M, N) matrix. Equals `top_k` on the full matrix up to the
    order of exactly tied scores.
    """

    def __init__(self, n_rows: int, k: int):
        self.k = k
        self.pro_scores = torch.full((n_rows, k), -torch.inf)  # (M, k)
        self.opp_scores = torch.full((n_rows, k), torch.inf)
        self.pro_idx = torch.full((n_rows, k), -1, dtype=torch.long)
        self.opp_idx = torch.full((n_rows, k), -1, dtype=torch.long)

    def update(self, block: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> None:
        """Merge `block` (len(rows), len(columns)) of scores into the running top-k."""
        block = block.float()
        cols = columns.unsqueeze(0).expand(len(rows), -1)  # (R, n)
        for scores, idx, largest in (
            (self.pro_scores, self.pro_idx, True),
            (self.opp_scores, self.opp_idx, False),
        ):
            merged = torch.cat([scores[rows], block], dim=1)  # (R, k + n)
            merged_idx = torch.cat([idx[rows], cols], dim=1)
            best, where = torch.topk(merged, self.k, dim=1, largest=largest, sorted=True)
            scores[rows] = best
            idx[rows] = torch.gather(merged_idx, 1, where)

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(proponent_idx, proponent_scores, opponent_idx, opponent_scores), each (M, k)."""
        if (self.pro_idx < 0).any():
            raise ConfigError(f"top_k={self.k} exceeds the training examples seen; lower top_k.")
        return self.pro_idx, self.pro_scores, self.opp_idx, self.opp_scores


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
    check_scores(scores_by_name, train, test)
    return topk_table_from(
        {name: top_k(scores, k) for name, scores in scores_by_name.items()}, train, test
    )


def check_scores(
    scores_by_name: Mapping[str, torch.Tensor], train: pd.DataFrame, test: pd.DataFrame
) -> Mapping[str, torch.Tensor]:
    """The score matrices, if there is at least one and each is (n_test, n_train)."""
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
    return scores_by_name


def topk_table_from(
    results: Mapping[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    train: pd.DataFrame,
    test: pd.DataFrame,
) -> pd.DataFrame:
    """The long table from top-k results (`top_k` or `StreamingTopK.result`) by name."""
    train_ids = train[schema.ID].to_numpy(dtype=object)
    train_langs = train[schema.LANGUAGE].to_numpy(dtype=object)
    test_ids = test[schema.ID].to_numpy(dtype=object)
    test_langs = test[schema.LANGUAGE].to_numpy(dtype=object)

    m = len(test)
    frames = []
    for name, (pro_idx, pro_s, opp_idx, opp_s) in results.items():
        k = pro_idx.shape[1]
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
