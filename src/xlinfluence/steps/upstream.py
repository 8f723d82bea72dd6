"""Reading upstream runs' artifacts, shared by the influence and analyze steps."""

from __future__ import annotations

import pandas as pd

from xlinfluence import artifacts, tracking


def train_manifests(train_run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) example frames of a train run, in tensor order."""
    train = artifacts.load_manifest(tracking.download(train_run_id, artifacts.TRAIN_MANIFEST))
    test = artifacts.load_manifest(tracking.download(train_run_id, artifacts.TEST_MANIFEST))
    return train, test
