"""How many test examples to cache at once: the test side sized to the machine.

The per-example Linear kernel, the cheaper one at sentence lengths, caches one gradient
per tracked Linear per test example: 86 MB per example for e5-small, 343 MB for XLM-R
base. A test chunk is as many examples as fit a fixed share of the device's memory. The
size depends on the model and the machine only (never on momentary free memory), so a
resumed run on the same machine plans the same chunks.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from xlinfluence.tracin.hooks import ParamFilter, select_modules

#: Share of the device's memory the test-side cache may take.
CACHE_SHARE = 0.3


def test_cache_bytes(model: nn.Module, param_filter: ParamFilter | None = None) -> int:
    """Bytes per cached test example, at most: fp32 per-example gradients of every tracked
    Linear weight, plus bias and LayerNorm rows (embedding tables cache only their rows)."""
    elements = 0
    for tracked in select_modules(model, param_filter):
        module = tracked.module
        if isinstance(module, nn.Linear):
            elements += tracked.weight * module.in_features * module.out_features
            elements += tracked.bias * module.out_features
        elif isinstance(module, nn.LayerNorm):
            elements += (tracked.weight + tracked.bias) * int(
                torch.Size(module.normalized_shape).numel()
            )
    return 4 * elements


def device_memory(device: torch.device) -> int:
    """Total memory of the device: the GPU's, or the machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def auto_test_chunk(
    model: nn.Module, param_filter: ParamFilter | None, device: torch.device, n_test: int
) -> int:
    """Test examples per chunk so the cache stays within CACHE_SHARE of device memory."""
    per_example = max(test_cache_bytes(model, param_filter), 1)
    fit = int(CACHE_SHARE * device_memory(device)) // per_example
    return max(1, min(n_test, fit))
