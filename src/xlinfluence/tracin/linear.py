"""The exact TracIn contraction for nn.Linear: ghost products or formed per-example gradients,
whichever costs less, per train batch and test length group."""

from __future__ import annotations

import torch

from xlinfluence.errors import ConfigError
from xlinfluence.tracin.hooks import TrackedModule
from xlinfluence.tracin.layers import Cache, LayerKernel, _tokens

LINEAR_MODES = ("auto", "per_example", "ghost")
#: How a test chunk holds the gradients ghost products do not serve: "keep" forms each
#: once and holds it (d_in d_out per example and Linear: 10.5 GB for SIB-200's 125 test
#: sentences on e5-small); "reform" holds the live tokens' inputs and output-gradients
#: where those are smaller and forms the gradients a block needs into one buffer every
#: Linear kernel shares, again for every block: one more forming of the test side per
#: block, for a 6.7 GB peak instead of 15.8 there (bench/README.md).
TEST_GRADIENTS = ("keep", "reform")


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


def _live_lengths(g: torch.Tensor) -> torch.Tensor:
    """(M, T, d) -> (M,) one past each example's last position with a nonzero gradient."""
    live = (g.abs().amax(dim=2) != 0).int()  # (M, T); NaN and inf count as live
    last = live.shape[1] - live.flip(1).argmax(dim=1)  # (M,)
    return torch.where(live.any(dim=1), last, torch.zeros_like(last))


#: Test examples whose live lengths differ by at most this factor share a length group.
GROUP_RATIO = 1.5


class Workspace:
    """One scratch buffer the Linear kernels share for a block's per-example gradients
    (one for the train rows', one for the test side's when it is re-formed): each kernel is
    done with them before the next one starts. Tensors this large go back to the OS when
    freed, so a fresh one per batch and layer re-faults its pages every time; in a VM that
    first touch cost about as much as the products."""

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
            self._buffer = None  # freed first, so the old and new never coexist
            buffer = self._buffer = torch.empty(numel, dtype=dtype, device=device)
        return buffer[:numel]


