"""How many test examples to cache at once: the test side sized to the machine.

The per-example Linear kernel, the cheaper one at sentence lengths, caches one gradient
per tracked Linear per test example: 86 MB per example for e5-small, 343 MB for XLM-R
base. Short examples keep their inputs and output-gradients instead (T' (d_in + d_out)
per Linear, for ghost products), which for the built-in corpus's names is a fraction of
that. A test chunk is as many examples as fit a fixed share of the device's memory, and on
the CPU at most HOST_CACHE_MAX, since the host's memory holds everything else too (this
keeps the README's pipeline under 6 GiB). The size depends on the model, the data's
token lengths and the machine only (never on momentary free memory), so a resumed run on
the same machine plans the same chunks.

When the formed gradients would need several chunks, each a whole pass over the training
set, the kernels can instead keep only the test tokens' factors and form the gradients
again for every block of train rows (tracin.linear.TEST_GRADIENTS "reform"): on SIB-200
with e5-small, 125 test sentences take 10.5 GB formed, 29 per chunk in the CPU's 3 GiB,
but fit in one chunk as factors. `plan_test_side` picks the way with fewer chunks.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import torch
from torch import nn

from xlinfluence.tracin.hooks import ParamFilter, select_modules
from xlinfluence.tracin.linear import GROUP_RATIO, TEST_GRADIENTS

#: Share of the device's memory the test-side cache may take.
CACHE_SHARE = 0.3
#: On the CPU, the test-side cache takes at most this many bytes.
HOST_CACHE_MAX = 3 * 2**30


def _linear_elements(
    d_in: int, d_out: int, test_length: int | None, train_length: int | None, reform: bool
):
    """Cached elements per test example of one Linear weight (an upper bound, as
    tracin.linear.LinearKernel keeps them in "auto" mode): the per-example gradient, or the
    factored inputs and output-gradients when ghost products can serve every train batch,
    or both when only the longest train batches need the gradient; not both when the
    gradients are formed again per block (reform)."""
    full = d_in * d_out
    if test_length is None:
        return full
    threshold = d_in * d_out / (d_in + d_out)
    if test_length >= threshold:
        return full
    factored = test_length * (d_in + d_out)
    if reform:
        return factored
    if train_length is not None and train_length * test_length < threshold:
        return factored
    return factored + full


def _linear_elements_upto(
    d_in: int, d_out: int, length: int, train_length: int | None, reform: bool
):
    """The most a test example padded to at most `length` tokens can cost: kept factored
    just below the threshold can exceed formed at or above it."""
    below = min(length, math.ceil(d_in * d_out / (d_in + d_out)) - 1)
    return max(
        _linear_elements(d_in, d_out, length, train_length, reform),
        _linear_elements(d_in, d_out, max(below, 1), train_length, reform),
    )


def test_cache_bytes(
    model: nn.Module,
    param_filter: ParamFilter | None = None,
    *,
    test_length: int | None = None,
    train_length: int | None = None,
    n_test: int | None = None,
    up_to: bool = False,
    test_gradients: str = "keep",
) -> int:
    """Bytes per cached test example: fp32 per-example gradients of every tracked Linear
    weight, plus bias and LayerNorm rows. Given the longest test and train examples in
    tokens, an upper bound on what the cache keeps: the Linear layers as they are kept
    (factored, formed, or both) and the embedding tables' rows, one per id the chunk of
    `n_test` examples can hold. up_to: for any test length up to test_length (an example
    padded within its length group). test_gradients="reform" (needs test_length): the
    factors, and the example's row of the shared buffer the gradients are formed into
    (as wide as the largest tracked Linear weight). Left out: each kept token's example
    and position (16 bytes per token and Linear, under 1% of its factors at hidden 384)."""
    if test_gradients not in TEST_GRADIENTS:
        raise ValueError(f"test_gradients must be one of {TEST_GRADIENTS}, got {test_gradients!r}")
    reform = test_gradients == "reform" and test_length is not None
    linear = _linear_elements_upto if up_to and test_length is not None else _linear_elements
    elements = widest = 0
    for tracked in select_modules(model, param_filter):
        module = tracked.module
        if isinstance(module, nn.Embedding) and test_length is not None:
            ids = test_length * (n_test or module.num_embeddings)
            elements += tracked.weight * min(module.num_embeddings, ids) * module.embedding_dim
        elif isinstance(module, nn.Linear):
            d_in, d_out = module.in_features, module.out_features
            elements += tracked.weight * linear(d_in, d_out, test_length, train_length, reform)
            elements += tracked.bias * module.out_features
            widest = max(widest, tracked.weight * d_in * d_out)
        elif isinstance(module, nn.LayerNorm):
            elements += (tracked.weight + tracked.bias) * int(
                torch.Size(module.normalized_shape).numel()
            )
    return 4 * (elements + widest * reform)


def device_memory(device: torch.device) -> int:
    """Total memory of the device: the GPU's, or the machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cache_budget(device: torch.device) -> int:
    """Bytes the test-side cache may take on `device`."""
    budget = int(CACHE_SHARE * device_memory(device))
    return min(budget, HOST_CACHE_MAX) if device.type == "cpu" else budget


