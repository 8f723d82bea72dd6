"""EK-FAC influence against explicit computations on a float64 model small enough to form
its Gauss-Newton matrix: the Kronecker factors and corrected eigenvalues from loops over
examples, tokens and labels; the block inverse against a dense solve; the exact damped
influence two independent ways; and how close EK-FAC comes to it."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from xlinfluence.attribution import ekfac, exact_influence
from xlinfluence.errors import ConfigError

N_TRAIN, N_TEST, N_LABELS = 24, 6, 3


class SequenceClassifier(nn.Module):
    """Frozen embeddings, a token-wise Linear (sequence inputs, padding), mean pooling,
    a Linear head (one input per example): both cases EK-FAC meets in an encoder."""

    def __init__(self, vocab: int = 13, width: int = 4, hidden: int = 5):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.embed.weight.requires_grad_(False)
        self.inner = nn.Linear(width, hidden)
        self.head = nn.Linear(hidden, N_LABELS)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        hidden = torch.tanh(self.inner(self.embed(input_ids)))
        return self.head((hidden * mask).sum(1) / mask.sum(1))


def _batches(n: int, seed: int, batch_size: int = 5) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 6, (n,), generator=g)
    ids = torch.randint(0, 13, (n, 5), generator=g)
    mask = (torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)).long()
    labels = torch.randint(0, N_LABELS, (n,), generator=g)
    return [
        {"input_ids": ids[s : s + batch_size], "attention_mask": mask[s : s + batch_size],
         "labels": labels[s : s + batch_size], "index": torch.arange(s, min(n, s + batch_size))}
        for s in range(0, n, batch_size)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = SequenceClassifier().double()
    train, test = _batches(N_TRAIN, 1), _batches(N_TEST, 2)
    return model, train, test, ekfac.fit_factors(model, train, fisher="expected")


def _layer_gradient(flat: torch.Tensor, model: SequenceClassifier, layer: str) -> torch.Tensor:
    """(n, d_out, d_in + 1) [weight | bias] of one layer out of flat per-example gradients."""
    params = exact_influence.selected(model)
    offsets, start = {}, 0
    for name, p in params.items():
        offsets[name] = (start, p.shape)
        start += p.numel()
    parts = []
    for suffix in ("weight", "bias"):
        begin, shape = offsets[f"{layer}.{suffix}"]
        block = flat[:, begin : begin + shape.numel()]
        parts.append(block.reshape(len(flat), shape[0], -1))
    return torch.cat(parts, dim=2)


def test_kronecker_factors_equal_loops_over_tokens_and_labels(setup):
    model, train, _, factors = setup
    inner_a = torch.zeros(5, 5, dtype=torch.float64)
    head_a = torch.zeros(6, 6, dtype=torch.float64)
    tokens = 0
    for batch in train:
        for j in range(len(batch["labels"])):
            length = int(batch["attention_mask"][j].sum())
            x = model.embed(batch["input_ids"][j, :length])
            for t in range(length):
                a = torch.cat([x[t], torch.ones(1, dtype=x.dtype)])
                inner_a += torch.outer(a, a)
            pooled = torch.tanh(model.inner(x)).mean(0)
            a = torch.cat([pooled, torch.ones(1, dtype=x.dtype)])
            head_a += torch.outer(a, a)
            tokens += length
    torch.testing.assert_close(factors["inner"].a_cov, inner_a / tokens, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(factors["head"].a_cov, head_a / N_TRAIN, rtol=1e-10, atol=1e-12)
    # S of the head: one output gradient per example, (p - e_c) for label c, weighted by p_c
    head_s = torch.zeros(N_LABELS, N_LABELS, dtype=torch.float64)
    with torch.no_grad():
        for batch in train:
            for p in model(batch["input_ids"], batch["attention_mask"]).softmax(-1):
                for c in range(N_LABELS):
                    g = p - torch.nn.functional.one_hot(torch.tensor(c), N_LABELS)
                    head_s += p[c] * torch.outer(g, g)
    torch.testing.assert_close(factors["head"].s_cov, head_s / N_TRAIN, rtol=1e-10, atol=1e-12)


def test_corrected_eigenvalues_equal_the_per_example_gradients_in_the_eigenbasis(setup):
    model, train, _, factors = setup
    params = exact_influence.selected(model)
    with torch.no_grad():
        probs = torch.cat([model(b["input_ids"], b["attention_mask"]).softmax(-1) for b in train])
    for layer in ("inner", "head"):
        f = factors[layer]
        want = 0
        for c in range(N_LABELS):
            flat = exact_influence.flat_gradients(model, train, params, N_TRAIN, label=c)
            rotated = f.q_out.T @ _layer_gradient(flat, model, layer) @ f.q_in
            want = want + (probs[:, c].view(-1, 1, 1) * rotated**2).sum(0)
        torch.testing.assert_close(f.eigenvalues, want / N_TRAIN, rtol=1e-9, atol=1e-14)


def test_block_inverse_equals_a_dense_solve(setup):
    _, _, _, factors = setup
    for f in factors.values():
        g = torch.randn(3, *f.eigenvalues.shape, dtype=torch.float64)
        dense = f.dense() + 0.01 * torch.eye(f.eigenvalues.numel(), dtype=torch.float64)
        want = torch.linalg.solve(dense, g.reshape(3, -1).T).T.reshape(g.shape)
        torch.testing.assert_close(f.inverse_times(g, 0.01), want, rtol=1e-9, atol=1e-12)


def test_exact_influence_two_ways_agree(setup):
    model, train, test, _ = setup
    shape = dict(n_train=N_TRAIN, n_test=N_TEST, damping=1e-3)
    by_solve = exact_influence.direct(model, train, test, **shape)
    by_cg = exact_influence.conjugate_gradient(model, train, test, **shape)
    assert (by_cg - by_solve).abs().max() / by_solve.abs().max() < 1e-6


def test_ekfac_scores_equal_their_own_dense_curvature_and_approach_the_exact(setup):
    """EK-FAC over both layers against (1) the same scores from its dense block matrix,
    exactly, and (2) the exact damped influence, approximately (figures printed)."""
    model, train, test, factors = setup
    damping = 1e-3
    got = ekfac.influence_scores(
        model, factors, train, test, n_train=N_TRAIN, n_test=N_TEST, damping=damping
    )
    params = exact_influence.selected(model)
    g_train = exact_influence.flat_gradients(model, train, params, N_TRAIN)
    g_test = exact_influence.flat_gradients(model, test, params, N_TEST)
    want = 0
    for layer, f in factors.items():
        a = _layer_gradient(g_test, model, layer).reshape(N_TEST, -1)
        b = _layer_gradient(g_train, model, layer).reshape(N_TRAIN, -1)
        dense = f.dense() + damping * torch.eye(len(a.T), dtype=torch.float64)
        want = want + torch.linalg.solve(dense, a.T).T @ b.T
    assert (got - want).abs().max() / want.abs().max() < 1e-9

    exact = exact_influence.direct(model, train, test, n_train=N_TRAIN, n_test=N_TEST,
                                   damping=damping)  # fmt: skip
    relative = float((got - exact).norm() / exact.norm())
    rho = float(spearmanr(got.ravel(), exact.ravel()).statistic)
    print(f"EK-FAC vs exact damped influence: relative error {relative:.3f}, Spearman {rho:.3f}")
    assert rho > 0.5, (relative, rho)


def test_embeddings_are_left_out_and_a_selection_without_linear_layers_refused(setup):
    model, train, _, factors = setup
    model.embed.weight.requires_grad_(True)
    try:
        assert set(ekfac.fit_factors(model, train)) == set(factors) == {"inner", "head"}
        with pytest.raises(ConfigError, match="no nn.Linear layer"):
            ekfac.fit_factors(model, train, lambda name: name.startswith("embed"))
    finally:
        model.embed.weight.requires_grad_(False)
    with pytest.raises(ConfigError, match="fisher='true'"):
        ekfac.fit_factors(model, train, fisher="true")


def test_sampled_fisher_is_seeded_and_close_to_the_expected_one(setup):
    model, train, _, expected = setup
    first = ekfac.fit_factors(model, train * 20, fisher="sampled", seed=1)
    again = ekfac.fit_factors(model, train * 20, fisher="sampled", seed=1)
    torch.testing.assert_close(first["head"].eigenvalues, again["head"].eigenvalues)
    s_error = (first["head"].s_cov - expected["head"].s_cov).norm() / expected["head"].s_cov.norm()
    assert s_error < 0.15, s_error  # 480 draws of one label each


def test_every_method_the_config_accepts_is_a_registered_method():
    import dataclasses

    from xlinfluence.attribution import METHODS
    from xlinfluence.config import InfluenceConfig
    from xlinfluence.experiments.attributions import ATTRIBUTION_METHODS

    field = {f.name: f for f in dataclasses.fields(InfluenceConfig)}["method"]
    for method in METHODS.values():  # the choices and the help come from the registry
        InfluenceConfig(train_run_id="0" * 32, method=method.name)
        assert f"{method.name} ({method.help})" in field.metadata["help"]
    with pytest.raises(ConfigError, match="method"):
        InfluenceConfig(train_run_id="0" * 32, method="no-such-method")
    assert {m["method"] for m in ATTRIBUTION_METHODS.values()} <= set(METHODS)
