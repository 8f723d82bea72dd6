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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xlinfluence.errors import ConfigError
from xlinfluence.tracin.hooks import TrackedModule

LINEAR_MODES = ("auto", "per_example", "ghost")

Cache = dict[str, torch.Tensor]


def _tokens(x: torch.Tensor, d: int) -> torch.Tensor:
    """(B, *, d) -> (B, T, d); 2-D (B, d) inputs (the classifier head) become T = 1."""
    return x.reshape(x.shape[0], -1, d)


def _live_positions(a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop token positions whose output-gradient is zero for every example of the batch.

    Such positions add nothing to any gradient. Padding is one case; the last encoder
    layer is the big one: a classifier reading the <s> token leaves every other position
    of that layer's query, attention-output and feed-forward layers without gradient, so
    they shrink to T = 1 (and then the ghost product is the cheaper one). The check reads
    g once, which is d_in times cheaper than forming the per-example gradients.
    """
    if g.shape[1] <= 1:
        return a, g
    live = g.abs().amax(dim=(0, 2)) != 0  # (T,); NaN != 0, so NaN and inf count as live
    if bool(live.all()):
        return a, g
    return a[:, live], g[:, live]


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


def _live_lengths(g: torch.Tensor) -> torch.Tensor:
    """(M, T, d) -> (M,) one past each example's last position with a nonzero gradient."""
    live = (g.abs().amax(dim=2) != 0).int()  # (M, T); NaN and inf count as live
    last = live.shape[1] - live.flip(1).argmax(dim=1)  # (M,)
    return torch.where(live.any(dim=1), last, torch.zeros_like(last))


def _first(x: torch.Tensor, t: int) -> torch.Tensor:
    """(T, d) -> (t, d): the first t positions, zero-padded where T < t."""
    return x[:t] if x.shape[0] >= t else F.pad(x, (0, 0, 0, t - x.shape[0]))


#: Test examples whose live lengths differ by at most this factor share a length group.
GROUP_RATIO = 1.5


class Workspace:
    """One scratch buffer the Linear kernels share for a train block's per-example
    gradients: each kernel is done with them before the next one starts. Tensors this
    large go back to the OS when freed, so a fresh one per batch and layer re-faults its
    pages every time; in a VM that first touch cost about as much as the products."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def take(self, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        buffer = self._buffer
        if (
            buffer is None
            or buffer.numel() < numel
            or buffer.dtype != dtype
            or (buffer.device != device)
        ):
            buffer = self._buffer = torch.empty(numel, dtype=dtype, device=device)
        return buffer[:numel]


class LinearKernel(LayerKernel):
    """nn.Linear: grad W = sum_t g_t a_t^T per example, grad b = sum_t g_t.

    Two exact ways to get <grad W, grad W'>:
      per_example  form grad W for each train example, one matmul with cached test grads;
                   costs ~ (B T + B M) d_in d_out.
      ghost        sum_{t,s} (a_t . a'_s)(g_t . g'_s) from cached test a', g';
                   costs ~ B M T T' (d_in + d_out).
    "auto" picks ghost when T * T' < d_in d_out / (d_in + d_out), with T the train batch's
    padded length and T' a test length group's, after positions with no output gradient
    are dropped (`_live_positions`); this matched the measured crossover (64 for 128x128,
    384 for 768x768). The test chunk is cut into groups of similar live length (within
    GROUP_RATIO), so short test examples stay on the cheap ghost path instead of being
    padded to the chunk's longest; groups where ghost can never win (T' >= threshold) have
    their per-example test grads formed up front, the others keep raw a', g' and form them
    only if some train batch needs them (`_form`: into one matrix, contracted in one product).
    """

    def __init__(
        self,
        tracked: TrackedModule,
        dtype: torch.dtype,
        mode: str = "auto",
        workspace: Workspace | None = None,
    ):
        super().__init__(tracked, dtype)
        if mode not in LINEAR_MODES:
            raise ConfigError(f"linear_mode must be one of {LINEAR_MODES}, got {mode!r}")
        self.mode = mode
        self.workspace = workspace or Workspace()
        d_in, d_out = self.module.in_features, self.module.out_features
        self.d_in, self.d_out = d_in, d_out
        self.threshold = d_in * d_out / (d_in + d_out)

    def use_ghost(self, t_train: int, t_test: int) -> bool:
        if self.mode == "auto":
            return t_train * t_test < self.threshold
        return self.mode == "ghost"

    def _tokens(self, x, g) -> tuple[torch.Tensor, torch.Tensor]:
        a = _tokens(x, self.d_in).to(self.dtype)  # (B, T, d_in)
        g = _tokens(g, self.d_out).to(self.dtype)  # (B, T, d_out)
        return _live_positions(a, g)

    def test_piece(self, x, g):
        a, g = self._tokens(x, g)
        piece = {}
        if self.weight:
            piece["a"], piece["g"], piece["length"] = a, g, _live_lengths(g)
        if self.bias:
            piece["gb"] = g.sum(1)  # (M, d_out)
        return piece

    def build_cache(self, pieces):
        cache = {}
        if self.bias:
            cache["gb"] = torch.cat([p["gb"] for p in pieces])  # (M, d_out)
        if self.weight:
            groups = self._length_groups(pieces)
            cache.update(groups=groups, m=sum(len(p["length"]) for p in pieces), formed=None)
            # groups where ghost loses even to a one-token train example: formed now, and
            # their factors dropped
            never_ghost = [i for i, grp in enumerate(groups) if not self.use_ghost(1, grp["t"])]
            if never_ghost:
                self._form(cache, never_ghost[0])
                for grp in groups[never_ghost[0] :]:
                    del grp["a"], grp["g"]
        return cache

    def _length_groups(self, pieces: list[Cache]) -> list[Cache]:
        """The chunk's test examples by live length, shortest first: [{"index" (M_g,)
        positions in the chunk, "t" T'_g, "a" (M_g, T'_g, d_in), "g" (M_g, T'_g, d_out)}]."""
        lengths = torch.cat([p["length"] for p in pieces]).cpu()  # (M,)
        order = torch.argsort(lengths, stable=True).tolist()
        rows = [(k, i) for k, p in enumerate(pieces) for i in range(len(p["length"]))]
        bounds, first = [], None
        for pos in order:
            length = int(lengths[pos])
            if length == 0:
                continue  # no gradient reaches this module for that example: scores are 0
            if first is None or length > GROUP_RATIO * first:
                bounds.append([])
                first = length
            bounds[-1].append(pos)
        groups = []
        for members in bounds:
            t = int(lengths[members[-1]])
            a = torch.stack([_first(pieces[rows[m][0]]["a"][rows[m][1]], t) for m in members])
            g = torch.stack([_first(pieces[rows[m][0]]["g"][rows[m][1]], t) for m in members])
            index = torch.tensor(members, device=a.device)
            groups.append({"index": index, "t": t, "a": a, "g": g})
        return groups

    def _form(self, cache: Cache, first: int) -> None:
        """Make sure the test gradients of groups[first:] are formed. Formed groups are
        a suffix of the (shortest-first) groups. The first time, the whole suffix goes into
        one (M_s, d_out d_in) matrix, so a block contracts it in one product; groups needed
        later (when a longer train batch comes) each get their own. Nothing is formed
        twice, so the cache holds what it held when every group had its own."""
        groups = cache["groups"]
        if cache["formed"] is None:
            suffix = groups[first:]
            rows = [len(grp["index"]) for grp in suffix]
            device = suffix[0]["index"].device
            formed = torch.empty(sum(rows), self.d_out * self.d_in, dtype=self.dtype, device=device)
            self._per_example_rows([(grp["a"], grp["g"]) for grp in suffix], formed)
            index = torch.cat([grp["index"] for grp in suffix])
            cache.update(formed=formed, formed_index=index, formed_from=first, formed_rows=rows)
            return
        for grp in groups[first : cache["formed_from"]]:
            if "w" not in grp:
                grp["w"] = self._per_example(grp["a"], grp["g"])  # (M_g, d_out d_in)

    def _formed_from(self, cache: Cache) -> int:
        """The first group whose test gradients are formed (len(groups) if none)."""
        groups = cache["groups"]
        first = len(groups) if cache["formed"] is None else cache["formed_from"]
        while first > 0 and "w" in groups[first - 1]:
            first -= 1
        return first

    def _group_grads(self, cache: Cache, i: int) -> torch.Tensor:
        """The formed test gradients of groups[i] (M_g, d_out d_in): its own, or its rows of
        the shared matrix."""
        group = cache["groups"][i]
        if "w" in group:
            return group["w"]
        row = sum(cache["formed_rows"][: i - cache["formed_from"]])
        return cache["formed"][row : row + len(group["index"])]

    def _test_grads(self, cache: Cache, start: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(index, test grads)] of groups[start:], all formed: one entry per group formed
        on its own, then one for the rest of the shared matrix."""
        groups, first = cache["groups"], cache["formed_from"]
        pieces = [(grp["index"], grp["w"]) for grp in groups[start:first]]
        if cache["formed"] is not None:
            row = sum(cache["formed_rows"][: max(start - first, 0)])
            pieces.append((cache["formed_index"][row:], cache["formed"][row:]))
        return pieces

    def _train_grads(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """A block's per-example gradients (B, d_out d_in), in the shared workspace (valid
        until the next kernel forms its own)."""
        rows = sum(a.shape[0] for a, _ in batches)
        a0 = batches[0][0]
        w = self.workspace.take(rows * self.d_out * self.d_in, a0.dtype, a0.device)
        return self._per_example_rows(batches, w.view(rows, self.d_out * self.d_in))

    @classmethod
    def _per_example_rows(cls, pairs: list[tuple[torch.Tensor, torch.Tensor]], out):
        """Per-example gradients of consecutive (a, g) pairs, written row after row into out."""
        start = 0
        for a, g in pairs:
            cls._per_example(a, g, out=out[start : start + a.shape[0]])
            start += a.shape[0]
        return out

    @staticmethod
    def _per_example(
        a: torch.Tensor, g: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, d_out * d_in) per-example weight gradients, written into `out` if given."""
        if out is None:
            return torch.bmm(g.transpose(1, 2), a).flatten(1)
        grads = out.view(a.shape[0], g.shape[2], a.shape[2])
        torch.bmm(g.transpose(1, 2), a, out=grads)
        return grads.flatten(1)

    @staticmethod
    def _ghost(a: torch.Tensor, g: torch.Tensor, group: Cache) -> torch.Tensor:
        """(B, M_g) from the factors alone: sum_{t,s} (a_t . a'_s)(g_t . g'_s)."""
        a_t, g_t = group["a"], group["g"]  # (M_g, T', d_in), (M_g, T', d_out)
        (B, T, _), (M, Tt, _) = a.shape, a_t.shape
        aa = a.reshape(B * T, -1) @ a_t.reshape(M * Tt, -1).T  # (B T, M T')
        gg = g.reshape(B * T, -1) @ g_t.reshape(M * Tt, -1).T  # (B T, M T')
        return (aa * gg).view(B, T, M, Tt).sum((1, 3))

    def _first_per_example(self, t_train: int, cache: Cache, formed_from: int) -> int:
        """The first group a train batch of t_train tokens contracts through formed
        gradients: formed groups and those where ghost loses, both suffixes of the groups."""
        groups = cache["groups"]
        for i, group in enumerate(groups[:formed_from]):
            if not self.use_ghost(t_train, group["t"]):
                return i
        return formed_from

    def _weight_scores(self, batches, cache) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, M) weight part of a block, and its train grads w (B, d_out d_in) if formed.

        The per-example path forms the whole block's gradients and contracts them with the
        formed test gradients in as few products as possible: the groups every batch of the
        block takes that way are one product when they were formed together, so a block
        reads the test gradients once and the product runs at the core's matmul speed (a
        product per length group, SIB-200's 4, made blocks 1.22-1.31x slower:
        bench/README.md). Groups some batches of the block take by ghost go group by group."""
        rows = [a.shape[0] for a, _ in batches]
        offsets = [sum(rows[:i]) for i in range(len(rows))]
        out = torch.zeros(sum(rows), cache["m"], dtype=self.dtype, device=batches[0][0].device)
        groups = cache["groups"]
        formed_from = self._formed_from(cache)
        starts = [self._first_per_example(a.shape[1], cache, formed_from) for a, _ in batches]
        w = None
        if min(starts) < len(groups):
            self._form(cache, min(starts))
            w = self._train_grads(batches)
        common = max(starts)  # from here on every batch of the block is per-example
        for i, group in enumerate(groups[:common]):
            test = self._group_grads(cache, i) if i >= min(starts) else None
            part = torch.cat([
                self._ghost(a, g, group) if i < first else w[s : s + n] @ test.T
                for (a, g), s, n, first in zip(batches, offsets, rows, starts, strict=True)
            ])  # fmt: skip
            out.index_copy_(1, group["index"], part)
        if common < len(groups):
            for index, test in self._test_grads(cache, common):
                out.index_copy_(1, index, w @ test.T)
        return out, w

    def train_scores(self, batches, cache, with_self):
        batches = [self._tokens(x, g) for x, g in batches]
        block, own = 0, 0
        if self.bias:
            gb = torch.cat([g.sum(1) for _, g in batches])  # (B, d_out)
            block = gb @ cache["gb"].T  # (B, M)
            own = (gb * gb).sum(1) if with_self else 0
        if self.weight:
            part, w = self._weight_scores(batches, cache)
            block = block + part
            if with_self:
                own = own + self._weight_self(batches, w)
        return block, own if with_self else None

    def self_scores(self, x, g):
        a, g = self._tokens(x, g)
        own = 0
        if self.bias:
            gb = g.sum(1)
            own = (gb * gb).sum(1)
        if self.weight:
            own = own + self._weight_self([(a, g)], None)
        return own

    def _weight_self(self, batches, w: torch.Tensor | None) -> torch.Tensor:
        """(B,) ||grad W||^2 per example: from w if formed, else the ghost identity of each
        example with itself (B T^2 (d_in + d_out)) when that is cheaper than forming w."""
        if w is None and all(self.use_ghost(a.shape[1], a.shape[1]) for a, _ in batches):
            own = []
            for a, g in batches:
                aa = torch.bmm(a, a.transpose(1, 2))  # (B, T, T)
                gg = torch.bmm(g, g.transpose(1, 2))
                own.append((aa * gg).sum((1, 2)))
            return torch.cat(own)
        if w is None:
            w = self._train_grads(batches)
        return (w * w).sum(1)


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


def make_kernel(
    tracked: TrackedModule,
    dtype: torch.dtype,
    linear_mode: str,
    workspace: Workspace | None = None,
) -> LayerKernel:
    """The kernel for a tracked module (select_modules has already checked the type);
    Linear kernels share `workspace` for their train-side per-example gradients."""
    module = tracked.module
    if isinstance(module, nn.Linear):
        return LinearKernel(tracked, dtype, linear_mode, workspace)
    if isinstance(module, nn.Embedding):
        return EmbeddingKernel(tracked, dtype)
    if isinstance(module, nn.LayerNorm):
        return LayerNormKernel(tracked, dtype)
    raise TypeError(f"no TracIn kernel for {type(module).__name__} ({tracked.name})")
