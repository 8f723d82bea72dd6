"""The exact engine against the plain per-example reference (Pruthi et al. 2020 TracIn)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn
from tracin_fixtures import N_TEST, N_TRAIN, batches, make_examples, rel_err, tiny_model

from xlinfluence.errors import ConfigError, DataError
from xlinfluence.tracin import checkpoint_scores, reference_scores
from xlinfluence.tracin.engine import CheckpointScorer, row_blocks, summed_loss
from xlinfluence.tracin.hooks import TrackedModule
from xlinfluence.tracin.linear import LinearKernel, Workspace

TOL = 1e-5  # fp32 engine vs float64 reference, max|a-b| / max|b|

_LINEAR = {
    f"{m_name}.{p_name}"
    for m_name, m in tiny_model().named_modules()
    if isinstance(m, nn.Linear)
    for p_name, _ in m.named_parameters(recurse=False)
}

GROUPS = {
    "all": None,
    "embeddings": lambda n: n.endswith("_embeddings.weight"),
    "position_embeddings": lambda n: "position_embeddings" in n,
    "linear": lambda n: n in _LINEAR,
    "layernorm": lambda n: "LayerNorm" in n,
    "classifier": lambda n: n.startswith("classifier."),
    "biases": lambda n: n.endswith(".bias"),
    "query_weight": lambda n: n.endswith("attention.self.query.weight"),
    "last_layer": lambda n: ".layer.1." in n or n.startswith("classifier."),
}


@pytest.fixture(scope="module")
def reference(model, train_batches, test_batches):
    """float64 ground truth per parameter group, computed once each."""

    @functools.cache
    def compute(group: str) -> torch.Tensor:
        return reference_scores(
            copy.deepcopy(model).double(),
            train_batches,
            test_batches,
            n_train=N_TRAIN,
            n_test=N_TEST,
            param_filter=GROUPS[group],
        )

    return compute


@pytest.mark.parametrize("mode", ["per_example", "ghost", "auto"])
@pytest.mark.parametrize("group", list(GROUPS))
def test_matches_reference(model, train_batches, test_batches, reference, group, mode):
    scores = checkpoint_scores(
        model,
        train_batches,
        test_batches,
        n_train=N_TRAIN,
        n_test=N_TEST,
        param_filter=GROUPS[group],
        linear_mode=mode,
    )
    assert scores.shape == (N_TEST, N_TRAIN) and scores.dtype == torch.float32
    expected = reference(group)
    assert expected.abs().max() > 0
    assert rel_err(scores, expected) <= TOL


@pytest.mark.parametrize("mode", ["per_example", "ghost"])
def test_float64_model_is_exact(model, train_batches, test_batches, reference, mode):
    scores = checkpoint_scores(
        copy.deepcopy(model).double(),
        train_batches,
        test_batches,
        n_train=N_TRAIN,
        n_test=N_TEST,
        linear_mode=mode,
    )
    assert scores.dtype == torch.float64
    assert rel_err(scores, reference("all")) <= 1e-10


@pytest.mark.parametrize("group", ["all", "embeddings"])
def test_cosine_matches_the_reference_divided_by_its_gradient_norms(
    model, train_batches, test_batches, group
):
    double = copy.deepcopy(model).double()
    keep = GROUPS[group]

    def gram(rows, cols, n_rows, n_cols):
        return reference_scores(
            double, cols, rows, n_train=n_cols, n_test=n_rows, param_filter=keep
        )

    dot = gram(test_batches, train_batches, N_TEST, N_TRAIN)
    test_norm = gram(test_batches, test_batches, N_TEST, N_TEST).diagonal().sqrt()
    train_norm = gram(train_batches, train_batches, N_TRAIN, N_TRAIN).diagonal().sqrt()
    expected = dot / (test_norm[:, None] * train_norm[None, :])
    for chunk in (None, 3):
        scores = checkpoint_scores(
            model, train_batches, test_batches, n_train=N_TRAIN, n_test=N_TEST,
            param_filter=keep, test_chunk_size=chunk, cosine=True,
        )  # fmt: skip
        assert rel_err(scores, expected) <= TOL
        assert scores.abs().max() <= 1 + 1e-5


@pytest.mark.parametrize(
    "mode,test_gradients",
    [("per_example", "keep"), ("ghost", "keep"), ("auto", "keep"), ("auto", "reform")],
)
@pytest.mark.parametrize("rows", [1, 10, 24])
def test_contraction_blocks_give_the_reference_scores(
    model, train_batches, test_batches, reference, mode, rows, test_gradients, monkeypatch
):
    """One batch per block, blocks of two batches of different lengths, the whole train set
    in one block, with the test gradients kept or formed again per block ("auto" is the
    mode where that differs: per_example forms every group at build, ghost none): each
    against the float64 reference."""
    reformed = []
    formed = LinearKernel._formed

    def counting(kernel, cache, first):
        segments = formed(kernel, cache, first)
        reformed.extend(seg for seg in segments if seg not in cache["formed"])
        return segments

    monkeypatch.setattr(LinearKernel, "_formed", counting)
    assert len({b["input_ids"].shape[1] for b in train_batches}) > 1  # blocks mix lengths
    scores = checkpoint_scores(
        model, train_batches, test_batches, n_train=N_TRAIN, n_test=N_TEST,
        linear_mode=mode, contraction_rows=rows, test_gradients=test_gradients,
    )  # fmt: skip
    assert rel_err(scores, reference("all")) <= TOL
    assert bool(reformed) == (test_gradients == "reform")  # the path under test ran


def test_row_blocks_group_whole_batches_in_order(train_batches):
    assert [len(b["labels"]) for b in train_batches] == [5, 5, 5, 5, 4]
    blocks = list(row_blocks(train_batches, rows=10))
    assert [len(block) for block in blocks] == [2, 2, 1]
    assert [b for block in blocks for b in block] == list(train_batches)
    # never over 9 rows: 5 + 5 is a block of one batch each, 5 + 4 fits
    assert [len(block) for block in row_blocks(train_batches, rows=9)] == [1, 1, 1, 2]
    assert [len(block) for block in row_blocks(train_batches, rows=1)] == [1] * 5
    assert [len(block) for block in row_blocks(train_batches, rows=24)] == [5]


def test_a_block_mixing_ghost_and_per_example_batches_is_exact(monkeypatch):
    """One Linear (d_in = d_out = 16) against 16 test examples of T' = 2. Per train example,
    ghost costs T * 32 * 32 and forming 16 * 256 + T * 256: a batch of T = 3 takes ghost
    (3072 < 4864), one of T = 6 forms its gradients (5632 < 6144), in the same block;
    scores and self-scores against per-example gradients formed here."""
    torch.manual_seed(3)
    linear = nn.Linear(16, 16).double()
    kernel = LinearKernel(TrackedModule("fc", linear, True, True), torch.float64)
    test_a, test_g = torch.randn(16, 2, 16, dtype=torch.float64), torch.randn(16, 2, 16).double()
    cache = kernel.build_cache([kernel.test_piece(test_a, test_g)])
    batches = [
        (torch.randn(3, T, 16, dtype=torch.float64), torch.randn(3, T, 16, dtype=torch.float64))
        for T in (3, 6)
    ]
    paths = []
    ghost, form = LinearKernel._ghost, LinearKernel._train_grads

    def ghost_spy(*args):
        paths.append("ghost")
        return ghost(*args)

    def form_spy(self, block):
        paths.append("per_example")
        return form(self, block)

    monkeypatch.setattr(LinearKernel, "_ghost", staticmethod(ghost_spy))
    monkeypatch.setattr(LinearKernel, "_train_grads", form_spy)
    scores, own = kernel.train_scores(batches, cache, with_self=True)

    train = torch.cat([linear_grads(a, g) for a, g in batches])
    test = linear_grads(test_a, test_g)
    assert set(paths) == {"ghost", "per_example"}
    assert rel_err(scores, train @ test.T) <= 1e-12
    assert rel_err(own, (train * train).sum(1)) <= 1e-12


def linear_grads(a, g):
    """(B, d_out * d_in + d_out) per-example weight and bias gradients of a Linear."""
    return torch.cat([torch.einsum("bto,bti->boi", g, a).flatten(1), g.sum(1)], 1)


def test_formed_test_gradients_grow_as_longer_train_batches_come():
    """One Linear (threshold 8) against test groups of live lengths 1, 2, 4 and 7 (and an
    example with no gradient). Train blocks of T = 3, then 5 and 1, then 9 need the formed
    gradients of groups 2-3 (one shared matrix, one product), then group 1, then group 0
    (each a segment of its own); every block against per-example gradients formed here."""
    torch.manual_seed(4)
    linear = nn.Linear(16, 16).double()
    kernel = LinearKernel(TrackedModule("fc", linear, True, True), torch.float64)
    lengths = [7, 1, 4, 2, 0, 2, 7, 1, 4]
    test_a = torch.randn(len(lengths), 7, 16, dtype=torch.float64)
    test_g = torch.randn(len(lengths), 7, 16, dtype=torch.float64)
    for row, live in enumerate(lengths):
        test_g[row, live:] = 0
    cache = kernel.build_cache([kernel.test_piece(test_a[:4], test_g[:4]),
                                kernel.test_piece(test_a[4:], test_g[4:])])  # fmt: skip
    assert [g["t"] for g in cache["groups"]] == [1, 2, 4, 7] and cache["formed"] == []

    test = linear_grads(test_a, test_g)
    for block, segments in [((3,), [(2, 4)]), ((5, 1), [(1, 2), (2, 4)]),
                            ((9,), [(0, 1), (1, 2), (2, 4)])]:  # fmt: skip
        batches = [(torch.randn(2, T, 16).double(), torch.randn(2, T, 16).double()) for T in block]
        scores, own = kernel.train_scores(batches, cache, with_self=True)
        train = torch.cat([linear_grads(a, g) for a, g in batches])
        assert rel_err(scores, train @ test.T) <= 1e-12, block
        assert rel_err(own, (train * train).sum(1)) <= 1e-12, block
        assert [(seg["from"], seg["to"]) for seg in cache["formed"]] == segments
    assert [len(seg["grads"]) for seg in cache["formed"]] == [2, 2, 4]  # nothing twice


def test_reformed_test_gradients_are_exact_and_never_kept():
    """test_gradients="reform": the same groups and blocks as above, now a 7- and 9-token
    group (threshold 8: ghost never serves it, so it is formed at build, tokens dropped)
    among them. Nothing else is kept formed; every block forms the rest of its suffix into
    the one shared test workspace, and the scores match per-example gradients formed here."""
    torch.manual_seed(5)
    linear = nn.Linear(16, 16).double()
    test_workspace = Workspace()
    kernel = LinearKernel(TrackedModule("fc", linear, True, True), torch.float64,
                          test_gradients="reform", test_workspace=test_workspace)  # fmt: skip
    lengths = [7, 1, 4, 2, 0, 2, 9, 1, 4]
    test_a = torch.randn(len(lengths), 9, 16, dtype=torch.float64)
    test_g = torch.randn(len(lengths), 9, 16, dtype=torch.float64)
    for row, live in enumerate(lengths):
        test_g[row, live:] = 0
    cache = kernel.build_cache([kernel.test_piece(test_a, test_g)])
    assert [g["t"] for g in cache["groups"]] == [1, 2, 4, 9] and cache["kept"] == 3
    assert [(seg["from"], seg["to"]) for seg in cache["formed"]] == [(3, 4)]
    tokens = cache["a"].shape[0]
    assert tokens == sum(lengths) - 7 - 9  # the group of the 7 and 9 tokens dropped them

    test = linear_grads(test_a, test_g)
    buffers = set()
    for block in [(9,), (3,), (5, 1), (3,)]:  # the longest first: it forms every group
        batches = [(torch.randn(2, T, 16).double(), torch.randn(2, T, 16).double()) for T in block]
        scores, own = kernel.train_scores(batches, cache, with_self=True)
        train = torch.cat([linear_grads(a, g) for a, g in batches])
        assert rel_err(scores, train @ test.T) <= 1e-12, block
        assert rel_err(own, (train * train).sum(1)) <= 1e-12, block
        assert [(seg["from"], seg["to"]) for seg in cache["formed"]] == [(3, 4)]
        buffers.add(test_workspace._buffer.data_ptr())
    assert len(buffers) == 1  # the later, shorter suffixes reuse the first block's buffer
    assert cache["a"].shape[0] == tokens


def test_the_split_counts_forming_the_train_gradients_once():
    """d_in = d_out = 16 (area 256, width 32), a train batch of T = 3 against one length
    group of 7-token test examples: past the per-pair crossover (3 * 7 > 8) either way. Two
    examples: ghost over their 14 tokens (3 * 14 * 32 = 1344) costs more than forming the
    batch's gradients and the two test rows ((3 + 2) * 256 = 1280), so it forms. One
    example: ghost (672) beats forming (1024)."""
    linear = nn.Linear(16, 16).double()
    kernel = LinearKernel(TrackedModule("fc", linear, True, True), torch.float64)
    for m, first in ((2, 0), (1, 1)):
        test_a, test_g = torch.randn(m, 7, 16).double(), torch.randn(m, 7, 16).double()
        cache = kernel.build_cache([kernel.test_piece(test_a, test_g)])
        assert [g["t"] for g in cache["groups"]] == [7]
        assert kernel._first_per_example(3, cache) == first, m


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_test_chunks_give_the_same_scores(model, train_batches, test_batches, chunk):
    whole = checkpoint_scores(model, train_batches, test_batches, n_train=N_TRAIN, n_test=N_TEST)
    chunked = checkpoint_scores(
        model, train_batches, test_batches, n_train=N_TRAIN, n_test=N_TEST, test_chunk_size=chunk
    )
    assert rel_err(chunked, whole) <= 1e-6


def test_batch_order_and_bucketing_do_not_matter(model, train_examples, test_examples):
    base = checkpoint_scores(
        model,
        batches(train_examples, 5, bucket=True),
        batches(test_examples, 4),
        n_train=N_TRAIN,
        n_test=N_TEST,
    )
    shuffled = checkpoint_scores(
        model,
        batches(train_examples, 7, seed=3)[::-1],
        batches(test_examples, 3, seed=4, bucket=True),
        n_train=N_TRAIN,
        n_test=N_TEST,
    )
    assert rel_err(shuffled, base) <= 1e-6


def test_extra_padding_changes_nothing(model, train_batches, test_batches):
    """Padding to a much longer length moves position ids of nothing real: same scores."""

    def pad_more(batch, extra=30):
        out = dict(batch)
        B = len(batch["labels"])
        out["input_ids"] = torch.cat([batch["input_ids"], torch.full((B, extra), 1)], 1)
        out["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(B, extra)], 1)
        out["attention_mask"] = out["attention_mask"].long()
        return out

    base = checkpoint_scores(model, train_batches, test_batches, n_train=N_TRAIN, n_test=N_TEST)
    padded = checkpoint_scores(
        model,
        [pad_more(b) for b in train_batches],
        [pad_more(b) for b in test_batches],
        n_train=N_TRAIN,
        n_test=N_TEST,
    )
    assert rel_err(padded, base) <= 1e-6


def test_loss_is_summed_over_the_batch(model, train_examples, test_batches):
    """A mean loss would scale each train example's gradient by 1/B."""
    singles = checkpoint_scores(
        model, batches(train_examples, 1), test_batches, n_train=N_TRAIN, n_test=N_TEST
    )
    big = checkpoint_scores(
        model, batches(train_examples, 12), test_batches, n_train=N_TRAIN, n_test=N_TEST
    )
    assert rel_err(big, singles) <= 1e-6

    batch = batches(train_examples, 6)[0]
    with torch.no_grad():
        total = summed_loss(model, batch, torch.device("cpu"))
        parts = sum(
            summed_loss(model, {k: v[i : i + 1] for k, v in batch.items()}, torch.device("cpu"))
            for i in range(6)
        )
    torch.testing.assert_close(total, parts)


