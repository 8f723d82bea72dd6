"""Influence functions with EK-FAC curvature over the nn.Linear layers.

score(z_test, z_train) = grad L(z_test)^T (F + damping I)^-1 grad L(z_train), with the same
sign convention as TracIn (positive: training on z_train lowers z_test's loss). F is the
Fisher of the model's predictive distribution, which for softmax cross-entropy equals the
Gauss-Newton matrix: F = mean_n sum_c p_nc g_nc g_nc^T, g_nc the gradient with label c.
Curvature-aware attributions discount the directions every example shares (the classifier's,
on a pretrained model), which plain gradient products count again for every pair.

EK-FAC (George et al. 2018; Grosse et al. 2023) keeps one block per Linear layer. Its
eigenbasis comes from the Kronecker factors A = E[a a^T] (layer inputs, with a 1 for the
bias) and S = E[g g^T] (output gradients), over non-padded tokens; its eigenvalues are then
re-fitted to the per-example gradients in that basis, Lambda_ij = mean_n E_c[(Q_S^T G_n
Q_A)_ij^2], which makes the block exact whenever the per-example gradients are diagonal in
it. Inverting a block is then a rotation, an elementwise division and the rotation back.

`fisher="expected"` weights every label by its predicted probability (one backward pass per
label; deterministic, what the tests compare against the explicit Gauss-Newton matrix);
`"sampled"` draws one label per example from the model (one backward pass; kronfluence's
choice). Only the selection's Linear layers: its embeddings and LayerNorms are left out,
as in kronfluence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xlinfluence.attribution.method import Method
from xlinfluence.errors import ConfigError
from xlinfluence.tracin.engine import MODEL_INPUT_KEYS, Batch, TestCache, accumulation_dtype
from xlinfluence.tracin.hooks import ActivationCapture, ParamFilter, TrackedModule, select_modules

FISHERS = ("expected", "sampled")
#: damping=None: this fraction of a layer's mean corrected eigenvalue (kronfluence's rule)
RELATIVE_DAMPING = 0.1


@dataclass
class LayerFactors:
    """One Linear layer's EK-FAC block. Shapes: inputs d' = d_in (+1 with a bias)."""

    name: str
    a_cov: torch.Tensor  # (d', d') input second moment over tokens
    s_cov: torch.Tensor  # (d_out, d_out) output-gradient second moment over tokens
    q_in: torch.Tensor  # eigenvectors of a_cov
    q_out: torch.Tensor  # eigenvectors of s_cov
    eigenvalues: torch.Tensor  # (d_out, d') corrected, in the (q_out, q_in) basis

    def damping(self, damping: float | None) -> float:
        return RELATIVE_DAMPING * float(self.eigenvalues.mean()) if damping is None else damping

    def inverse_times(self, grads: torch.Tensor, damping: float | None) -> torch.Tensor:
        """(F_layer + damping I)^-1 applied to per-example gradients (..., d_out, d')."""
        rotated = self.q_out.T @ grads @ self.q_in
        return self.q_out @ (rotated / (self.eigenvalues + self.damping(damping))) @ self.q_in.T

    def dense(self) -> torch.Tensor:
        """The block as a (d_out * d', d_out * d') matrix over row-major vec(G) (for tests)."""
        basis = torch.kron(self.q_out, self.q_in)
        return basis @ torch.diag(self.eigenvalues.reshape(-1)) @ basis.T


def linear_modules(
    model: nn.Module, param_filter: ParamFilter | None = None
) -> list[TrackedModule]:
    """The Linear layers holding a selected parameter. EK-FAC has no block for the
    selection's embeddings and LayerNorms (as in kronfluence); they are left out."""
    tracked = [t for t in select_modules(model, param_filter) if isinstance(t.module, nn.Linear)]
    if not tracked:
        raise ConfigError(
            "the parameter selection holds no nn.Linear layer, and EK-FAC covers Linear "
            "layers only; widen params (e.g. 'all', or 'classifier|layer\\.11\\.')."
        )
    return tracked


class _Gradients:
    """Per-example Linear-layer gradients G_n = sum_t g_t a_t^T from one forward pass."""

    def __init__(self, model: nn.Module, tracked: list[TrackedModule]):
        model.eval()
        self.model, self.tracked = model, tracked
        self.device = next(model.parameters()).device
        self.dtype = accumulation_dtype(model)
        self.capture = ActivationCapture(tracked)

    def forward(self, batch: Batch) -> torch.Tensor:
        self.capture.clear()
        self.capture.batch_size = len(batch["labels"])
        inputs = {k: batch[k].to(self.device) for k in MODEL_INPUT_KEYS if k in batch}
        out = self.model(**inputs)
        logits = out.logits if hasattr(out, "logits") else out
        return logits.to(self.dtype)

    def inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Layer inputs as (B, T, d'), padded tokens zeroed, a 1 appended for a bias."""
        mask = _token_mask(batch, self.device)
        out = {}
        for t in self.tracked:
            a = _as_tokens(self.capture.inputs[t.name]).to(self.dtype)
            if t.bias:
                a = torch.cat([a, torch.ones_like(a[..., :1])], dim=-1)
            out[t.name] = a * mask(a)
        return out

    def output_grads(self, loss: torch.Tensor, retain: bool) -> dict[str, torch.Tensor]:
        grads = self.capture.output_grads(loss, retain=retain)
        return {t.name: _as_tokens(grads[t.name]).to(self.dtype) for t in self.tracked}


def _token_mask(batch: Batch, device):
    mask = batch.get("attention_mask")

    def apply(a: torch.Tensor) -> torch.Tensor:
        if mask is None or a.shape[1] != mask.shape[1]:
            return torch.ones_like(a[..., :1])
        return mask.to(device, a.dtype).unsqueeze(-1)

    return apply


def _as_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1) if x.dim() == 2 else x


def _label_passes(logits: torch.Tensor, gold: torch.Tensor, fisher: str | None, generator):
    """(labels, weight per example) for each backward pass: gold (scores), every label
    weighted by its probability (expected Fisher) or one sampled label (sampled Fisher)."""
    if fisher is None:
        return [(gold, torch.ones(len(gold), dtype=logits.dtype, device=logits.device))]
    probs = logits.detach().softmax(-1)
    if fisher == "sampled":
        drawn = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1)
        return [(drawn.to(logits.device), torch.ones_like(probs[:, 0]))]
    return [(torch.full_like(gold, c), probs[:, c]) for c in range(probs.shape[1])]