class LinearKernel(LayerKernel):
    """nn.Linear: grad W = sum_t g_t a_t^T per example, grad b = sum_t g_t.

    Two exact ways to get <grad W, grad W'>:
      per_example  form grad W for each train example, one matmul with cached test grads;
                   costs ~ (B T + B M) d_in d_out.
      ghost        sum_{t,s} (a_t . a'_s)(g_t . g'_s) from cached test a', g';
                   costs ~ B M T T' (d_in + d_out).
    with T the train batch's padded length and T' the test example's live length (positions
    with no output gradient dropped, `_live_positions`). The test chunk is cut into groups of
    similar live length (within GROUP_RATIO); ghost runs over a group's live tokens, none
    padded. "auto" picks, per train batch, the split of the groups into a ghost prefix and
    a formed suffix that costs least, counting the forming of the batch's own gradients
    once (`_first_per_example`). Groups where ghost can never win per pair (T' >= d_in d_out
    / (d_in + d_out), the measured crossover: 64 for 128x128, 384 for 768x768) have their
    per-example test grads formed up front and their tokens dropped; the others keep raw
    a', g' and are formed only if some train batch needs them (`_formed`: into one matrix
    per call that needs more, contracted in one product). With test_gradients="reform"
    those are formed afresh for every block, into `test_workspace`, and never kept.
    """

    def __init__(
        self,
        tracked: TrackedModule,
        dtype: torch.dtype,
        mode: str = "auto",
        workspace: Workspace | None = None,
        test_gradients: str = "keep",
        test_workspace: Workspace | None = None,
    ):
        super().__init__(tracked, dtype)
        if mode not in LINEAR_MODES:
            raise ConfigError(f"linear_mode must be one of {LINEAR_MODES}, got {mode!r}")
        if test_gradients not in TEST_GRADIENTS:
            raise ConfigError(
                f"test_gradients must be one of {TEST_GRADIENTS}, got {test_gradients!r}"
            )
        self.reform = test_gradients == "reform"
        self.mode = mode
        self.workspace = workspace or Workspace()
        self.test_workspace = test_workspace or Workspace()
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
            cache.update(self._length_groups(pieces), m=sum(len(p["length"]) for p in pieces))
            cache["formed"] = []  # segments of formed test gradients, in group order
            groups = cache["groups"]
            # groups where ghost loses even to a one-token train example (so their tokens
            # take more room than their gradients): formed now and their tokens dropped (the
            # groups' tokens are in group order, so a suffix)
            never_ghost = [i for i, grp in enumerate(groups) if not self.use_ghost(1, grp["t"])]
            cache["kept"] = never_ghost[0] if never_ghost else len(groups)  # groups with tokens
            if never_ghost:
                cache["formed"].append(self._segment(cache, never_ghost[0], len(groups)))
                kept = groups[never_ghost[0]]["tokens"][0]
                for key in ("a", "g", "row", "pos"):
                    cache[key] = cache[key][:kept].clone()
        return cache

    def _length_groups(self, pieces: list[Cache]) -> Cache:
        """The chunk's test examples by live length, shortest first, and their live tokens.

        Returns "groups": [{"index" (M_g,) positions in the chunk, "t" T'_g its longest,
        "tokens" and "rows" (start, end) of its tokens and examples in the flat order}],
        "order" (M_live,) chunk positions in group order, and the live tokens of those
        examples one after another: "a" (N, d_in), "g" (N, d_out), "row" (N,) each token's
        example in group order, "pos" (N,) its position in that example. Ghost products
        run over these tokens, none padded; a group is padded to T'_g only to form its
        gradients."""
        lengths = torch.cat([p["length"] for p in pieces]).cpu()  # (M,)
        by_length = torch.argsort(lengths, stable=True).tolist()
        bounds, first = [], None
        for pos in by_length:
            length = int(lengths[pos])
            if length == 0:
                continue  # no gradient reaches this module for that example: scores are 0
            if first is None or length > GROUP_RATIO * first:
                bounds.append([])
                first = length
            bounds[-1].append(pos)
        device = pieces[0]["a"].device
        members = [m for group in bounds for m in group]
        groups, tokens, rows = [], 0, 0
        for group in bounds:
            n = sum(int(lengths[m]) for m in group)
            groups.append({
                "index": torch.tensor(group, device=device), "t": int(lengths[group[-1]]),
                "tokens": (tokens, tokens + n), "rows": (rows, rows + len(group)),
            })  # fmt: skip
            tokens, rows = tokens + n, rows + len(group)
        order = torch.tensor(members, dtype=torch.long, device=device)
        sizes = lengths[members].to(device)
        row = torch.repeat_interleave(torch.arange(len(order), device=device), sizes)
        pos = torch.arange(len(row), device=device) - (torch.cumsum(sizes, 0) - sizes)[row]
        where = [(k, i) for k, p in enumerate(pieces) for i in range(len(p["length"]))]
        factors = {}
        for key in ("a", "g"):  # one copy: each example's live rows, in group order
            live = [pieces[where[m][0]][key][where[m][1], : int(lengths[m])] for m in members]
            factors[key] = torch.cat(live) if live else pieces[0][key][:0, 0]
        return {
            "groups": groups,
            "order": order,
            "row": row,
            "pos": pos,
            **factors,
        }

    def _group_factors(self, cache: Cache, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """groups[i]'s tokens padded to its longest: (M_g, T'_g, d_in), (M_g, T'_g, d_out)."""
        group = cache["groups"][i]
        (t0, t1), r0 = group["tokens"], group["rows"][0]
        row, pos = cache["row"][t0:t1] - r0, cache["pos"][t0:t1]
        padded = []
        for key in ("a", "g"):
            flat = cache[key][t0:t1]
            out = flat.new_zeros(len(group["index"]), group["t"], flat.shape[1])
            out[row, pos] = flat
            padded.append(out)
        return padded[0], padded[1]

    def _segment(
        self, cache: Cache, start: int, end: int, workspace: Workspace | None = None
    ) -> Cache:
        """groups[start:end]'s test gradients formed into one (M_s, d_out d_in) matrix
        ("grads": a tensor of its own, or `workspace`'s buffer), with the chunk positions of
        its rows ("index") and each group's first row ("offsets")."""
        groups = cache["groups"][start:end]
        rows = [len(grp["index"]) for grp in groups]
        shape, device = (sum(rows), self.d_out * self.d_in), groups[0]["index"].device
        if workspace is None:
            out = torch.empty(shape, dtype=self.dtype, device=device)
        else:
            out = workspace.take(shape[0] * shape[1], self.dtype, device).view(shape)
        self._per_example_rows((self._group_factors(cache, i) for i in range(start, end)), out)
        index = torch.cat([grp["index"] for grp in groups])
        offsets = [sum(rows[:i]) for i in range(len(rows) + 1)]
        return {"from": start, "to": end, "index": index, "grads": out, "offsets": offsets}

    def _formed(self, cache: Cache, first: int) -> list[Cache]:
        """Segments that together hold the formed test gradients of groups[first:].

        Formed groups are a suffix of the (shortest-first) groups. What is missing is formed
        as one segment, so a block contracts it in one product. "keep" adds it to the cache
        (nothing is formed twice); "reform" forms it into the shared test workspace for this
        block only (valid until the next kernel forms its own)."""
        segments = cache["formed"]
        missing_to = segments[0]["from"] if segments else len(cache["groups"])
        if first >= missing_to:
            return segments
        if not self.reform:
            segments.insert(0, self._segment(cache, first, missing_to))
            return segments
        return [self._segment(cache, first, missing_to, self.test_workspace), *segments]

    @staticmethod
    def _group_grads(segments: list[Cache], i: int) -> torch.Tensor:
        """The formed test gradients of groups[i] (M_g, d_out d_in): its segment's rows."""
        for seg in segments:
            if seg["from"] <= i < seg["to"]:
                row = seg["offsets"][i - seg["from"]]
                return seg["grads"][row : seg["offsets"][i - seg["from"] + 1]]
        raise KeyError(f"group {i} is not formed")

    @staticmethod
    def _test_grads(segments: list[Cache], start: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(index, test grads)] of groups[start:], all formed: one entry per segment."""
        pieces = []
        for seg in segments:
            if seg["to"] > start:
                row = seg["offsets"][max(start - seg["from"], 0)]
                pieces.append((seg["index"][row:], seg["grads"][row:]))
        return pieces

    def _train_grads(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """These batches' per-example gradients (B, d_out d_in), one after another, in the
        shared workspace (valid until the next kernel forms its own)."""
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
    def _ghost(a: torch.Tensor, g: torch.Tensor, cache: Cache, upto: int) -> torch.Tensor:
        """(B, R) against the first R test examples in group order (groups[:upto]), from
        the factors alone: sum_{t,s} (a_t . a'_s)(g_t . g'_s), over their live tokens only."""
        last = cache["groups"][upto - 1]
        n, rows = last["tokens"][1], last["rows"][1]
        B, T, _ = a.shape
        aa = a.reshape(B * T, -1) @ cache["a"][:n].T  # (B T, N)
        gg = g.reshape(B * T, -1) @ cache["g"][:n].T  # (B T, N)
        per_token = aa.mul_(gg).view(B, T, n).sum(1)  # (B, N)
        out = per_token.new_zeros(B, rows)
        return out.index_add_(1, cache["row"][:n], per_token)

    def _first_per_example(self, t_train: int, cache: Cache) -> int:
        """The first group a train batch of t_train tokens contracts through formed
        gradients (len(groups): none); ghost products serve the groups before it.

        "auto" takes the split of least work per train example: a group of M_g examples
        and N_g live tokens costs t_train N_g (d_in + d_out) by ghost, M_g d_in d_out through
        formed gradients, plus t_train d_in d_out once to form the batch's own. Counting that
        once is what sends a short batch against a few long test examples to ghost. Groups
        formed at build have no tokens left, so they are always contracted formed."""
        groups, kept = cache["groups"], cache["kept"]
        if self.mode != "auto":
            return kept  # ghost: every group kept its tokens; per_example: none did
        width, area = self.d_in + self.d_out, self.d_in * self.d_out
        ghost = [t_train * (grp["tokens"][1] - grp["tokens"][0]) * width for grp in groups]
        formed = [len(grp["index"]) * area for grp in groups]
        best, cheapest = len(groups), None
        for first in range(kept + 1):
            cost = sum(ghost[:first])
            if first < len(groups):
                cost += t_train * area + sum(formed[first:])
            if cheapest is None or cost < cheapest:
                best, cheapest = first, cost
        return best

    def _weight_scores(self, batches, cache) -> tuple[torch.Tensor, list]:
        """(B, M) weight part of a block, and each batch's train grads (B_i, d_out d_in)
        where it formed them (else None).

        Each batch takes the groups before its split (`_first_per_example`) in one ghost
        product over their live tokens. The batches that form their gradients form them
        together and contract them with the formed test gradients in as few products as
        possible: the groups all of them take that way are one product when they were
        formed together, so a block reads the test gradients once and the product runs at
        the core's matmul speed (a product per length group, SIB-200's 4, made blocks
        1.22-1.31x slower: bench/README.md). Groups between the splits go group by group."""
        rows = [a.shape[0] for a, _ in batches]
        offsets = [sum(rows[:i]) for i in range(len(rows))]
        out = torch.zeros(sum(rows), cache["m"], dtype=self.dtype, device=batches[0][0].device)
        groups = cache["groups"]
        starts = [self._first_per_example(a.shape[1], cache) for a, _ in batches]
        for (a, g), s, n, first in zip(batches, offsets, rows, starts, strict=True):
            if first > 0:  # one product over the live tokens of every group it takes by ghost
                upto = groups[first - 1]["rows"][1]
                out[s : s + n].index_copy_(
                    1, cache["order"][:upto], self._ghost(a, g, cache, first)
                )
        forming = [i for i, first in enumerate(starts) if first < len(groups)]
        grads: list = [None] * len(batches)
        if not forming:
            return out, grads
        segments = self._formed(cache, min(starts[i] for i in forming))
        w = self._train_grads([batches[i] for i in forming])
        part = out if len(forming) == len(batches) else out.new_zeros(len(w), cache["m"])
        common, row = max(starts[i] for i in forming), 0  # from common on: all formed
        for i in forming:
            grads[i] = w[row : row + rows[i]]
            for k in range(starts[i], common):
                test = self._group_grads(segments, k)
                part[row : row + rows[i]].index_copy_(1, groups[k]["index"], grads[i] @ test.T)
            row += rows[i]
        for index, test in self._test_grads(segments, common):
            part.index_copy_(1, index, w @ test.T)
        if part is not out:  # its rows are zero where those batches took ghost
            where = [torch.arange(offsets[i], offsets[i] + rows[i]) for i in forming]
            out.index_add_(0, torch.cat(where).to(out.device), part)
        return out, grads

    def train_scores(self, batches, cache, with_self):
        batches = [self._tokens(x, g) for x, g in batches]
        block, own = 0, 0
        if self.bias:
            gb = torch.cat([g.sum(1) for _, g in batches])  # (B, d_out)
            block = gb @ cache["gb"].T  # (B, M)
            own = (gb * gb).sum(1) if with_self else 0
        if self.weight:
            part, grads = self._weight_scores(batches, cache)
            block = block + part
            if with_self:
                own = own + self._weight_self(batches, grads)
        return block, own if with_self else None

    def self_scores(self, x, g):
        a, g = self._tokens(x, g)
        own = 0
        if self.bias:
            gb = g.sum(1)
            own = (gb * gb).sum(1)
        if self.weight:
            own = own + self._weight_self([(a, g)], [None])
        return own

    def _weight_self(self, batches, grads: list) -> torch.Tensor:
        """(B,) ||grad W||^2 per example: from a batch's formed grads where it has them, else
        the ghost identity of each example with itself (T^2 (d_in + d_out) per example) when
        that is cheaper than forming them (T d_in d_out)."""
        own = []
        for (a, g), w in zip(batches, grads, strict=True):
            if w is None and self.use_ghost(a.shape[1], 1):  # T^2 (d_in+d_out) < T d_in d_out
                aa = torch.bmm(a, a.transpose(1, 2))  # (B, T, T)
                gg = torch.bmm(g, g.transpose(1, 2))
                own.append((aa * gg).sum((1, 2)))
            else:
                w = self._per_example(a, g) if w is None else w
                own.append((w * w).sum(1))
        return torch.cat(own)