def test_model_is_put_in_eval_mode(train_batches, test_batches, reference):
    """Dropout left on gave 26% error; the engine must switch it off itself."""
    model = tiny_model()
    model.train()
    scores = checkpoint_scores(model, train_batches, test_batches, n_train=N_TRAIN, n_test=N_TEST)
    assert not model.training
    assert rel_err(scores, reference("all")) <= TOL


def test_uncovered_rows_stay_zero_and_shards_sum(model, train_batches, test_batches):
    """Placement by `index`: two halves of the train set add up to the whole."""
    whole = checkpoint_scores(model, train_batches, test_batches, n_train=N_TRAIN, n_test=N_TEST)
    halves = [train_batches[::2], train_batches[1::2]]
    parts = [
        checkpoint_scores(model, h, test_batches, n_train=N_TRAIN, n_test=N_TEST) for h in halves
    ]
    covered = torch.cat([b["index"] for b in halves[0]])
    assert (parts[0][:, covered] != 0).all()
    assert (parts[1][:, covered] == 0).all()
    assert rel_err(parts[0] + parts[1], whole) <= 1e-6


def test_auto_mode_rule():
    kernel = LinearKernel.__new__(LinearKernel)
    kernel.mode, kernel.threshold = "auto", 768 * 768 / (768 + 768)  # 384
    assert kernel.use_ghost(1, 1) and kernel.use_ghost(16, 23)
    assert not kernel.use_ghost(16, 24) and not kernel.use_ghost(128, 128)


