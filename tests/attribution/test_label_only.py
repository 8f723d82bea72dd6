"""The label-only baseline: +1 / -1/(C-1) by label, ties broken as a random draw would."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xlinfluence.attribution.label_only import TIE_BREAK, LabelOnlyScorer, label_only_matrix


class _Head(nn.Module):
    def __init__(self, n_labels: int):
        super().__init__()
        self.config = type("Config", (), {"num_labels": n_labels})()
        self.weight = nn.Parameter(torch.zeros(1))


def test_the_scorer_logs_the_matrix_blockwise():
    rng = np.random.default_rng(0)
    train_labels, test_labels = rng.integers(0, 4, 37), rng.integers(0, 4, 9)
    expected = label_only_matrix(test_labels, train_labels, 4)
    with LabelOnlyScorer(_Head(4)) as scorer:
        pieces = [{"labels": torch.tensor(test_labels[a:b]), "index": torch.arange(a, b)}
                  for a, b in ((0, 5), (5, 9))]  # fmt: skip
        cache = scorer.test_cache(pieces)
        blocks = [{"labels": torch.tensor(train_labels[a:b]), "index": torch.arange(a, b)}
                  for a, b in ((0, 16), (16, 32), (32, 37))]  # fmt: skip
        scores, _ = scorer.train_block(blocks, cache)
    np.testing.assert_allclose(scores.T.numpy(), expected, rtol=0, atol=1e-7)
    rounded = np.where(test_labels[:, None] == train_labels[None, :], 1.0, -1 / 3)
    assert np.abs(expected - rounded).max() < TIE_BREAK


def test_its_top_k_is_a_spread_draw_of_same_label_rows_not_the_first_in_file_order():
    languages = np.repeat(np.arange(5), 100)  # five languages in file order
    train_labels = np.tile(np.arange(4), 125)
    scores = label_only_matrix(np.zeros(50, dtype=int), train_labels, 4)
    top = np.argpartition(-scores, 20, axis=1)[:, :20]
    assert (train_labels[top] == 0).all()
    share_first = (languages[top] == 0).mean()
    assert 0.1 < share_first < 0.3  # about 1/5, not 1
    assert len({tuple(sorted(row)) for row in top}) > 40  # each test row draws its own
