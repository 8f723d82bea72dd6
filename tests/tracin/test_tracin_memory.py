"""Test chunks sized to the device: bytes per cached test example, and the chunk size."""

from __future__ import annotations

import pytest
import torch
from tracin_fixtures import tiny_model

from xlinfluence.tracin import memory
from xlinfluence.tracin.selection import parameter_filter


def test_cache_bytes_count_every_tracked_linear_and_layernorm():
    model = tiny_model()  # hidden 32, intermediate 64, 2 layers, 3 labels
    per_layer = 4 * (32 * 32 + 32) + 2 * (32 * 64) + 64 + 32 + 2 * (2 * 32)
    head = (32 * 32 + 32) + (32 * 3 + 3)
    embeddings_ln = 2 * 32
    assert memory.test_cache_bytes(model) == 4 * (2 * per_layer + head + embeddings_ln)
    only_head = memory.test_cache_bytes(model, parameter_filter("classifier", model))
    assert only_head == 4 * head


def test_chunk_fits_the_budget(monkeypatch):
    model = tiny_model()
    per_example = memory.test_cache_bytes(model)
    monkeypatch.setattr(
        memory, "device_memory", lambda device: int(10 * per_example / memory.CACHE_SHARE) + 1
    )
    assert memory.auto_test_chunk(model, None, torch.device("cpu"), 125) == 10
    assert memory.auto_test_chunk(model, None, torch.device("cpu"), 4) == 4
    monkeypatch.setattr(memory, "device_memory", lambda device: 1)
    assert memory.auto_test_chunk(model, None, torch.device("cpu"), 125) == 1  # never zero


def test_this_machine_reports_its_memory():
    assert memory.device_memory(torch.device("cpu")) > 2**30


@pytest.mark.parametrize("hidden,ff,layers,mb", [(384, 1536, 12, 86), (768, 3072, 12, 343)])
def test_pretrained_sizes_match_the_docstring(hidden, ff, layers, mb):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(hidden_size=hidden, intermediate_size=ff, num_hidden_layers=layers,
                        num_attention_heads=12, vocab_size=1000, num_labels=7)  # fmt: skip
    with torch.device("meta"):
        model = BertForSequenceClassification(config)
    assert round(memory.test_cache_bytes(model) / 1e6) == pytest.approx(mb, abs=1)


def _cached_bytes(cache: dict) -> int:
    """Bytes of every tensor a test cache holds (nested dicts and lists included)."""
    if isinstance(cache, torch.Tensor):
        return cache.numel() * cache.element_size() if cache.is_floating_point() else 0
    if isinstance(cache, dict):
        return sum(_cached_bytes(v) for v in cache.values())
    if isinstance(cache, list):
        return sum(_cached_bytes(v) for v in cache)
    return 0


@pytest.mark.parametrize("test_gradients", ["keep", "reform"])
@pytest.mark.parametrize("test_repeat,train_repeat", [(1, 1), (1, 4), (4, 4), ("mixed", 4)])
def test_length_aware_bound_holds_for_the_cache_the_engine_keeps(
    test_repeat, train_repeat, test_gradients
):
    """After every train batch has been scored (so lazily formed test gradients exist), the
    test cache (and, re-forming, the shared buffer the gradients are formed into) holds at
    most test_cache_bytes(longest test, longest train) per example, and at most the sum of
    each example's own bound (what auto_test_chunk plans with)."""
    from tracin_fixtures import batches, make_examples

    from xlinfluence.tracin.engine import CheckpointScorer

    model = tiny_model()
    test = make_examples(6, seed=1)
    repeats = [1, 4, 1, 2, 4, 1] if test_repeat == "mixed" else [test_repeat] * len(test)
    test = [dict(e, input_ids=e["input_ids"] * k) for e, k in zip(test, repeats, strict=True)]
    train = [dict(e, input_ids=e["input_ids"] * train_repeat) for e in make_examples(8, seed=2)]
    with CheckpointScorer(model, test_gradients=test_gradients) as scorer:
        cached = scorer.test_cache(batches(test, 3))
        for batch in batches(train, 4, bucket=True):
            scorer.train_block([batch], cached)
    held = _cached_bytes(cached.cache)
    buffer = scorer.kernels[0].test_workspace._buffer
    if test_gradients == "reform":
        assert all(k.test_workspace is scorer.kernels[0].test_workspace
                   for k in scorer.kernels if hasattr(k, "test_workspace"))  # fmt: skip
        held += _cached_bytes(buffer) if buffer is not None else 0
    else:
        assert buffer is None
    longest = lambda es: max(len(e["input_ids"]) for e in es)  # noqa: E731
    bound = memory.test_cache_bytes(
        model, test_length=longest(test), train_length=longest(train), n_test=len(test),
        test_gradients=test_gradients,
    )  # fmt: skip
    assert held <= len(test) * bound
    own = sum(
        memory.example_cache_bytes(
            model,
            None,
            len(e["input_ids"]),
            longest=longest(test),
            train_length=longest(train),
            test_gradients=test_gradients,
        )  # fmt: skip
        for e in test
    )
    assert held <= own