def test_progress_bar_runs(model, train_batches, test_batches):
    checkpoint_scores(
        model, train_batches, test_batches, n_train=N_TRAIN, n_test=N_TEST, progress=True
    )


def test_bad_arguments_raise(model, train_batches, test_batches):
    kw = {"n_train": N_TRAIN, "n_test": N_TEST}
    with pytest.raises(ConfigError, match="linear_mode"):
        checkpoint_scores(model, train_batches, test_batches, linear_mode="fast", **kw)
    with pytest.raises(ConfigError, match="selects no"):
        checkpoint_scores(model, train_batches, test_batches, param_filter=lambda n: False, **kw)
    with pytest.raises(ConfigError, match="one-shot iterator"):
        checkpoint_scores(model, iter(train_batches), test_batches, test_chunk_size=2, **kw)
    with pytest.raises(ConfigError, match="test_chunk_size"):
        checkpoint_scores(model, train_batches, test_batches, test_chunk_size=0, **kw)
    with pytest.raises(DataError, match="repeated"):
        checkpoint_scores(model, train_batches + train_batches[:1], test_batches, **kw)
    with pytest.raises(DataError, match="outside"):
        checkpoint_scores(model, train_batches, test_batches, n_train=3, n_test=N_TEST)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_reference(model, train_batches, test_batches, reference):
    scores = checkpoint_scores(
        copy.deepcopy(model).cuda(), train_batches, test_batches, n_train=N_TRAIN, n_test=N_TEST
    )
    assert rel_err(scores, reference("all")) <= TOL


