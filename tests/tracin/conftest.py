"""Session fixtures for the TracIn tests (helpers live in tracin_fixtures.py)."""

from __future__ import annotations

import pytest
from tracin_fixtures import N_TEST, N_TRAIN, batches, make_examples, tiny_model


@pytest.fixture(scope="session")
def model():
    return tiny_model()


@pytest.fixture(scope="session")
def train_examples():
    return make_examples(N_TRAIN, seed=1)


@pytest.fixture(scope="session")
def test_examples():
    return make_examples(N_TEST, seed=2)


@pytest.fixture(scope="session")
def train_batches(train_examples):
    return batches(train_examples, 5, bucket=True)


@pytest.fixture(scope="session")
def test_batches(test_examples):
    return batches(test_examples, 4)
