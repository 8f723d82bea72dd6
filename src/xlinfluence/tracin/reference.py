"""The plain per-example TracIn reference the engine is checked against.

One unpadded example at a time, autograd over every selected parameter, flattened in
float64, then dot products. Slow and memory-hungry (examples x parameters) by design:
obviously correct is its only job. Run it on a float64 copy of the model for ground truth;
an fp32 dot product over ~2M entries is only accurate to ~7e-4 relative.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from xlinfluence.tracin.hooks import ParamFilter


def per_example_gradients(
    model: nn.Module,
    batches: Iterable[dict],
    n: int,
    params: list[torch.Tensor],
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """(n, P) per-example gradients of the gold-label cross-entropy on the CPU, rows by
    `index`; float64 for the reference, fp32 for bench/'s plain autograd loop."""
    device = params[0].device
    grads = torch.zeros(n, sum(p.numel() for p in params), dtype=dtype)
    for batch in batches:
        for row in range(len(batch["labels"])):
            keep = batch["attention_mask"][row].bool()
            input_ids = batch["input_ids"][row][keep].unsqueeze(0).to(device)  # (1, T_row)
            out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
            logits = out.logits if hasattr(out, "logits") else out  # (1, C)
            label = batch["labels"][row : row + 1].to(device)
            loss = F.cross_entropy(logits, label, reduction="sum")
            g = torch.autograd.grad(loss, params, allow_unused=True)
            flat = [
                torch.zeros(p.numel(), dtype=dtype) if gi is None else gi.flatten()
                for p, gi in zip(params, g, strict=True)
            ]
            grads[int(batch["index"][row])] = torch.cat([f.to(dtype).cpu() for f in flat])
    return grads


def reference_scores(
    model: nn.Module,
    train_batches: Iterable[dict],
    test_batches: Iterable[dict],
    *,
    n_train: int,
    n_test: int,
    param_filter: ParamFilter | None = None,
) -> torch.Tensor:
    """(n_test, n_train) float64 <grad L(z'), grad L(z)> over the selected trainable parameters."""
    model.eval()
    params = [
        p
        for name, p in model.named_parameters()
        if p.requires_grad and (param_filter is None or param_filter(name))
    ]
    if not params:
        raise ValueError("param_filter selects no trainable parameter")
    with torch.enable_grad():
        train = per_example_gradients(model, train_batches, n_train, params)  # (n_train, P)
        test = per_example_gradients(model, test_batches, n_test, params)  # (n_test, P)
    return test @ train.T