def test_more_examples_with_long_sequences():
    """Longer sequences push auto onto the per-example path for the encoder layers."""
    model = tiny_model(seed=5)
    train, test = make_examples(9, seed=11), make_examples(5, seed=12)
    long_train = [dict(e, input_ids=e["input_ids"] * 3) for e in train]
    tb, sb = batches(long_train, 4), batches(test, 2)
    expected = reference_scores(copy.deepcopy(model).double(), tb, sb, n_train=9, n_test=5)
    for mode in ("auto", "ghost"):
        got = checkpoint_scores(model, tb, sb, n_train=9, n_test=5, linear_mode=mode)
        assert rel_err(got, expected) <= TOL


def test_pad_id_inside_text_gets_no_embedding_gradient():
    """nn.Embedding writes nothing into padding_idx; a real token with the pad id (and the
    pad position XLM-R then gives it) must contribute nothing through those rows."""
    model = tiny_model(seed=6)
    train, test = make_examples(8, seed=21), make_examples(4, seed=22)
    for e in train[::2] + test[::2]:
        e["input_ids"][1] = 1  # the pad id inside the text, attention mask 1
    tb, sb = batches(train, 3), batches(test, 2)
    for group in ("embeddings", "all"):
        expected = reference_scores(
            copy.deepcopy(model).double(), tb, sb, n_train=8, n_test=4, param_filter=GROUPS[group]
        )
        got = checkpoint_scores(model, tb, sb, n_train=8, n_test=4, param_filter=GROUPS[group])
        assert rel_err(got, expected) <= TOL


