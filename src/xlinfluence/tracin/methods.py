"""The attribution methods the influence step computes, keyed by the `method` parameter.

Each entry says how to build the method's scorer at one checkpoint (the test_cache /
train_block interface of engine.CheckpointScorer, so the step chunks, resumes, shards and
sums every method the same way), whether its scores are normalised by the self-scores
(cosine), whether it has self-scores at all, and what its chunks hold (chunks of methods
with the same `chunks` value may be reused for each other on resume). Adding a method is
its scorer, one entry here and its line in docs/analysis.md.

A method that `replays` the fine-tuning (metagradient) has no per-checkpoint scorer: the
step rebuilds the whole run (steps/replay.py) and scores one test row per chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from xlinfluence.tracin.ekfac import EKFACScorer
from xlinfluence.tracin.engine import Batch, CheckpointScorer
from xlinfluence.tracin.hooks import ParamFilter
from xlinfluence.tracin.label_only import LabelOnlyScorer
from xlinfluence.tracin.representation import RepresentationScorer

#: (model, param_filter, compute dtype, training batches, test_gradients) -> a scorer context
#: manager; test_gradients ("keep" or "reform", tracin.linear) matters to TracIn's only
ScorerFactory = Callable[
    [nn.Module, ParamFilter | None, torch.dtype | None, Iterable[Batch], str], object
]


@dataclass(frozen=True)
class Method:
    name: str
    scorer: ScorerFactory | None  # None: the method replays the fine-tuning instead
    chunks: str  # what a chunk file holds; equal values may share chunks on resume
    normalised: bool = False  # divide each score by the square roots of both self-scores
    self_scores: bool = True  # it can log <z, z> per training example
    fits: bool = False  # it fits on the training batches before scoring (curvature)
    reforms: bool = False  # its Linear kernels can form test gradients again per block

    @property
    def replays(self) -> bool:
        """It differentiates through the whole fine-tuning, not at checkpoints."""
        return self.scorer is None


def _tracin(model, param_filter, compute_dtype, train_batches, test_gradients):
    return CheckpointScorer(
        model, param_filter, compute_dtype=compute_dtype, test_gradients=test_gradients
    )


def _representation(model, param_filter, compute_dtype, train_batches, test_gradients):
    return RepresentationScorer(model, compute_dtype=compute_dtype)


def _label_only(model, param_filter, compute_dtype, train_batches, test_gradients):
    return LabelOnlyScorer(model)


def _ekfac(model, param_filter, compute_dtype, train_batches, test_gradients):
    return EKFACScorer(model, param_filter, train_batches)


METHODS = {
    m.name: m
    for m in (
        Method("dot", _tracin, chunks="gradient inner products", reforms=True),
        Method(
            "cosine", _tracin, chunks="gradient inner products", normalised=True, reforms=True
        ),  # fmt: skip
        Method("representation", _representation, chunks="representation", self_scores=False),
        Method("ekfac", _ekfac, chunks="ekfac influence", fits=True),
        Method("metagradient", None, chunks="metagradient", self_scores=False),
        Method("label-only", _label_only, chunks="label-only", self_scores=False),
    )
}