def test_reforming_holds_the_factors_or_the_gradients_never_both():
    """Below every Linear's crossover (16 for 32x32, 21 for 32x64; 2.9 for the 3-label
    classifier) a kept example holds its factors and, for the longest train batches, its
    formed gradients; a re-formed one its factors and one row of the widest Linear."""
    model = tiny_model()  # Linear weights per layer 4 x 32x32, 32x64, 64x32; head 32x32, 32x3
    t = 10
    keep = memory.test_cache_bytes(model, test_length=t, train_length=t, n_test=1)
    reform = memory.test_cache_bytes(model, test_length=t, train_length=t, n_test=1,
                                     test_gradients="reform")  # fmt: skip
    # kept: factors and formed gradients of every Linear but the classifier (t >= 2.9:
    # formed only, in both); re-formed: the factors and one row of the widest (32 x 64)
    formed = 2 * (4 * 32 * 32 + 2 * 32 * 64) + 32 * 32
    assert keep - reform == 4 * (formed - 32 * 64)
    long = dict(test_length=40, train_length=40, n_test=1)
    assert memory.test_cache_bytes(model, **long, test_gradients="reform") == (
        memory.test_cache_bytes(model, **long) + 4 * 32 * 64
    )  # past every crossover both hold the gradients


def test_chunks_sized_by_each_length_fit_and_are_the_largest_that_do(monkeypatch):
    model = tiny_model()
    monkeypatch.setattr(memory, "HOST_CACHE_MAX", 40 * memory.test_cache_bytes(model))
    lengths = [6] * 50 + [90] * 10 + [6] * 65  # the long ones together, as manifests do
    cpu = torch.device("cpu")
    chunk = memory.auto_test_chunk(model, None, cpu, 125, test_lengths=lengths, train_length=90)
    blind = memory.auto_test_chunk(model, None, cpu, 125, test_lengths=[90] * 125, train_length=90)
    assert chunk > blind

    def size(n: int) -> int:
        return memory.example_cache_bytes(model, None, n, longest=90, train_length=90)

    def fits(c: int) -> bool:
        budget = memory.cache_budget(cpu)
        return all(sum(size(n) for n in lengths[s : s + c]) <= budget for s in range(0, 125, c))

    assert fits(chunk) and not fits(chunk + 1)


def test_the_cpu_cache_is_capped(monkeypatch):
    model = tiny_model()
    monkeypatch.setattr(memory, "device_memory", lambda device: 2**50)
    per_example = memory.test_cache_bytes(model)
    assert memory.auto_test_chunk(model, None, torch.device("cpu"), 10**9) == (
        memory.HOST_CACHE_MAX // per_example
    )
    assert memory.cache_budget(torch.device("cuda")) == int(memory.CACHE_SHARE * 2**50)


def test_the_plan_reforms_only_where_that_needs_fewer_chunks(monkeypatch):
    model = tiny_model()
    cpu = torch.device("cpu")
    lengths = [10] * 20

    def plan(**kw):
        kw = {"test_lengths": lengths, "train_length": 10, **kw}
        return memory.plan_test_side(model, None, cpu, len(lengths), **kw)

    def per_example(way):
        return memory.example_cache_bytes(model, None, 10, longest=10, train_length=10,
                                          test_gradients=way)  # fmt: skip

    keep, reform = per_example("keep"), per_example("reform")
    assert 20 * reform < 10 * keep  # kept, 20 need at least two chunks
    monkeypatch.setattr(memory, "HOST_CACHE_MAX", 20 * reform)  # reform: one chunk of all 20
    assert plan() == (20, "reform")
    assert plan(test_gradients="keep") == (20 * reform // keep, "keep")
    assert plan(test_chunk_size=10) == (10, "keep")  # a given chunk is sized to the memory
    assert plan(test_chunk_size=50, test_gradients="reform") == (20, "reform")
    assert plan(test_lengths=None) == (memory.auto_test_chunk(model, None, cpu, 20), "keep")
    monkeypatch.setattr(memory, "HOST_CACHE_MAX", 20 * keep)  # everything fits as kept
    assert plan() == (20, "keep")
    monkeypatch.setattr(memory, "HOST_CACHE_MAX", 1)  # one per chunk either way: a tie
    assert plan() == (1, "keep")
