"""Metagradients: the exact derivative of each test example's loss with respect to each
training row's weight, through the whole AdamW fine-tuning (training/metagradient.py),
replayed from the train run and checked to land on its last checkpoint (steps/replay.py).
A score is minus that derivative, so positive means the row helps, as for TracIn."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xlinfluence.attribution.method import ReplayMethod
from xlinfluence.errors import ConfigError


@dataclass(frozen=True)
class Metagradient(ReplayMethod):
    def check(self, config, num_processes: int) -> None:
        """It differentiates every parameter in fp32 on one process."""
        super().check(config, num_processes)
        wrong = [
            f"{name}={value!r} (use {fix})"
            for name, value, ok, fix in (
                ("params", config.params, config.params == "all", "'all'"),
                ("precision", config.precision, config.precision == "fp32", "'fp32'"),
                ("num_processes", num_processes, num_processes == 1, "1"),
            )
            if not ok
        ]
        if wrong:
            raise ConfigError(
                f"method={self.name} replays the whole fine-tuning over every parameter in "
                f"fp32 on one process; this run has {', '.join(wrong)}."
            )

    def row_scores(self, replay, row: int) -> torch.Tensor:
        return -replay.test_loss_gradient([row])


METHOD = Metagradient(
    "metagradient",
    "exact data-weight gradients of each test loss through the whole fine-tuning, replayed: "
    "about 3 trainings per test example",
    chunks="metagradient",
    self_scores=False,
)
