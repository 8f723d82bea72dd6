"""A baseline that knows only labels: score(z, z') = +1 if the training example z' has the
test example z's label, else -1/(C-1) (C labels, so the scores over a label-balanced
training set sum to zero).

A subset's summed label-only score is "same-label rows kept minus the others' share":
what an undertrained model's margin follows when subsets change the label counts. An
attribution whose linear datamodeling score does not beat it on such subsets is counting
labels, not tracing examples (analysis/language_truth.py, docs/analysis.md). Same
interface as engine.CheckpointScorer, so the influence step chunks, resumes and sums it
like every method; it never runs the model.
"""

from __future__ import annotations

import torch
from torch import nn

from xlinfluence.tracin.engine import Batch, TestCache


class LabelOnlyScorer:
    """+1 for the same label, -1/(C-1) otherwise; C from the model's classification head."""

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
        return TestCache({"labels": labels}, index, torch.ones(len(index)) if with_self else None)

    def train_block(
        self, batches: list[Batch], test: TestCache, *, with_self: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        labels = torch.cat([batch["labels"] for batch in batches]).to(self.device)
        same = labels[:, None] == test.cache["labels"][None, :]  # (B, M)
        other = -1.0 / max(self.n_labels - 1, 1)
        scores = torch.where(same, torch.tensor(1.0), torch.tensor(other))
        return scores, torch.ones(len(labels), device=self.device) if with_self else None
