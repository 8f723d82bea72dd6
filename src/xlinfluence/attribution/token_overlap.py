"""A lexical baseline: the TF-IDF cosine of a test example's and a training example's tokens.

Cross-lingual influence could be no more than shared tokens: languages that share a script
or loanwords share subword pieces, and a gradient method may follow them. This baseline
scores every (test, train) pair by the tokens the two have in common and nothing else, so
its language shares say where the lexical overlap lies, and a method whose shares or LDS
it matches explains no more than that. It never runs the model.

Tokens are the model tokenizer's pieces (the trimmed vocabulary's ids). tf is a piece's
count in the example; idf = ln((1 + N) / (1 + df)) over the N training examples, so a
piece in every training example (the specials <s> and </s>) weighs nothing and a piece the
training set lacks weighs ln(1 + N) (it counts in the test example's norm, and matches
nothing). Each example's tf-idf vector is unit-normalised; the score is their dot product,
in [0, 1], 1 for identical token counts. It is the same at every checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from xlinfluence.attribution.method import Method, TrainingBatches
from xlinfluence.tracin.engine import Batch, TestCache


def _rows(batches: list[Batch]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each example's token ids (padding dropped) and its row index, in the batches' order."""
    rows, index = [], []
    for batch in batches:
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
            rows.append(ids[mask.bool()].cpu())
        index.append(batch["index"].cpu())
    return rows, torch.cat(index)


class TokenOverlapScorer:
    """The scorer interface of tracin.engine.CheckpointScorer over tf-idf vectors; the idf
    is fitted on the first use from the training batches it is given."""

    def __init__(self, training_batches: TrainingBatches, device: torch.device):
        self._training_batches = training_batches
        self.device = device
        self.vocab: torch.Tensor | None = None  # sorted token ids seen in training
        self.idf: torch.Tensor | None = None  # (len(vocab),) float64
        self.unseen_idf = 0.0  # a piece no training example has

    def __enter__(self) -> TokenOverlapScorer:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _fit(self) -> None:
        rows, _ = _rows(list(self._training_batches()))
        present = torch.cat([row.unique() for row in rows])
        self.vocab, df = present.unique(return_counts=True)
        n = len(rows)
        self.idf = torch.log((1.0 + n) / (1.0 + df.double()))
        self.unseen_idf = math.log(1.0 + n)

    def _vectors(self, batches: list[Batch]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, len(vocab)) unit tf-idf vectors over the training vocabulary (the norm
        includes the pieces outside it), the rows' indices, and their self-scores (1, or 0
        for an example of specials alone)."""
        if self.vocab is None:
            self._fit()
        rows, index = _rows(batches)
        vectors = torch.zeros(len(rows), len(self.vocab), dtype=torch.float64)
        self_scores = torch.zeros(len(rows))
        for r, ids in enumerate(rows):
            pieces, counts = ids.unique(return_counts=True)
            at = torch.searchsorted(self.vocab, pieces).clamp(max=len(self.vocab) - 1)
            known = self.vocab[at] == pieces
            vectors[r, at[known]] = counts[known].double() * self.idf[at[known]]
            outside = (counts[~known].double() * self.unseen_idf).square().sum()
            norm = (vectors[r].square().sum() + outside).sqrt()
            if norm > 0:
                vectors[r] /= norm
                self_scores[r] = 1.0
        return vectors.to(self.device), index, self_scores

    def test_cache(self, pieces: list[Batch], *, with_self: bool = False) -> TestCache:
        vectors, index, self_scores = self._vectors(pieces)
        return TestCache({"vectors": vectors}, index, self_scores if with_self else None)

    def train_block(
        self, batches: list[Batch], test: TestCache, *, with_self: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        vectors, _, self_scores = self._vectors(batches)
        scores = (vectors @ test.cache["vectors"].T).float()  # (B, M)
        return scores, self_scores.to(self.device) if with_self else None


class TokenOverlap(Method):
    def scorer(self, model: nn.Module, param_filter, compute_dtype, training_batches,
               test_gradients):  # fmt: skip
        return TokenOverlapScorer(training_batches, next(model.parameters()).device)


METHOD = TokenOverlap(
    "token-overlap",
    "tf-idf cosine of the two examples' tokens, no model: the lexical-overlap baseline",
    chunks="token-overlap",
)
