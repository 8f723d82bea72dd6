"""CheckpointScorer: block scoring and self-influence against the per-example reference."""

from __future__ import annotations

import copy

import pytest
import torch
from tracin_fixtures import N_TEST, N_TRAIN, rel_err

from xlinfluence.tracin import reference_scores
from xlinfluence.tracin.engine import CheckpointScorer, row_blocks

TOL = 1e-5


@pytest.fixture(scope="module")
def reference_self(model, train_batches):
    """||grad L(z)||^2 = the diagonal of the reference train x train matrix."""
    gram = reference_scores(
        copy.deepcopy(model).double(), train_batches, train_batches,
        n_train=N_TRAIN, n_test=N_TRAIN,
    )  # fmt: skip
    return gram.diagonal()


@pytest.mark.parametrize("linear_mode", ["per_example", "ghost", "auto"])
def test_self_influence_matches_reference_diagonal(
    model, train_batches, test_batches, reference_self, linear_mode
):
    own = torch.zeros(N_TRAIN, dtype=torch.float64)
    with CheckpointScorer(model, linear_mode=linear_mode) as scorer:
        test = scorer.test_cache(test_batches)
        for block in row_blocks(train_batches, rows=10):  # blocks of 2 batches
            _, self_scores = scorer.train_block(block, test, with_self=True)
            own[torch.cat([batch["index"] for batch in block])] = self_scores.double()
    assert rel_err(own, reference_self) < TOL
    assert (own > 0).all()


def test_test_side_self_influence_and_blocks(model, train_batches, test_batches):
    reference = reference_scores(
        copy.deepcopy(model).double(), train_batches, test_batches,
        n_train=N_TRAIN, n_test=N_TEST,
    )  # fmt: skip
    test_gram = reference_scores(
        copy.deepcopy(model).double(), test_batches, test_batches,
        n_train=N_TEST, n_test=N_TEST,
    )  # fmt: skip
    scores = torch.zeros(N_TEST, N_TRAIN, dtype=torch.float64)
    with CheckpointScorer(model) as scorer:
        test = scorer.test_cache(test_batches, with_self=True)
        for batch in train_batches:
            block, self_scores = scorer.train_block([batch], test)
            assert self_scores is None
            scores[test.index.unsqueeze(1), batch["index"].unsqueeze(0)] = block.T.double()
    own = torch.zeros(N_TEST, dtype=torch.float64)
    own[test.index] = test.self_scores.double()
    assert rel_err(scores, reference) < TOL
    assert rel_err(own, test_gram.diagonal()) < TOL


def test_hooks_are_removed_when_the_scorer_closes(model, test_batches):
    with CheckpointScorer(model) as scorer:
        scorer.test_cache(test_batches)
    assert all(not m._forward_hooks for m in model.modules())