def _passes(scorer: _Gradients, batch: Batch, fisher: str | None, generator):
    """Yield (inputs, output grads, weights) per backward pass of one batch."""
    with torch.enable_grad():
        logits = scorer.forward(batch)
        inputs = scorer.inputs(batch)
        passes = _label_passes(logits, batch["labels"].to(logits.device), fisher, generator)
        for i, (labels, weights) in enumerate(passes):
            loss = F.cross_entropy(logits, labels, reduction="sum")
            grads = scorer.output_grads(loss, retain=i < len(passes) - 1)
            yield inputs, grads, weights


def _per_example_grads(inputs, grads, tracked) -> dict[str, torch.Tensor]:
    return {t.name: torch.einsum("bto,bti->boi", grads[t.name], inputs[t.name]) for t in tracked}


def fit_factors(
    model: nn.Module,
    batches: Iterable[Batch],
    param_filter: ParamFilter | None = None,
    *,
    fisher: str = "expected",
    seed: int = 0,
) -> dict[str, LayerFactors]:
    """EK-FAC blocks of every selected Linear layer from the training batches: two passes
    (the Kronecker factors and their eigenvectors, then the corrected eigenvalues).
    `batches` must be re-iterable (a DataLoader or a list)."""
    if fisher not in FISHERS:
        raise ConfigError(f"fisher={fisher!r}: give one of {', '.join(FISHERS)}.")
    tracked = linear_modules(model, param_filter)
    grads_of = _Gradients(model, tracked)
    a_sum: dict[str, torch.Tensor] = {}
    s_sum: dict[str, torch.Tensor] = {}
    tokens: dict[str, float] = {}  # per layer: tokens (or examples, after pooling) seen
    with contextlib.ExitStack() as stack:
        stack.enter_context(grads_of.capture)
        generator = torch.Generator().manual_seed(seed)
        for batch in tqdm(batches, desc="EK-FAC factors", leave=False):
            passes = _passes(grads_of, batch, fisher, generator)
            for i, (inputs, grads, weights) in enumerate(passes):
                for t in tracked:
                    a, g = inputs[t.name], grads[t.name]
                    if i == 0:  # the inputs do not depend on the label
                        a_sum[t.name] = a_sum.get(t.name, 0) + torch.einsum("bti,btj->ij", a, a)
                        count = float(_token_mask(batch, a.device)(a).expand_as(a[..., :1]).sum())
                        tokens[t.name] = tokens.get(t.name, 0.0) + count
                    s = torch.einsum("bto,btp->op", g * weights.view(-1, 1, 1), g)
                    s_sum[t.name] = s_sum.get(t.name, 0) + s
        factors = {}
        for t in tracked:
            a_cov, s_cov = a_sum[t.name] / tokens[t.name], s_sum[t.name] / tokens[t.name]
            q_in = torch.linalg.eigh(a_cov.double()).eigenvectors.to(a_cov.dtype)
            q_out = torch.linalg.eigh(s_cov.double()).eigenvectors.to(s_cov.dtype)
            factors[t.name] = LayerFactors(t.name, a_cov, s_cov, q_in, q_out, torch.empty(0))
        lam = {t.name: 0.0 for t in tracked}
        examples = 0
        generator = torch.Generator().manual_seed(seed)
        for batch in tqdm(batches, desc="EK-FAC eigenvalues", leave=False):
            for inputs, grads, weights in _passes(grads_of, batch, fisher, generator):
                per_example = _per_example_grads(inputs, grads, tracked)
                for name, g in per_example.items():
                    f = factors[name]
                    rotated = f.q_out.T @ g @ f.q_in
                    lam[name] = lam[name] + (weights.view(-1, 1, 1) * rotated**2).sum(0)
            examples += len(batch["labels"])
    for name, f in factors.items():
        f.eigenvalues = lam[name] / examples
    return factors


