"""Exact damped influence, the reference EK-FAC is measured against.

score(z_test, z_train) = g_test^T (G + damping I)^-1 g_train over the selected parameters,
with G the Gauss-Newton matrix of softmax cross-entropy, mean_n J_n^T (diag p_n - p_n p_n^T)
J_n (equal to the Fisher of the model's predictive distribution). Two independent paths:
`direct` forms G from per-label gradients (G = mean_n sum_c p_nc g_nc g_nc^T) and solves;
`conjugate_gradient` never forms it, multiplying by G through forward- and reverse-mode
products (J v, then J^T H (J v)). Both are for small models (tests, a last layer): the
direct path holds a P x P matrix, the other one CG solve per test example.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp, vjp

from xlinfluence.tracin.engine import MODEL_INPUT_KEYS, Batch
from xlinfluence.tracin.hooks import ParamFilter


def selected(model: nn.Module, param_filter: ParamFilter | None = None) -> dict[str, nn.Parameter]:
    return {
        n: p
        for n, p in model.named_parameters()
        if p.requires_grad and (param_filter is None or param_filter(n))
    }


def _logits(model: nn.Module, params: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    device = next(model.parameters()).device
    inputs = {k: batch[k].to(device) for k in MODEL_INPUT_KEYS if k in batch}
    out = functional_call(model, params, args=(), kwargs=inputs)
    return out.logits if hasattr(out, "logits") else out


def flat_gradients(
    model: nn.Module, batches: Iterable[Batch], params: dict[str, nn.Parameter], n: int,
    label: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """(n, P) per-example gradients of the cross-entropy (gold labels, or all = `label`),
    one example at a time (the slow, obviously right way)."""
    model.eval()
    rows = torch.zeros(n, sum(p.numel() for p in params.values()), dtype=_dtype(params))
    for batch in batches:
        for j in range(len(batch["labels"])):
            one = {k: v[j : j + 1] for k, v in batch.items()}
            logits = _logits(model, dict(params), one)
            target = one["labels"] if label is None else torch.full_like(one["labels"], label)
            loss = F.cross_entropy(logits, target.to(logits.device), reduction="sum")
            grads = torch.autograd.grad(loss, list(params.values()))
            rows[int(one["index"])] = torch.cat([g.reshape(-1) for g in grads]).cpu()
    return rows


def gauss_newton(
    model: nn.Module, batches: Iterable[Batch], params: dict[str, nn.Parameter], n: int
) -> torch.Tensor:
    """(P, P) G = mean_n sum_c p_nc g_nc g_nc^T, from one gradient per (example, label)."""
    with torch.no_grad():
        rows = []
        for batch in batches:
            rows.append((batch["index"], _logits(model, dict(params), batch).softmax(-1).cpu()))
    n_labels = rows[0][1].shape[1]
    probs = torch.zeros(n, n_labels, dtype=_dtype(params))
    for index, p in rows:
        probs[index] = p.to(probs.dtype)
    matrix = 0
    for c in range(n_labels):
        g = flat_gradients(model, batches, params, n, label=c)
        matrix = matrix + g.T @ (probs[:, c : c + 1] * g)
    return matrix / n


def direct(
    model: nn.Module, train: Iterable[Batch], test: Iterable[Batch], *, n_train: int,
    n_test: int, damping: float, param_filter: ParamFilter | None = None,
    fit: Iterable[Batch] | None = None, n_fit: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """(n_test, n_train) exact damped influence by a dense solve. G is fitted on `fit`
    (default: the training batches)."""
    params = selected(model, param_filter)
    g_matrix = gauss_newton(model, fit or train, params, n_fit or n_train)
    g_train = flat_gradients(model, train, params, n_train)
    g_test = flat_gradients(model, test, params, n_test)
    eye = torch.eye(len(g_matrix), dtype=g_matrix.dtype)
    return torch.linalg.solve(g_matrix + damping * eye, g_test.T).T @ g_train.T


def gauss_newton_product(
    model: nn.Module, batches: Iterable[Batch], params: dict[str, nn.Parameter], n: int,
    vector: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """G v without forming G: per batch J v (forward mode), H (J v), J^T H J v (reverse)."""
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    tangent = tuple(t.reshape(s) for t, s in zip(vector.split(sizes), shapes, strict=True))
    primals = tuple(params[k].detach() for k in names)
    out = torch.zeros_like(vector)
    for batch in batches:

        def f(*values, batch=batch):
            return _logits(model, dict(zip(names, values, strict=True)), batch)

        logits, jv = jvp(f, primals, tangent)
        p = logits.softmax(-1)
        hjv = p * jv - p * (p * jv).sum(-1, keepdim=True)  # (diag p - p p^T) J v
        _, pullback = vjp(f, *primals)
        out += torch.cat([g.reshape(-1) for g in pullback(hjv.detach())])
    return out / n


def conjugate_gradient(
    model: nn.Module, train: Iterable[Batch], test: Iterable[Batch], *, n_train: int,
    n_test: int, damping: float, param_filter: ParamFilter | None = None,
    tolerance: float = 1e-12, max_iterations: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """(n_test, n_train) exact damped influence, solving (G + damping I) x = g_test by
    conjugate gradients with Gauss-Newton-vector products."""
    model.eval()
    params = selected(model, param_filter)
    g_train = flat_gradients(model, train, params, n_train)
    g_test = flat_gradients(model, test, params, n_test)
    rows = []
    for b in g_test:
        x = torch.zeros_like(b)
        r = b.clone()
        d = r.clone()
        rr = r @ r
        for _ in range(max_iterations or 10 * len(b)):
            if rr.sqrt() <= tolerance * b.norm():
                break
            ad = gauss_newton_product(model, train, params, n_train, d) + damping * d
            step = rr / (d @ ad)
            x += step * d
            r -= step * ad
            rr, previous = r @ r, rr
            d = r + (rr / previous) * d
        rows.append(x)
    return torch.stack(rows) @ g_train.T


def _dtype(params: dict[str, nn.Parameter]) -> torch.dtype:
    return next(iter(params.values())).dtype
