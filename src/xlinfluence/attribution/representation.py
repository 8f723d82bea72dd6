"""A gradient-free baseline beside TracIn: cosine similarity of sentence representations.

score(z, z') = cos(h(z), h(z')), with h the encoder's last hidden state at the first token
(<s> / [CLS]), the input of the classification head. It asks "which training examples
does the model represent like this test example?" instead of "which ones' gradients
align with it?"; Choenni et al. (2023) name agreement with other attribution methods as an
open check, and this is the cheapest one. Same interface as engine.CheckpointScorer, so
the influence step chunks, resumes and aggregates it like TracIn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xlinfluence.attribution.method import Method
from xlinfluence.tracin.engine import MODEL_INPUT_KEYS, Batch, TestCache


class RepresentationScorer:
    """Cosine of first-token representations at one checkpoint."""

    def __init__(self, model: nn.Module, compute_dtype: torch.dtype | None = None):
        model.eval()
        self.model = model
        self.device = next(model.parameters()).device
        self.compute_dtype = compute_dtype

    def __enter__(self) -> RepresentationScorer:
        return self

    def __exit__(self, *exc) -> None:
        return None

    @torch.no_grad()
    def _embed(self, batch: Batch) -> torch.Tensor:
        inputs = {k: batch[k].to(self.device) for k in MODEL_INPUT_KEYS if k in batch}
        with torch.autocast(
            self.device.type, dtype=self.compute_dtype, enabled=bool(self.compute_dtype)
        ):
            hidden = self.model.base_model(**inputs).last_hidden_state[:, 0]  # (B, d)
        return F.normalize(hidden.float(), dim=-1)

    def test_cache(self, pieces: list[Batch], *, with_self: bool = False) -> TestCache:
        h = torch.cat([self._embed(piece) for piece in pieces])  # (M, d)
        index = torch.cat([piece["index"] for piece in pieces]).cpu()
        return TestCache({"h": h}, index, torch.ones(len(index)) if with_self else None)

    def train_block(
        self, batches: list[Batch], test: TestCache, *, with_self: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = torch.cat([self._embed(batch) for batch in batches])  # (B, d)
        scores = h @ test.cache["h"].T  # (B, M)
        return scores, torch.ones(len(h), device=h.device) if with_self else None


class Representation(Method):
    def scorer(self, model, param_filter, compute_dtype, training_batches, test_gradients):
        return RepresentationScorer(model, compute_dtype=compute_dtype)


METHOD = Representation(
    "representation",
    "cosine of the <s> hidden states: a gradient-free baseline",
    chunks="representation",
    self_scores=False,
)
