"""A baseline that knows only labels: score(z, z') = +1 if the training example z' has the
test example z's label, else -1/(C-1) (C labels, so the scores over a label-balanced
training set sum to zero).

A subset's summed label-only score is "same-label rows kept minus the others' share":
what an undertrained model's margin follows when subsets change the label counts. An
attribution whose linear datamodeling score does not beat it on such subsets is counting
labels, not tracing examples (analysis/language_truth.py, docs/analysis.md). Same
interface as engine.CheckpointScorer, so the influence step chunks, resumes and sums it
like every method; it never runs the model.

Every same-label row ties, and a top-k over ties takes whatever rows the selection
algorithm meets first (file order: the first language's). A fixed pseudo-random jitter
below TIE_BREAK, a function of the (test row, training row) positions alone, breaks the
ties as a random draw would, so label-only's top-k shares are those of a random choice of
same-label rows; summed over hundreds of rows it moves a subset's prediction by under
1e-3 of one row's score.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xlinfluence.attribution.method import Method
from xlinfluence.tracin.engine import Batch, TestCache

TIE_BREAK = 1e-6
_MODULUS = 2_147_483_647  # 2^31 - 1, prime
_A, _B = 1_000_003, 998_244_353


def _mix(x):
    """A pseudo-random value in [0, modulus) per integer (numpy or torch int64): a linear
    form of the two positions, then squared modulo a prime, so that no two test rows share
    one order of the training rows."""
    x = x % _MODULUS
    return (x * x + 12_345) % _MODULUS


def label_only_matrix(
    test_labels: np.ndarray, train_labels: np.ndarray, n_labels: int
) -> np.ndarray:
    """(n_test, n_train) label-only scores with the tie-breaking jitter, rows and columns in
    the given order (the influence step's scores, computed without a model)."""
    test_index = np.arange(len(test_labels), dtype=np.int64)[:, None]
    train_index = np.arange(len(train_labels), dtype=np.int64)[None, :]
    same = np.asarray(test_labels)[:, None] == np.asarray(train_labels)[None, :]
    jitter = _mix(test_index * _A + train_index * _B) / _MODULUS * TIE_BREAK
    return np.where(same, 1.0, -1.0 / max(n_labels - 1, 1)) + jitter


class LabelOnlyScorer:
    """+1 for the same label, -1/(C-1) otherwise (plus the tie-break); C from the model's
    classification head."""

    def __init__(self, model: nn.Module):
        self.n_labels = int(model.config.num_labels)
        self.device = next(model.parameters()).device

    def __enter__(self) -> LabelOnlyScorer:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def test_cache(self, pieces: list[Batch], *, with_self: bool = False) -> TestCache:
        labels = torch.cat([piece["labels"] for piece in pieces]).to(self.device)
        index = torch.cat([piece["index"] for piece in pieces]).cpu()
        cache = {"labels": labels, "index": index.to(self.device)}
        return TestCache(cache, index, torch.ones(len(index)) if with_self else None)

    def train_block(
        self, batches: list[Batch], test: TestCache, *, with_self: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        labels = torch.cat([batch["labels"] for batch in batches]).to(self.device)
        index = torch.cat([batch["index"] for batch in batches]).to(self.device)
        same = labels[:, None] == test.cache["labels"][None, :]  # (B, M)
        other = -1.0 / max(self.n_labels - 1, 1)
        scores = torch.where(same, 1.0, other).to(torch.float64)
        mixed = _mix(test.cache["index"][None, :].long() * _A + index[:, None].long() * _B)
        scores = (scores + mixed.double() / _MODULUS * TIE_BREAK).float()
        return scores, torch.ones(len(labels), device=self.device) if with_self else None


class LabelOnly(Method):
    def scorer(self, model, param_filter, compute_dtype, training_batches, test_gradients):
        return LabelOnlyScorer(model)


METHOD = LabelOnly(
    "label-only",
    "+1 for a training row of the test example's label, -1/(C-1) otherwise: the label-count "
    "baseline",
    chunks="label-only",
    self_scores=False,
)
