"""TracIn (Pruthi et al. 2020) as attribution methods: `dot`, the paper's lr-weighted sum of
gradient inner products over checkpoints, and `cosine`, the same with each gradient
normalised to unit length per checkpoint. The exact per-layer engine is tracin/."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xlinfluence.attribution.method import Method
from xlinfluence.tracin.engine import CheckpointScorer, cosine_normalized

GRADIENT_PRODUCTS = "gradient inner products"


@dataclass(frozen=True)
class TracIn(Method):
    def scorer(self, model, param_filter, compute_dtype, training_batches, test_gradients):
        return CheckpointScorer(
            model, param_filter, compute_dtype=compute_dtype, test_gradients=test_gradients
        )

    def check(self, config, num_processes: int) -> None:
        """Every test_gradients way is TracIn's."""

    def test_gradient_way(self, asked: str) -> str:
        return asked


@dataclass(frozen=True)
class CosineTracIn(TracIn):
    """Cosine needs both self-scores at every checkpoint, asked for or not."""

    def wants_self(self, asked: bool) -> bool:
        return True

    def normalise(
        self, block: torch.Tensor, test_self: torch.Tensor, train_self: torch.Tensor
    ) -> torch.Tensor:
        return cosine_normalized(block, test_self, train_self)


DOT = TracIn(
    "dot",
    "TracIn as in the paper: the default; no other method predicted retraining better on "
    "both settings of docs/findings.md section 1",
    chunks=GRADIENT_PRODUCTS,
)
COSINE = CosineTracIn(
    "cosine",
    "TracIn with each gradient normalised to unit length per checkpoint",
    chunks=GRADIENT_PRODUCTS,
)
