"""One checkpoint's exact TracIn matrix (Pruthi et al. 2020), contracted per layer.

TracIn(z, z') = sum_c lr_c <grad L(z; theta_c), grad L(z'; theta_c)>. This module computes
the unweighted inner products for one checkpoint; the caller weights by lr_c and sums.
The test side is computed once per test chunk; every train batch then costs one forward
pass and one autograd call for the gradients of the tracked modules' outputs, and every
block of consecutive batches one contraction per module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xlinfluence.errors import ConfigError, DataError
from xlinfluence.tracin.hooks import ActivationCapture, ParamFilter, TrackedModule, select_modules
from xlinfluence.tracin.layers import EmbeddingKernel, LayerKernel, LayerNormKernel
from xlinfluence.tracin.linear import LINEAR_MODES, LinearKernel, Workspace

Batch = dict[str, torch.Tensor]

# Batch keys passed to the model; `labels` and `index` are ours.
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@contextlib.contextmanager
def full_fp32_matmul() -> Iterator[None]:
    """TF32 matmuls add ~1e-3 relative error to the scores; keep them off, then restore."""
    precision = torch.get_float32_matmul_precision()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32


def accumulation_dtype(model: nn.Module) -> torch.dtype:
    """float64 for a float64 model, else float32 (bf16/fp16 models accumulate in fp32)."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    return torch.float64 if dtypes == {torch.float64} else torch.float32


