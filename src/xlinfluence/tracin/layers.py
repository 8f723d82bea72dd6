"""Exact per-layer TracIn contractions (Pruthi et al. 2020) from captured inputs and output-grads.

For one tracked module, the dot product of two examples' parameter gradients is formed
from what a forward hook sees (the input `x`) and the gradient of the summed loss with
respect to the module's output (`g`), without materialising an examples x parameters
matrix. Each kernel works in three steps:

    test_piece(x', g')             compact test-side quantities of one test batch
    build_cache(pieces)            concatenated over a test chunk of M examples
    train_scores(batches, cache, with_self)
                                   (B, M) contribution of this module for a block of train
                                   batches, [(x, g), ...], rows in batch order, and (B,)
                                   ||grad||^2 of its parameters if with_self

Padded positions need no mask: with the attention mask they get exactly zero gradient.
The Linear kernel, where nearly all the work is, has its own module (tracin/linear.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xlinfluence.tracin.hooks import TrackedModule

Cache = dict[str, torch.Tensor]


def _tokens(x: torch.Tensor, d: int) -> torch.Tensor:
    """(B, *, d) -> (B, T, d); 2-D (B, d) inputs (the classifier head) become T = 1."""
    return x.reshape(x.shape[0], -1, d)


def _pad_cat(tensors: list[torch.Tensor], value: float) -> torch.Tensor:
    """Concatenate (M_i, T_i, ...) along dim 0, padding dim 1 to the longest with `value`."""
    longest = max(t.shape[1] for t in tensors)
    padded = []
    for t in tensors:
        pad = [0, 0] * (t.dim() - 2) + [0, longest - t.shape[1]]
        padded.append(F.pad(t, pad, value=value) if longest > t.shape[1] else t)
    return torch.cat(padded)


class LayerKernel:
    """Base: the contraction for one tracked module, accumulating in `dtype`."""

    def __init__(self, tracked: TrackedModule, dtype: torch.dtype):
        self.name = tracked.name
        self.module = tracked.module
        self.weight = tracked.weight
        self.bias = tracked.bias
        self.dtype = dtype

    def test_piece(self, x: torch.Tensor, g: torch.Tensor) -> Cache:
        raise NotImplementedError

    def build_cache(self, pieces: list[Cache]) -> Cache:
        raise NotImplementedError

    def train_scores(
        self, batches: list[tuple[torch.Tensor, torch.Tensor]], cache: Cache, with_self: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, M) scores of a block of train batches' captures against the cache, rows in
        batch order, and (B,) ||grad||^2 of this module's parameters if with_self. Batch by
        batch here; the Linear kernel contracts the block at once."""
        parts = [self._batch_scores(x, g, cache, with_self) for x, g in batches]
        own = torch.cat([o for _, o in parts]) if with_self else None
        return torch.cat([b for b, _ in parts]), own

    def _batch_scores(
        self, x: torch.Tensor, g: torch.Tensor, cache: Cache, with_self: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def self_scores(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """(B,) ||grad||^2 of this module's parameters per example: the batch against itself."""
        own = self.build_cache([self.test_piece(x, g)])
        return self._batch_scores(x, g, own, False)[0].diagonal()


class EmbeddingKernel(LayerKernel):
    """nn.Embedding (word, position, token type): a sparse row gradient per example.

    grad E for one example is sum_t g_t placed in row id_t, so <grad E, grad E'> is the sum
    over token pairs with id_t == id'_s of g_t . g'_s. The test chunk aggregates its
    gradients per (example, unique id) into a compact (M, U, d) table; a train batch
    scatters into the ids it shares with that table, (B, C, d), and contracts. No dense
    vocab x d gradient is ever built. nn.Embedding writes no gradient into padding_idx
    (XLM-R's pad token and pad position), so tokens with that id are dropped.
    """

    def _valid(self, ids: torch.Tensor) -> torch.Tensor:
        valid = ids >= 0
        if self.module.padding_idx is not None:
            valid &= ids != self.module.padding_idx
        return valid

    def test_piece(self, x, g):
        d = self.module.embedding_dim
        return {"ids": x.reshape(x.shape[0], -1), "g": _tokens(g, d).to(self.dtype)}

    def build_cache(self, pieces):
        ids = _pad_cat([p["ids"] for p in pieces], -1)  # (M, T')
        g = _pad_cat([p["g"] for p in pieces], 0.0)  # (M, T', d)
        M, _, d = g.shape
        valid = self._valid(ids)
        rows = torch.arange(M, device=ids.device).unsqueeze(1).expand_as(ids)[valid]  # (K,)
        uniq, col = torch.unique(ids[valid], return_inverse=True)  # (U,), (K,)
        table = torch.zeros(M * len(uniq), d, dtype=self.dtype, device=g.device)
        table.index_add_(0, rows * len(uniq) + col, g[valid])
        return {"uniq": uniq, "table": table.view(M, len(uniq), d)}  # (U,), (M, U, d)

    def _batch_scores(self, x, g, cache, with_self):
        own = self.self_scores(x, g) if with_self else None
        return self._contract(x, g, cache), own

    def _contract(self, x, g, cache):
        ids = x.reshape(x.shape[0], -1).contiguous()  # (B, T); expanded ids are strided
        g = _tokens(g, self.module.embedding_dim).to(self.dtype)  # (B, T, d)
        uniq, table = cache["uniq"], cache["table"]
        B, M, d = ids.shape[0], table.shape[0], table.shape[2]
        if len(uniq) == 0:
            return torch.zeros(B, M, dtype=self.dtype, device=g.device)
        pos = torch.searchsorted(uniq, ids).clamp(max=len(uniq) - 1)  # (B, T)
        shared = self._valid(ids) & (uniq[pos] == ids)  # ids the test chunk also has
        cols, local = torch.unique(pos[shared], return_inverse=True)  # (C,), (K,)
        C = len(cols)
        rows = torch.arange(B, device=ids.device).unsqueeze(1).expand_as(ids)[shared]  # (K,)
        train = torch.zeros(B * C, d, dtype=self.dtype, device=g.device)
        train.index_add_(0, rows * C + local, g[shared])  # (B C, d)
        test = table[:, cols, :].reshape(M, C * d)  # (M, C d)
        return train.view(B, C * d) @ test.T  # (B, M)


class LayerNormKernel(LayerKernel):
    """nn.LayerNorm: grad weight = sum_t g_t * xhat_t, grad bias = sum_t g_t per example.

    xhat is recomputed from the captured input by F.layer_norm without affine parameters
    (one fused kernel, the module's eps).
    """

    def _per_example(self, x: torch.Tensor, g: torch.Tensor) -> Cache:
        shape = self.module.normalized_shape
        n = int(torch.Size(shape).numel())
        g = g.to(self.dtype)
        out = {}
        if self.weight:
            xhat = F.layer_norm(x.to(self.dtype), shape, eps=self.module.eps)
            out["w"] = (g * xhat).reshape(g.shape[0], -1, n).sum(1)  # (B, n)
        if self.bias:
            out["b"] = g.reshape(g.shape[0], -1, n).sum(1)  # (B, n)
        return out

    def test_piece(self, x, g):
        return self._per_example(x, g)

    def build_cache(self, pieces):
        return {k: torch.cat([p[k] for p in pieces]) for k in pieces[0]}

    def _batch_scores(self, x, g, cache, with_self):
        train = self._per_example(x, g)
        block = sum(train[k] @ cache[k].T for k in train)  # (B, M)
        return block, sum((v * v).sum(1) for v in train.values()) if with_self else None

    def self_scores(self, x, g):
        return sum((v * v).sum(1) for v in self._per_example(x, g).values())