def example_cache_bytes(
    model: nn.Module,
    param_filter: ParamFilter | None,
    length: int,
    *,
    longest: int,
    train_length: int | None,
    test_gradients: str = "keep",
) -> int:
    """At most what the cache keeps for one test example of `length` tokens in a chunk
    whose longest has `longest`: its length group pads it to at most GROUP_RATIO times."""
    padded = max(1, min(longest, math.ceil(GROUP_RATIO * length)))
    return test_cache_bytes(
        model, param_filter, test_length=padded, train_length=train_length, n_test=1,
        up_to=True, test_gradients=test_gradients,
    )  # fmt: skip


def auto_test_chunk(
    model: nn.Module,
    param_filter: ParamFilter | None,
    device: torch.device,
    n_test: int,
    *,
    test_lengths: Sequence[int] | None = None,
    train_length: int | None = None,
    test_gradients: str = "keep",
) -> int:
    """Test examples per chunk so that every chunk's cache stays within the budget.

    With the test examples' token lengths (in manifest order, as chunks cut them) each
    example is bounded by its own length, padded as its length group may pad it (up to
    GROUP_RATIO times, never past the longest), so a chunk of short sentences is not sized
    as if each were the longest; without them, by the length-blind per-example size (and
    then as "keep": the factors' size needs the lengths)."""
    budget = cache_budget(device)
    if not test_lengths:
        per_example = test_cache_bytes(model, param_filter)
        return max(1, min(n_test, budget // max(per_example, 1)))
    longest = max(test_lengths)

    example_bytes = functools.cache(
        lambda length: example_cache_bytes(
            model,
            param_filter,
            length,
            longest=longest,
            train_length=train_length,
            test_gradients=test_gradients,
        )
    )

    prefix = [0]
    for length in test_lengths:
        prefix.append(prefix[-1] + example_bytes(length))
    n = len(test_lengths)
    for chunk in range(min(n_test, n), 1, -1):
        if all(prefix[min(s + chunk, n)] - prefix[s] <= budget for s in range(0, n, chunk)):
            return chunk
    return 1


def given_chunk_way(test_gradients: str) -> str:
    """How a chunk its owner sized (test_chunk_size > 0) holds its gradients: as asked,
    and kept under "auto", since the owner sized it to the memory."""
    return "keep" if test_gradients == "auto" else test_gradients


def plan_test_side(
    model: nn.Module,
    param_filter: ParamFilter | None,
    device: torch.device,
    n_test: int,
    *,
    test_lengths: Sequence[int] | None = None,
    train_length: int | None = None,
    test_chunk_size: int = 0,
    test_gradients: str = "auto",
) -> tuple[int, str]:
    """(test examples per chunk, "keep" or "reform"). A test_chunk_size > 0 is taken as
    given (its owner sized it to the memory), and "auto" keeps with it.

    Sizing the chunk itself, "auto" keeps the formed gradients unless forming them again
    per block fits the test set in fewer chunks: every chunk past the first is another
    forward and backward pass over the training set and another forming of its gradients,
    while re-forming costs one forming of the test side per block of train rows (on SIB-200
    with e5-small 1.21x keeping's time where both fit and keeping's memory is warm, 2.8x
    faster than keeping's 29-row chunks: bench/README.md)."""
    if test_gradients not in ("auto", *TEST_GRADIENTS):
        raise ValueError(f"test_gradients must be auto or one of {TEST_GRADIENTS}")
    if test_chunk_size > 0:
        return min(test_chunk_size, n_test), given_chunk_way(test_gradients)
    sizes = functools.partial(
        auto_test_chunk, model, param_filter, device, n_test,
        test_lengths=test_lengths, train_length=train_length,
    )  # fmt: skip
    if test_gradients != "auto":
        return sizes(test_gradients=test_gradients), test_gradients
    keep = sizes(test_gradients="keep")
    if keep >= n_test or not test_lengths:
        return keep, "keep"
    reform = sizes(test_gradients="reform")
    if math.ceil(n_test / reform) < math.ceil(n_test / keep):
        return reform, "reform"
    return keep, "keep"
