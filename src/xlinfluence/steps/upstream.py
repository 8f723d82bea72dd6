"""Reading upstream runs' artifacts, shared by the steps."""

from __future__ import annotations

import pandas as pd
import torch

from xlinfluence import artifacts, tracking


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
