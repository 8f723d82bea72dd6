"""What an attribution method is to the influence step: one object per method that owns
its behaviour (what it needs, how it scores, what its chunks hold), so the step reads no
per-method flags.

A `Method` scores at checkpoints: `scorer(...)` builds, at one checkpoint, a context
manager with the test_cache / train_block interface of tracin.engine.CheckpointScorer, and
the step's chunked loop (attribution/scoring.py) chunks, resumes, shards and sums every
such method the same way. A `ReplayMethod` (metagradient) has no checkpoints: it scores
one test row at a time through the replayed fine-tuning the step hands it.

Adding a method is one module that defines its Method subclass and instance, and one line
in attribution/__init__.py's registry; the `method` parameter's choices and help come from
that registry (attribution/label_only.py is the small worked example).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from xlinfluence.errors import ConfigError
from xlinfluence.tracin.engine import Batch
from xlinfluence.tracin.hooks import ParamFilter

if TYPE_CHECKING:
    from xlinfluence.config import InfluenceConfig

#: () -> the training set's batches, length-bucketed: what a method that fits on the
#: training set (EK-FAC's curvature) reads before scoring; the others never call it.
TrainingBatches = Callable[[], Iterable[Batch]]


@dataclass(frozen=True)
class Method:
    """A method scored at checkpoints. `help` is its line in the `method` parameter's help;
    `chunks` names what its chunk files hold (methods with equal values may reuse each
    other's chunks on resume); `self_scores`: it can log <z, z> per training example."""

    name: str
    help: str
    chunks: str
    self_scores: bool = True
    replays = False

    def scorer(
        self,
        model: nn.Module,
        param_filter: ParamFilter | None,
        compute_dtype: torch.dtype | None,
        training_batches: TrainingBatches,
        test_gradients: str,
    ):
        """The scorer at one checkpoint (a context manager with test_cache / train_block)."""
        raise NotImplementedError

    def check(self, config: InfluenceConfig, num_processes: int) -> None:
        """Refuse settings this method cannot honour; by default, re-formed test gradients
        (TracIn's alone)."""
        if config.test_gradients == "reform":
            raise ConfigError(
                f"test_gradients=reform re-forms TracIn's per-example test gradients (method "
                f"dot or cosine); method={self.name} holds its own test side. Use "
                "test_gradients=auto or keep."
            )

    def test_gradient_way(self, asked: str) -> str:
        """How the test side is held, given test_gradients: TracIn plans it; the others keep
        their own test side."""
        return "keep"

    def wants_self(self, asked: bool) -> bool:
        """Whether a run logs self-scores: when asked (self_influence=true) and it has them."""
        return self.self_scores and asked

    def normalise(
        self, block: torch.Tensor, test_self: torch.Tensor, train_self: torch.Tensor
    ) -> torch.Tensor:
        """A checkpoint's (test, train) block as the method reports it (cosine divides by
        the self-scores' square roots); as scored by default."""
        return block


@dataclass(frozen=True)
class ReplayMethod(Method):
    """A method that differentiates through the whole fine-tuning instead of scoring at
    checkpoints; the step rebuilds the run (steps/replay.py) and asks for one test row's
    scores at a time."""

    replays = True

    def scorer(self, *args, **kwargs):
        raise TypeError(f"method {self.name} replays the fine-tuning; it has no scorer")

    def row_scores(self, replay, row: int) -> torch.Tensor:
        """(n_train,) the scores of test row `row` through `replay`."""
        raise NotImplementedError
