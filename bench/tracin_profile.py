"""Where xlinfluence's time goes: exclusive wall time per engine part, and top torch ops.

The engine is not changed: its functions are wrapped for the duration of one run (patched
back on exit). Each wrapped region's time excludes the wrapped regions it calls, so the
parts add up to the total. Kernel train-side contractions are keyed by kind and shape,
Linear ones also by the mode the engine chose (per-example or ghost).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import defaultdict
from unittest import mock

import torch
from tracin_methods import METHODS, Context, run_xlinfluence

from xlinfluence.tracin import engine, hooks, layers, linear


class Regions:
    """Exclusive wall time per key for nested wrapped calls."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list] = []  # [key, seconds spent in wrapped children]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def inside(self, word: str) -> bool:
        return any(word in key for key, _ in self._stack)

    def wrap(self, fn, key_fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            key = key_fn(*args, **kwargs)
            if self.inside("test side") and not key.startswith("test side"):
                key = f"test side: {key}"
            self._sync()
            start = time.perf_counter()
            self._stack.append([key, 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                self._sync()
                elapsed = time.perf_counter() - start
                _, children = self._stack.pop()
                self.seconds[key] += elapsed - children
                self.calls[key] += 1
                if self._stack:
                    self._stack[-1][1] += elapsed

        return wrapper


def _linear_key(kernel, batches, cache, *_, **__) -> str:
    groups = cache.get("groups", [])
    lengths = [kernel._tokens(x, g)[0].shape[1] for x, g in batches]  # live, as the kernel
    starts = [kernel._first_per_example(t, cache) for t in lengths] if groups else [0]
    ghost = bool(groups) and max(starts) > 0
    per_example = bool(groups) and min(starts) < len(groups)
    if ghost and not per_example:
        return f"Linear ghost {kernel.d_in}->{kernel.d_out}"
    if ghost:
        return f"Linear ghost and per-example length groups {kernel.d_in}->{kernel.d_out}"
    return f"Linear per-example {kernel.d_in}->{kernel.d_out}: contract with test grads, mm"


#: The region where a Linear kernel forms test gradients (`_formed`: at their first use
#: when kept, at every block when re-formed); the bmm inside it is keyed apart from the
#: train rows' forming.
FIRST_USE = "Linear test grads formed (kept: once; reform: per block): padding, bookkeeping"

#: Buffers at least this large are zero-filled where they are allocated, so the first touch
#: of their pages is timed on its own instead of inside the product that writes them.
FRESH_BYTES = 64 * 2**20


class _TouchingTorch:
    """linear.py's `torch`, with `empty` filling large buffers at once (timed apart)."""

    def __init__(self, regions: Regions):
        self._touch = regions.wrap(torch.Tensor.zero_, lambda *_: "first touch of fresh memory")

    def empty(self, *args, **kwargs) -> torch.Tensor:
        out = torch.empty(*args, **kwargs)
        return self._touch(out) if out.numel() * out.element_size() >= FRESH_BYTES else out

    def __getattr__(self, name: str):
        return getattr(torch, name)


def _patches(regions: Regions) -> list:
    const = lambda key: lambda *a, **k: key  # noqa: E731
    wrap = regions.wrap
    return [
        mock.patch.object(linear, "torch", _TouchingTorch(regions)),
        mock.patch.object(
            engine,
            "checkpoint_scores",
            wrap(
                engine.checkpoint_scores,
                const("engine other (scatter into scores, index checks, loop)"),
            ),
        ),
        mock.patch.object(
            engine.CheckpointScorer,
            "test_cache",
            wrap(
                engine.CheckpointScorer.test_cache,
                const("test side (kernels' test_piece and build_cache)"),
            ),
        ),
        mock.patch.object(
            engine, "summed_loss", wrap(engine.summed_loss, const("forward (model + summed loss)"))
        ),
        mock.patch.object(
            hooks.ActivationCapture,
            "output_grads",
            wrap(
                hooks.ActivationCapture.output_grads,
                const("backward (autograd.grad to module outputs)"),
            ),
        ),
        mock.patch.object(
            linear.LinearKernel,
            "train_scores",
            wrap(linear.LinearKernel.train_scores, _linear_key),
        ),
        mock.patch.object(
            linear.LinearKernel,
            "_per_example",
            staticmethod(
                wrap(
                    linear.LinearKernel._per_example,
                    lambda *a, **k: (
                        "Linear per-example: form test grads, bmm (all shapes)"
                        if regions.inside(FIRST_USE)
                        else "Linear per-example: form grads, bmm (all shapes)"
                    ),
                )
            ),
        ),
        mock.patch.object(
            linear.LinearKernel,
            "_formed",
            wrap(
                linear.LinearKernel._formed,
                const(FIRST_USE),
            ),
        ),
        mock.patch.object(
            layers.EmbeddingKernel,
            "_contract",
            wrap(
                layers.EmbeddingKernel._contract,
                lambda k, *a: f"Embedding {k.name.rpartition('.')[2]} (sparse id match)",
            ),
        ),
        mock.patch.object(
            layers.LayerNormKernel,
            "_batch_scores",
            wrap(layers.LayerNormKernel._batch_scores, const("LayerNorm")),
        ),
    ]


@contextlib.contextmanager
def patched(regions: Regions):
    """The engine's parts timed into `regions` while the context is open."""
    with contextlib.ExitStack() as stack:
        for patch in _patches(regions):
            stack.enter_context(patch)
        yield regions


def profile_xlinfluence(ctx: Context, top: int = 15) -> dict:
    """Component breakdown over all checkpoints, then torch.profiler ops over one checkpoint."""
    method = METHODS[0]  # xlinfluence over all parameters
    regions = Regions(ctx.clock.device)
    with patched(regions):
        run_xlinfluence(ctx, method)
    total = ctx.clock.seconds
    parts = dict(regions.seconds)
    parts["checkpoint load + lr-weighted sum"] = total - sum(parts.values())
    components = [
        {
            "part": k,
            "seconds": round(v, 4),
            "share": round(v / total, 4),
            "calls": regions.calls.get(k, 1),
        }
        for k, v in sorted(parts.items(), key=lambda kv: -kv[1])
    ]

    one = Context(**{**ctx.__dict__, "checkpoints": ctx.checkpoints[:1]})
    activities = [torch.profiler.ProfilerActivity.CPU]
    if ctx.clock.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        run_xlinfluence(one, method)
    events = prof.key_averages()
    ops_total = sum(e.self_cpu_time_total for e in events)
    ops = [
        {
            "op": e.key,
            "self_cpu_s": round(e.self_cpu_time_total / 1e6, 4),
            "share": round(e.self_cpu_time_total / ops_total, 4),
            "calls": e.count,
        }
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    ]
    return {
        "total_seconds": round(total, 3),
        "components": components,
        "top_ops_one_checkpoint": ops,
    }


def format_profile(profile: dict) -> str:
    """The breakdown with the test side's parts folded into one line (the JSON keeps them)."""
    total = profile["total_seconds"]
    rows, test = [], {"seconds": 0.0, "calls": 0}
    for c in profile["components"]:
        if c["part"].startswith("test side"):
            test["seconds"] += c["seconds"]
            if c["part"].startswith("test side ("):  # one call per test chunk
                test["calls"] = c["calls"]
        else:
            rows.append((c["seconds"], c["calls"], c["part"]))
    rows.append((test["seconds"], test["calls"], "test side, all parts (once per checkpoint)"))
    lines = [f"xlinfluence profile: {total} s over all checkpoints (exclusive times)"]
    for seconds, calls, part in sorted(rows, reverse=True):
        lines.append(f"  {seconds:8.3f} s  {100 * seconds / total:5.1f}%  {calls:6d}x  {part}")
    lines.append("top torch ops by self CPU time (one checkpoint, under torch.profiler):")
    for o in profile["top_ops_one_checkpoint"]:
        share = f"{100 * o['share']:5.1f}%"
        lines.append(f"  {o['self_cpu_s']:8.3f} s  {share}  {o['calls']:6d}x  {o['op']}")
    return "\n".join(lines)