def summed_loss(model: nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """Cross-entropy on the gold labels, summed over the batch.

    Summed, not averaged: a mean would scale each example's gradient by 1 / batch size.
    """
    inputs = {k: batch[k].to(device) for k in MODEL_INPUT_KEYS if k in batch}
    out = model(**inputs)
    logits = out.logits if hasattr(out, "logits") else out
    if logits.dtype != torch.float64:
        logits = logits.float()
    return F.cross_entropy(logits, batch["labels"].to(device), reduction="sum")


def _split(batches: Iterable[Batch], chunk_size: int | None) -> Iterator[tuple[Batch, bool]]:
    """Yield (piece, starts_new_chunk) with pieces cut so chunks hold chunk_size examples."""
    filled = 0
    for batch in batches:
        n = len(batch["labels"])
        start = 0
        while start < n:
            if chunk_size is None:
                stop = n
            else:
                if filled == chunk_size:
                    filled = 0
                stop = min(n, start + chunk_size - filled)
            piece = (
                batch if (start, stop) == (0, n) else {k: v[start:stop] for k, v in batch.items()}
            )
            yield piece, filled == 0
            filled += stop - start
            start = stop


#: Train rows the Linear kernels contract at once. The product of B train rows' gradients
#: with M cached test gradients reads all M once per block; at B = 32 against M = 125 it is
#: bound by memory traffic (53 GFLOP/s on 2 Zen 4 cores), at 128 it runs at 72-76 (both
#: with forming; bench/README.md). Forward batches stay small, so the activations' pages
#: are reused instead of faulted in afresh.
CONTRACTION_ROWS = 128


def row_blocks(batches: Iterable[Batch], rows: int = CONTRACTION_ROWS) -> Iterator[list[Batch]]:
    """Consecutive whole batches, as many as fit in `rows` examples (a batch larger than
    `rows` is a block of its own)."""
    block: list[Batch] = []
    filled = 0
    for batch in batches:
        n = len(batch["labels"])
        if block and filled + n > rows:
            yield block
            block, filled = [], 0
        block.append(batch)
        filled += n
    if block:
        yield block


def block_index(batches: list[Batch]) -> torch.Tensor:
    """The rows of a block of batches, in the order train_block returns their scores."""
    return torch.cat([batch["index"] for batch in batches])


def _check_index(index: torch.Tensor, n: int, seen: torch.Tensor, side: str) -> None:
    if index.numel() and (index.min() < 0 or index.max() >= n):
        raise DataError(f"{side} batch has index outside [0, {n}); pass n_{side} = set size.")
    if seen[index].any() or len(torch.unique(index)) != len(index):
        raise DataError(f"{side} example index repeated across batches; each row must come once.")
    seen[index] = True


def make_kernel(
    tracked: TrackedModule,
    dtype: torch.dtype,
    linear_mode: str,
    workspace: Workspace | None = None,
    test_gradients: str = "keep",
    test_workspace: Workspace | None = None,
) -> LayerKernel:
    """The kernel for a tracked module (select_modules has already checked the type);
    Linear kernels share `workspace` for their train-side per-example gradients and
    `test_workspace` for the test side's when they re-form it per block."""
    module = tracked.module
    if isinstance(module, nn.Linear):
        return LinearKernel(tracked, dtype, linear_mode, workspace, test_gradients, test_workspace)
    if isinstance(module, nn.Embedding):
        return EmbeddingKernel(tracked, dtype)
    if isinstance(module, nn.LayerNorm):
        return LayerNormKernel(tracked, dtype)
    raise TypeError(f"no TracIn kernel for {type(module).__name__} ({tracked.name})")


class CheckpointScorer:
    """TracIn at one checkpoint: hooks live while the context is open.

    Build the test side once (`test_cache`), then score blocks of train batches against it
    (`train_block`); each train batch costs one forward pass and one autograd call for the
    tracked modules' output-gradients, each block one contraction per module. Self-influence
    <grad L(z), grad L(z)> comes from the same captures, with no extra backward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        param_filter: ParamFilter | None = None,
        linear_mode: str = "auto",
        compute_dtype: torch.dtype | None = None,
        test_gradients: str = "keep",
    ):
        """compute_dtype (bf16/fp16) autocasts the forward pass, and so the backward; the
        per-layer contractions always run in the accumulation dtype (fp32). test_gradients:
        "keep" or "reform", how the Linear kernels hold the test side (tracin.linear)."""
        if linear_mode not in LINEAR_MODES:
            raise ConfigError(f"linear_mode must be one of {LINEAR_MODES}, got {linear_mode!r}")
        tracked = select_modules(model, param_filter)
        if not tracked:
            raise ConfigError("param_filter selects no trainable parameter; widen it.")
        model.eval()  # dropout on gave 26% error
        self.model = model
        self.dtype = accumulation_dtype(model)
        workspace, test_workspace = Workspace(), Workspace()  # shared by the Linear kernels
        self.kernels = [
            make_kernel(t, self.dtype, linear_mode, workspace, test_gradients, test_workspace)
            for t in tracked
        ]
        self.device = next(model.parameters()).device
        self.compute_dtype = compute_dtype
        self._stack = contextlib.ExitStack()
        self.capture = ActivationCapture(tracked)

    def __enter__(self) -> CheckpointScorer:
        self._stack.enter_context(full_fp32_matmul())
        self._stack.enter_context(self.capture)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def captures(self, batch: Batch) -> tuple[dict, dict]:
        """Module inputs and output-grads for one batch."""
        self.capture.clear()
        self.capture.batch_size = len(batch["labels"])
        autocast = (
            torch.autocast(self.device.type, dtype=self.compute_dtype)
            if self.compute_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.enable_grad():
            with autocast:
                loss = summed_loss(self.model, batch, self.device)
            grads = self.capture.output_grads(loss)
        inputs = dict(self.capture.inputs)
        n = len(batch["labels"])
        for name, x in inputs.items():
            if x.shape[0] != n:
                raise ConfigError(
                    f"module {name!r} saw input of shape {tuple(x.shape)}, not batch-first with "
                    f"{n} rows; exact TracIn needs batch-first modules. Exclude it with "
                    "param_filter."
                )
        self.capture.clear()
        return inputs, grads

    def test_cache(self, pieces: list[Batch], *, with_self: bool = False) -> TestCache:
        """The test side of a chunk of test batches (and each one's self-influence if asked)."""
        per_kernel: dict[str, list] = {k.name: [] for k in self.kernels}
        own = []
        for piece in pieces:
            inputs, grads = self.captures(piece)
            for k in self.kernels:
                per_kernel[k.name].append(k.test_piece(inputs[k.name], grads[k.name]))
            if with_self:
                own.append(self._self_scores(inputs, grads))
        cache = {k.name: k.build_cache(per_kernel[k.name]) for k in self.kernels}
        index = torch.cat([p["index"] for p in pieces]).cpu()
        return TestCache(cache, index, torch.cat(own).cpu() if with_self else None)

    def train_block(
        self, batches: list[Batch], test: TestCache, *, with_self: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, M) inner products of a block of train batches with the cached test examples,
        rows in batch order, and (B,) self-influence.

        Each batch gets its own forward and backward; the Linear kernels then contract the
        whole block at once (see `row_blocks`). with_self costs about one more contraction
        per module, so ask for it once per checkpoint (e.g. with the first test chunk).
        """
        captured = [self.captures(batch) for batch in batches]
        parts = [
            k.train_scores([(i[k.name], g[k.name]) for i, g in captured], test.cache[k.name],
                           with_self)
            for k in self.kernels
        ]  # fmt: skip
        own = sum(s for _, s in parts) if with_self else None
        return sum(b for b, _ in parts), own

    def _self_scores(self, inputs: dict, grads: dict) -> torch.Tensor:
        """||grad L(z)||^2 per example (B,)."""
        return sum(k.self_scores(inputs[k.name], grads[k.name]) for k in self.kernels)


@dataclass
class TestCache:
    cache: dict  # per kernel name: that kernel's cached test-side quantities
    index: torch.Tensor  # (M,) test rows, in cache order
    self_scores: torch.Tensor | None  # (M,) ||grad L(z')||^2, when asked for


def cosine_normalized(
    scores: torch.Tensor, test_self: torch.Tensor, train_self: torch.Tensor
) -> torch.Tensor:
    """(M, N) inner products divided by ||grad L(z')|| ||grad L(z)||, from self-scores."""
    norms = (test_self.to(scores).unsqueeze(1) * train_self.to(scores).unsqueeze(0)).sqrt()
    return scores / norms.clamp_min(torch.finfo(scores.dtype).tiny)


def checkpoint_scores(
    model: nn.Module,
    train_batches: Iterable[Batch],
    test_batches: Iterable[Batch],
    *,
    n_train: int,
    n_test: int,
    param_filter: ParamFilter | None = None,
    linear_mode: str = "auto",
    test_chunk_size: int | None = None,
    progress: bool = False,
    cosine: bool = False,
    contraction_rows: int = CONTRACTION_ROWS,
    test_gradients: str = "keep",
) -> torch.Tensor:
    """Exact <grad L(z'), grad L(z)> for every (test z', train z) at the model's current weights.

    Returns (n_test, n_train), float32 (float64 for a float64 model), rows and columns placed
    by each batch's `index`; rows or columns no batch covered stay zero, so shards of the
    train set can be summed. The model is put in eval mode (dropout on gave 26% error);
    batches go to the model's device. `param_filter` keeps parameters by full name (default:
    every trainable parameter). `linear_mode` is "auto", "per_example" or "ghost" (see
    LinearKernel). `test_chunk_size` bounds the test-side cache to that many examples: the
    test set is processed once, chunk by chunk, and the train batches are iterated once per
    chunk (so they must be re-iterable, e.g. a list or DataLoader, when there are several).
    `cosine` divides each score by both gradients' norms (the influence step's
    similarity=cosine), from the same captures. `contraction_rows`: train rows per
    contraction (`row_blocks`); the scores depend on it only through rounding, as they do
    on `test_gradients` ("keep" or "reform": tracin.linear.TEST_GRADIENTS).
    """
    if test_chunk_size is not None and test_chunk_size < 1:
        raise ConfigError(
            f"test_chunk_size must be a positive integer or None, got {test_chunk_size}"
        )
    chunked = test_chunk_size is not None and test_chunk_size < n_test
    if chunked and iter(train_batches) is train_batches:
        raise ConfigError(
            "train_batches is a one-shot iterator but several test chunks need it repeatedly; "
            "pass a list or DataLoader, or raise test_chunk_size to n_test."
        )
    scorer = CheckpointScorer(model, param_filter, linear_mode, test_gradients=test_gradients)
    with scorer:
        scores = torch.zeros(n_test, n_train, dtype=scorer.dtype)
        seen_test = torch.zeros(n_test, dtype=torch.bool)

        def run_chunk(pieces: list[Batch], number: int) -> None:
            test = scorer.test_cache(pieces, with_self=cosine)
            _check_index(test.index, n_test, seen_test, "test")
            seen_train = torch.zeros(n_train, dtype=torch.bool)
            total = len(train_batches) if hasattr(train_batches, "__len__") else None
            bar = tqdm(
                train_batches, total=total, disable=not progress, desc=f"TracIn chunk {number}"
            )
            for batches in row_blocks(bar, contraction_rows):
                block, train_self = scorer.train_block(batches, test, with_self=cosine)  # (B, M)
                if cosine:
                    block = cosine_normalized(block.T, test.self_scores, train_self).T
                train_index = block_index(batches).cpu()
                _check_index(train_index, n_train, seen_train, "train")
                scores[test.index.unsqueeze(1), train_index.unsqueeze(0)] = block.T.cpu()

        pieces: list[Batch] = []
        number = 0
        for piece, new_chunk in _split(test_batches, test_chunk_size):
            if new_chunk and pieces:
                run_chunk(pieces, number)
                pieces, number = [], number + 1
            pieces.append(piece)
        if pieces:
            run_chunk(pieces, number)
    return scores
