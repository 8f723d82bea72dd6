"""BERT-shaped encoders (multilingual-e5-small is one) against the per-example reference.

BERT differs from XLM-R where TracIn can go wrong: position embeddings looked up once and
broadcast over the batch, a pooler Linear before the classifier, and token-type
embeddings read from a buffer. Every parameter group must still match the reference.
"""

from __future__ import annotations

import copy

import pytest
import torch
from tracin_fixtures import N_TEST, N_TRAIN, rel_err
from transformers import BertConfig, BertForSequenceClassification

from xlinfluence.tracin import checkpoint_scores, reference_scores
from xlinfluence.tracin.selection import parameter_filter

TOL = 1e-5


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=80, type_vocab_size=2, num_labels=3,
        pad_token_id=1,
    )  # fmt: skip
    return BertForSequenceClassification(config)


GROUPS = {
    "all": None,
    "position_embeddings": lambda n: "position_embeddings" in n,
    "token_type_embeddings": lambda n: "token_type_embeddings" in n,
    "pooler": lambda n: "pooler" in n,
}


@pytest.mark.parametrize("mode", ["per_example", "ghost"])
@pytest.mark.parametrize("group", list(GROUPS))
def test_bert_matches_reference(bert, train_batches, test_batches, group, mode):
    expected = reference_scores(
        copy.deepcopy(bert).double(), train_batches, test_batches,
        n_train=N_TRAIN, n_test=N_TEST, param_filter=GROUPS[group],
    )  # fmt: skip
    scores = checkpoint_scores(
        bert, train_batches, test_batches, n_train=N_TRAIN, n_test=N_TEST,
        param_filter=GROUPS[group], linear_mode=mode,
    )  # fmt: skip
    assert expected.abs().max() > 0
    assert rel_err(scores, expected) <= TOL


def test_last_layer_includes_pooler(bert):
    keep = parameter_filter("last-layer", bert)
    names = [n for n, _ in bert.named_parameters() if keep(n)]
    assert "bert.pooler.dense.weight" in names and "classifier.weight" in names
    assert all(".layer.0." not in n for n in names)