def test_auto_mixes_ghost_and_per_example_within_a_chunk(monkeypatch):
    """16 short test examples (T' = 3): short train batches take ghost for them, long ones
    form their gradients (hidden 32: forming wins from T > 8), and the scores stay exact."""
    model = tiny_model(seed=7)
    train = make_examples(12, seed=31)
    test = [dict(e, input_ids=e["input_ids"][:2] + [2]) for e in make_examples(16, seed=32)]
    tb, sb = batches(train, 3, bucket=True), batches(test, 16)
    splits = []  # (first group formed, groups) per train batch and Linear layer
    original = LinearKernel._first_per_example

    def spy(self, t_train, cache):
        splits.append((original(self, t_train, cache), len(cache["groups"])))
        return splits[-1][0]

    monkeypatch.setattr(LinearKernel, "_first_per_example", spy)
    got = checkpoint_scores(model, tb, sb, n_train=12, n_test=16)
    expected = reference_scores(copy.deepcopy(model).double(), tb, sb, n_train=12, n_test=16)
    assert rel_err(got, expected) <= TOL
    assert any(first > 0 for first, _ in splits) and any(first < n for first, n in splits)


def test_positions_without_gradient_are_dropped(model, test_batches):
    """In the last layer only <s> feeds the classifier: its query, attention output and
    feed-forward layers keep one position, key and value every position (exactness of the
    scores: the "last_layer" group of test_matches_reference)."""
    with CheckpointScorer(model, GROUPS["last_layer"]) as scorer:
        inputs, grads = scorer.captures(test_batches[0])
        lengths = {
            k.name.removeprefix("roberta.encoder.layer.1."): k.test_piece(
                inputs[k.name], grads[k.name]
            )["a"].shape[1]
            for k in scorer.kernels
            if isinstance(k, LinearKernel)
        }
    padded = test_batches[0]["input_ids"].shape[1]
    assert lengths["attention.self.key"] == lengths["attention.self.value"] == padded > 1
    for name in ("attention.self.query", "attention.output.dense", "intermediate.dense",
                 "output.dense", "classifier.dense", "classifier.out_proj"):  # fmt: skip
        assert lengths[name] == 1, name


def test_non_finite_gradients_are_not_dropped():
    """A NaN or inf output gradient must reach the scores, not vanish with the dead positions."""
    from xlinfluence.tracin.linear import _live_positions

    a = torch.ones(2, 4, 3)
    g = torch.zeros(2, 4, 5)
    g[0, 1, 0], g[1, 2, 4] = float("nan"), float("inf")
    kept_a, kept_g = _live_positions(a, g)
    assert kept_a.shape == (2, 2, 3)
    assert kept_g[0, 0, 0].isnan() and kept_g[1, 1, 4].isinf()
