"""Reading upstream runs' artifacts, shared by the steps: a finished train run as one object
that downloads each artifact once (downloads are cached), and the frames and scores the
analysis and experiments read by run ID."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from xlinfluence import artifacts, tracking
from xlinfluence.config import TrainConfig


@dataclass(frozen=True)
class TrainRun:
    """A finished train run: its parameters as a config, its final metrics, its (train,
    test) manifests in tensor order and its checkpoint index; checkpoints, labels and RNG
    states on demand."""

    run_id: str
    config: TrainConfig
    metrics: dict[str, float]
    train: pd.DataFrame
    test: pd.DataFrame
    checkpoints: list[dict]

    @classmethod
    def fetch(cls, run_id: str) -> TrainRun:
        """Refused unless `run_id` is a FINISHED train run (tracking.fetch_run)."""
        run = tracking.fetch_run(run_id, step=TrainConfig.step)
        train, test = train_manifests(run_id)
        index = artifacts.load_checkpoint_index(
            tracking.download(run_id, artifacts.CHECKPOINT_INDEX)
        )
        config = TrainConfig.from_params(tracking.run_params(run))
        return cls(run_id, config, dict(run.data.metrics), train, test, index)

    def checkpoint(self, name: str) -> Path:
        """The folder of checkpoint `name` (e.g. epoch-3)."""
        return tracking.download(self.run_id, f"{artifacts.CHECKPOINTS}/{name}")

    def labels(self) -> list[str]:
        return artifacts.read_json(tracking.download(self.run_id, artifacts.LABELS))

    def rng_states(self, name: str) -> list[torch.Tensor]:
        """The CPU RNG state before each step of the epoch that ended at checkpoint `name`."""
        return artifacts.load_rng_states(tracking.download(self.run_id, artifacts.rng_states(name)))


def train_manifests(train_run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) example frames of a train run, in tensor order."""
    train = artifacts.load_manifest(tracking.download(train_run_id, artifacts.TRAIN_MANIFEST))
    test = artifacts.load_manifest(tracking.download(train_run_id, artifacts.TEST_MANIFEST))
    return train, test


def summed_scores(influence_run_id: str) -> tuple[torch.Tensor, pd.DataFrame, pd.DataFrame]:
    """An influence run's lr-weighted summed scores (n_test, n_train) with the (train, test)
    frames of the train run it scored."""
    manifest = artifacts.read_json(
        tracking.download(influence_run_id, artifacts.INFLUENCE_MANIFEST)
    )
    train, test = train_manifests(manifest["train_run_id"])
    scores = artifacts.load_scores(
        tracking.download(influence_run_id, artifacts.SCORES), n_test=len(test), n_train=len(train)
    )
    return scores[artifacts.TOTAL], train, test
