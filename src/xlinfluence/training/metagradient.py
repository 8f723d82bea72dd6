"""Exact data-weight gradients through AdamW fine-tuning (metagradients, as in MAGIC).

Give every training example a weight w_i in its batch's loss, sum_i w_i l_i / |batch| (all
ones is ordinary training). For a scalar output of the final model, f(theta_T) (a test
language's mean loss), the metagradient df/dw_i says how the output moves if example i
counted a little more or less, through every AdamW step that saw it: first-order exact in
the data weights, no checkpoint approximation.

The training is replayed functionally (parameters, AdamW moments and step as tensors, the
same batches, learning rates and dropout), and reverse-mode autograd differentiates the
whole unrolled run. Memory is kept to segments: the run is cut into segments of
`segment` steps whose inputs are kept and whose insides are recomputed during the
backward pass (torch.utils.checkpoint, which also replays dropout's RNG), so memory is
about (steps / segment) saved states plus one segment's second-order graph, and time
about three trainings per output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from xlinfluence.tracin.engine import MODEL_INPUT_KEYS, Batch

#: added under AdamW's square root: keeps sqrt's derivative finite where a parameter has
#: had no gradient yet (v = 0); 1e-30 moves sqrt(v) by at most 1e-15, far below eps (1e-8)
SQRT_FLOOR = 1e-30


@dataclass(frozen=True)
class AdamW:
    """torch.optim.AdamW's update, with the learning rate given per step."""

    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def step(self, params, m, v, grads, t: int, lr: float):
        b1, b2 = self.betas
        new_p, new_m, new_v = [], [], []
        for p, m_i, v_i, g in zip(params, m, v, grads, strict=True):
            p = p * (1 - lr * self.weight_decay)
            m_i = b1 * m_i + (1 - b1) * g
            v_i = b2 * v_i + (1 - b2) * g * g
            m_hat = m_i / (1 - b1**t)
            v_hat = v_i / (1 - b2**t)
            new_p.append(p - lr * m_hat / ((v_hat + SQRT_FLOOR).sqrt() + self.eps))
            new_m.append(m_i)
            new_v.append(v_i)
        return new_p, new_m, new_v


def weighted_loss(model, names, params, batch: Batch, weights: torch.Tensor) -> torch.Tensor:
    """The batch's mean cross-entropy with each example scaled by its data weight."""
    inputs = {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}
    out = functional_call(model, dict(zip(names, params, strict=True)), args=(), kwargs=inputs)
    logits = out.logits if hasattr(out, "logits") else out
    losses = F.cross_entropy(logits, batch["labels"], reduction="none")
    return (weights[batch["index"]].to(losses) * losses).sum() / len(losses)


def train(
    model: nn.Module,
    batches: Sequence[Batch],
    learning_rates: Sequence[float],
    weights: torch.Tensor,
    *,
    optimizer: AdamW = AdamW(),
    segment: int = 0,
    differentiable: bool = False,
    rng_states: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """The parameters after AdamW over `batches` (one step each, at its learning rate) with
    per-example data weights; differentiable in `weights` when asked (segments of `segment`
    steps recomputed in the backward pass; 0: one segment per step). The model runs in
    training mode (dropout on); rng_states[t], when given, is restored before step t (the
    train step records them), so the replay draws the run's own dropout masks."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p.detach().clone().requires_grad_(differentiable) for n, p in model.named_parameters()
              if p.requires_grad]  # fmt: skip
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    size = max(1, segment or 1)
    n = len(params)

    def run(start: int, stop: int, w: torch.Tensor, *state):
        p, m_, v_ = list(state[:n]), list(state[n : 2 * n]), list(state[2 * n :])
        model.train()  # also when recomputed in the backward pass, after an output in eval
        for t in range(start, stop):
            if rng_states is not None:
                torch.set_rng_state(rng_states[t].clone())  # a row view is misread by torch
            with torch.enable_grad():
                if not differentiable:
                    p = [x.detach().requires_grad_(True) for x in p]
                loss = weighted_loss(model, names, p, batches[t], w)
                grads = torch.autograd.grad(loss, p, create_graph=differentiable)
            p, m_, v_ = optimizer.step(p, m_, v_, grads, t + 1, learning_rates[t])
            if not differentiable:
                p, m_, v_ = ([x.detach() for x in xs] for xs in (p, m_, v_))
        return (*p, *m_, *v_)

    state = (*params, *m, *v)
    for start in range(0, len(batches), size):
        stop = min(len(batches), start + size)
        if differentiable:
            state = checkpoint(run, start, stop, weights, *state, use_reentrant=False)
        else:
            state = run(start, stop, weights, *state)
    return list(state[:n])


def data_weight_gradient(
    model: nn.Module,
    batches: Sequence[Batch],
    learning_rates: Sequence[float],
    n_train: int,
    output: Callable[[list[torch.Tensor]], torch.Tensor],
    *,
    optimizer: AdamW = AdamW(),
    segment: int = 0,
    rng_states: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """(n_train,) d output(theta_T) / d w_i at w = 1, through the whole AdamW run.

    output: the final parameters (in named_parameters order) -> a scalar, e.g. a test
    language's mean loss (`test_loss_output`)."""
    dtype = next(model.parameters()).dtype
    weights = torch.ones(n_train, dtype=dtype, requires_grad=True)
    final = train(model, batches, learning_rates, weights, optimizer=optimizer,
                  segment=segment, differentiable=True, rng_states=rng_states)  # fmt: skip
    (gradient,) = torch.autograd.grad(output(final), weights)
    return gradient


def test_loss_output(model: nn.Module, batches: Sequence[Batch]):
    """output(params) = the mean cross-entropy over `batches` (e.g. one test language's),
    in evaluation mode (dropout off), as the train step evaluates."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    def output(params: list[torch.Tensor]) -> torch.Tensor:
        model.eval()
        total, count = 0, 0
        for batch in batches:
            ones = torch.ones(int(batch["index"].max()) + 1)
            total = total + weighted_loss(model, names, params, batch, ones) * len(batch["labels"])
            count += len(batch["labels"])
        return total / count

    return output
