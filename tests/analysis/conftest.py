"""Fixtures over the hand-built case in ``cases.py``."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from xlinfluence.analysis.topk import topk_table

from .cases import OPPONENTS, PROPONENTS, K, make_scores, make_test, make_train


@pytest.fixture
def train() -> pd.DataFrame:
    return make_train()


@pytest.fixture
def test_frame() -> pd.DataFrame:
    return make_test()


@pytest.fixture
def scores_by_name() -> dict[str, torch.Tensor]:
    return {name: make_scores(pro, OPPONENTS) for name, pro in PROPONENTS.items()}


@pytest.fixture
def table(scores_by_name, train, test_frame) -> pd.DataFrame:
    return topk_table(scores_by_name, train, test_frame, K)