class EKFACScorer:
    """EK-FAC influence at one checkpoint, with CheckpointScorer's interface (test_cache,
    train_block) so the influence step chunks, resumes and sums it like TracIn. The factors
    are fitted on `fit_batches` (the training set) when the scorer is built."""

    def __init__(
        self,
        model: nn.Module,
        param_filter: ParamFilter | None,
        fit_batches: Iterable[Batch] = (),
        *,
        fisher: str = "sampled",
        damping: float | None = None,
        seed: int = 0,
        factors: dict[str, LayerFactors] | None = None,
    ):
        """factors: already fitted blocks (then fit_batches is not read)."""
        self.factors = factors or fit_factors(
            model, fit_batches, param_filter, fisher=fisher, seed=seed
        )
        self.damping = damping
        tracked = [t for t in linear_modules(model, param_filter) if t.name in self.factors]
        self.gradients = _Gradients(model, tracked)

    def __enter__(self) -> EKFACScorer:
        self.gradients.capture.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.gradients.capture.__exit__(*exc)

    def _per_example(self, batch: Batch) -> dict[str, torch.Tensor]:
        ((inputs, grads, _),) = list(_passes(self.gradients, batch, None, None))
        per_example = _per_example_grads(inputs, grads, self.gradients.tracked)
        return {n: g.detach() for n, g in per_example.items()}

    def test_cache(self, pieces: list[Batch], *, with_self: bool = False) -> TestCache:
        """Each test example's gradient, preconditioned once: (F + damping I)^-1 g."""
        parts = [self._per_example(piece) for piece in pieces]
        cache, own = {}, None
        for name in self.factors:  # each layer's raw gradients freed once preconditioned
            raw = torch.cat([p.pop(name) for p in parts])
            cache[name] = self.factors[name].inverse_times(raw, self.damping)
            if with_self:
                own = (0 if own is None else own) + (cache[name] * raw).sum((1, 2))
            del raw
        index = torch.cat([piece["index"] for piece in pieces]).cpu()
        return TestCache(cache, index, None if own is None else own.cpu())

    def train_block(
        self, batches: list[Batch], test: TestCache, *, with_self: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, M) influence of a block of batches on the cached test examples (and its
        self-influence), rows in batch order."""
        parts = [self._batch_block(batch, test, with_self) for batch in batches]
        own = torch.cat([o for _, o in parts]) if with_self else None
        return torch.cat([b for b, _ in parts]), own

    def _batch_block(self, batch: Batch, test: TestCache, with_self: bool):
        grads = self._per_example(batch)
        block = sum(torch.einsum("boi,moi->bm", g, test.cache[n]) for n, g in grads.items())
        own = None
        if with_self:
            own = sum(
                (self.factors[n].inverse_times(g, self.damping) * g).sum((1, 2))
                for n, g in grads.items()
            )
        return block, own


def influence_scores(
    model: nn.Module,
    factors: dict[str, LayerFactors],
    train_batches: Iterable[Batch],
    test_batches: Iterable[Batch],
    *,
    n_train: int,
    n_test: int,
    damping: float | None = None,
) -> torch.Tensor:
    """(n_test, n_train) EK-FAC influence with given factors, in one test chunk."""
    scorer = EKFACScorer(model, None, damping=damping, factors=factors)
    scores = torch.zeros(n_test, n_train, dtype=scorer.gradients.dtype)
    with scorer:
        test = scorer.test_cache(list(test_batches))
        for batch in train_batches:
            block, _ = scorer.train_block([batch], test)
            scores[test.index.unsqueeze(1), batch["index"].unsqueeze(0)] = block.T.cpu()
    return scores


class EKFAC(Method):
    """Fits its factors on the whole training set, length-bucketed, once per checkpoint."""

    def scorer(self, model, param_filter, compute_dtype, training_batches, test_gradients):
        return EKFACScorer(model, param_filter, training_batches())


METHOD = EKFAC(
    "ekfac",
    "influence functions with EK-FAC curvature over the selection's Linear layers",
    chunks="ekfac influence",
)
