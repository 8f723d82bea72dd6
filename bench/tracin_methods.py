"""The methods bench/tracin.py compares, each run in its own worker process.

A runner gets the model (tiny preset, on the device), the checkpoint list and the data, and
returns the lr-weighted TracIn matrix summed over checkpoints, (n_test, n_train) float64 with
the columns it covered (Captum may cover a subset), or None for the training yardstick.
Runners open `clock` around exactly the part that is timed. A peer too slow or too big for
the whole set runs on seeded subsets of train and test rows and returns `Scored.full_seconds`,
its time for the whole set built from the parts it timed (see `scale_parts`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import psutil
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tracin_setup import (
    PAD,
    Batch,
    autocast,
    forward_autocast,
    group_filter,
    load_checkpoint,
    pad_batches,
)
from transformers import get_linear_schedule_with_warmup

from xlinfluence.analysis.topk import StreamingTopK
from xlinfluence.tracin import engine, reference_scores
from xlinfluence.tracin.memory import plan_test_side
from xlinfluence.tracin.reference import per_example_gradients
from xlinfluence.tracin.selection import parameter_filter


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    group: str  # parameter group covered: all, linear, embeddings
    kind: str  # xlinfluence, captum, autograd, reference, dattri, floor, train, memory
    peer: bool  # skipped with --skip-peers
    row: bool = True  # a table row (ground-truth-only runs are kept in the JSON)


METHODS = [
    Method("xlinfluence", "xlinfluence", "all", "xlinfluence", False),
    Method("xlinfluence_linear", "xlinfluence, Linear only", "linear", "xlinfluence", False),
    Method(
        "xlinfluence_embeddings", "xlinfluence, embeddings only", "embeddings", "xlinfluence", False
    ),
    Method("captum", "Captum TracInCP", "all", "captum", True),
    Method("captum_samplewise", "Captum TracInCP sample-wise", "linear", "captum", True),
    Method("autograd_fp32", "plain autograd loop, fp32", "all", "autograd", True),
    Method("reference_fp64", "per-example loop, float64", "all", "reference", True),
    Method("reference_fp64_linear", "float64 truth, Linear", "linear", "reference", True, False),
    Method(
        "reference_fp64_embeddings",
        "float64 truth, embeddings",
        "embeddings",
        "reference",
        True,
        False,
    ),
    Method("dattri_llm", "dattri-llm, exact", "all", "dattri", True),
    Method("dattri_llm_linear", "dattri-llm, exact, Linear only", "linear", "dattri", True),
    Method("floor", "floor: forward + input-gradient backward", "all", "floor", False),
    Method("train_epoch", "training epoch (shuffled)", "all", "train", False),
    Method("train_epoch_bucketed", "training epoch (length-bucketed)", "all", "train", False),
    # e5-sib200 only: xlinfluence's own training loop on the shuffled epoch's batches
    Method("train_step", "train step (training.fine_tune)", "all", "train", False),
    # --memory-n: peak memory against N, not table rows
    Method("memory_topk", "top-k streamed", "all", "memory", False, False),
    Method("memory_full", "full M x N matrix", "all", "memory", False, False),
]
BY_NAME = {m.name: m for m in METHODS}


class Clock:
    """Wall time of the `with clock:` block(s), synchronising the GPU at both ends.

    Also the CPU time other processes used meanwhile (`other_cpu_s`): on a shared machine
    they contend for the cores and the timings inflate, badly with several torch threads.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self.other_cpu_s = 0.0
        self._process = psutil.Process()

    def _busy(self) -> tuple[float, float]:
        machine = psutil.cpu_times()
        mine = self._process.cpu_times()
        return machine.user + machine.system + machine.nice, mine.user + mine.system

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Clock:
        self._sync()
        self._start = time.perf_counter()
        self._cpu = self._busy()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start
        (machine, mine), (machine0, mine0) = self._busy(), self._cpu
        self.other_cpu_s += max(0.0, (machine - machine0) - (mine - mine0))


@dataclass
class Context:
    args: argparse.Namespace
    model: nn.Module
    checkpoints: list[tuple[str, float]]
    train: list[dict]  # examples
    test: list[dict]
    train_batches: list[Batch]  # length-bucketed, as xlinfluence's influence step batches
    test_batches: list[Batch]
    groups: dict[str, set[str]]
    clock: Clock

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_test(self) -> int:
        return len(self.test)


def test_side(ctx: Context, keep) -> tuple[int, str]:
    """(test chunk, "keep" or "reform") as the influence step plans them, from the test
    examples' lengths in the order the chunks cut them and the longest train example:
    --test-chunk-size (default: the whole test set; 0: as many as fit the cache budget)
    and --test-gradients."""
    order = engine.block_index(ctx.test_batches).tolist()
    given = ctx.n_test if ctx.args.test_chunk_size is None else ctx.args.test_chunk_size
    chunk, way = plan_test_side(
        ctx.model, keep, next(ctx.model.parameters()).device, ctx.n_test,
        test_lengths=[len(ctx.test[i]["input_ids"]) for i in order],
        train_length=max(len(e["input_ids"]) for e in ctx.train),
        test_chunk_size=given, test_gradients=ctx.args.test_gradients,
    )  # fmt: skip
    print(f"[tracin bench] test side: {chunk} of {ctx.n_test} test examples per chunk, {way}")
    return chunk, way


def run_xlinfluence(ctx: Context, method: Method) -> Scored:
    """sum_c lr_c * checkpoint_scores(theta_c), over the method's parameter group."""
    scores = torch.zeros(ctx.n_test, ctx.n_train, dtype=torch.float64)
    keep = group_filter(ctx.groups, method.group)
    chunk, way = test_side(ctx, keep)
    with ctx.clock:
        for path, _ in ctx.checkpoints:
            lr = load_checkpoint(ctx.model, path)
            with forward_autocast(ctx.model, ctx.args):
                block = engine.checkpoint_scores(
                    ctx.model,
                    ctx.train_batches,
                    ctx.test_batches,
                    n_train=ctx.n_train,
                    n_test=ctx.n_test,
                    param_filter=keep,
                    test_chunk_size=chunk,
                    contraction_rows=ctx.args.contraction_rows,
                    test_gradients=way,
                )
            scores += lr * block.double()
    return Scored(scores, list(range(ctx.n_train)))


class LogitsFromIds(nn.Module):
    """Captum calls model(*inputs) with one padded tensor: derive the mask from the pad id.

    Real tokens never use the pad id here, so the mask is exact and padding gets no gradient.
    """

    def __init__(self, model: nn.Module, pad_id: int = PAD):
        super().__init__()
        self.model = model
        self.pad_id = pad_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, C)
        mask = (input_ids != self.pad_id).long()
        return self.model(input_ids=input_ids, attention_mask=mask).logits.float()


def _subset(n_all: int, n: int | None, seed: int) -> list[int]:
    if n is None or n >= n_all:
        return list(range(n_all))
    gen = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_all, generator=gen)[:n].tolist())


def train_subset(ctx: Context, n: int | None) -> list[int]:
    """Train indices a slow method scores: all, or a seeded random sample of n (the same
    sample for Captum and the references, so their errors compare on shared columns).

    Random, not the first rows, so the sample has the set's length mix (batches are bucketed).
    """
    return _subset(ctx.n_train, n, ctx.args.seed + 7)


def test_subset(ctx: Context) -> list[int]:
    """Test indices the peers score (--peer-n-test): all, or one seeded random sample shared
    by Captum, the autograd loop and the references."""
    return _subset(ctx.n_test, ctx.args.peer_n_test, ctx.args.seed + 11)


def subset_batches(ctx: Context, cols: list[int], *, test: bool = False) -> list[Batch]:
    """Bucketed batches of the train (or test) rows `cols`, index renumbered 0..len(cols)-1."""
    source = ctx.test if test else ctx.train
    subset = [dict(source[i], index=k) for k, i in enumerate(cols)]
    size = (ctx.args.influence_batch_size or ctx.args.batch_size) if test else ctx.args.batch_size
    return pad_batches(subset, size, bucket=True)


@dataclass
class Scored:
    """A runner's result: scores (n_rows, n_cols) over the test `rows` and train `cols` it
    covered (None for the yardsticks), and for a peer run on subsets, its estimated seconds
    over the whole train and test sets at every checkpoint."""

    scores: torch.Tensor | None
    cols: list[int]
    rows: list[int] | None = None
    full_seconds: float | None = None
    parts: dict | None = None


def scale_parts(
    ctx: Context, *, test_s: float, train_s: float, pair_s: float, n_rows: int, n_cols: int
) -> float:
    """Seconds for the whole set from a subset run's parts (each the subset's total): test-side
    work grows with the test rows, per-train-example work with the train rows, pairwise work
    with both."""
    m, n = ctx.n_test / n_rows, ctx.n_train / n_cols
    return m * test_s + n * train_s + m * n * pair_s


def run_captum(ctx: Context, method: Method) -> Scored:
    """captum.influence.TracInCP on the same checkpoints and lr weights.

    All-parameter mode (sample_wise_grads_per_batch=False) takes one autograd call per
    example and needs a per-example loss (Captum asserts reduction="none" there); the
    sample-wise mode takes a summed loss and covers nn.Linear (and Conv2d) layers only.

    Runs what `TracInCP.influence` runs (Captum 0.9's `_influence`: the test jacobians at
    every checkpoint, then one `_influence_batch_tracincp` per train batch), timing the two
    parts; on a test subset a second, untimed-in-total train pass against a fifth of its rows
    separates per-example train gradients from the pairwise products, so `scale_parts` can
    estimate the whole set (Captum holds every test gradient: 13 GB at 125 x 26M).
    """
    from captum.influence import TracInCP

    sample_wise = method.kind == "captum" and method.group == "linear"
    device = next(ctx.model.parameters()).device
    cols, rows = train_subset(ctx, ctx.args.captum_n_train), test_subset(ctx)
    train_batches = subset_batches(ctx, cols)  # index: column in the subset
    test_batches = subset_batches(ctx, rows, test=True)
    order = torch.cat([b["index"] for b in train_batches])  # Captum's columns, in loader order
    test_order = torch.cat([b["index"] for b in test_batches])
    as_tuples = lambda bs: [(b["input_ids"].to(device), b["labels"].to(device)) for b in bs]  # noqa: E731
    train_loader = DataLoader(as_tuples(train_batches), batch_size=None)
    test_loader = DataLoader(as_tuples(test_batches), batch_size=None)

    wrapped = LogitsFromIds(ctx.model)
    layers = None
    if sample_wise:
        linear = {n.rpartition(".")[0] for n in ctx.groups["linear"]}
        layers = [f"model.{n}" for n in sorted(linear)]
    tracin = TracInCP(
        wrapped,
        train_loader,
        [path for path, _ in ctx.checkpoints],
        checkpoints_load_func=lambda m, path: load_checkpoint(m.model, path),
        layers=layers,
        loss_fn=nn.CrossEntropyLoss(reduction="sum" if sample_wise else "none"),
        sample_wise_grads_per_batch=sample_wise,
    )

    def train_pass(jacobians) -> tuple[torch.Tensor, float]:
        clock = Clock(device)
        with clock:
            out = torch.cat(
                [tracin._influence_batch_tracincp(jacobians, b) for b in train_loader], dim=1
            )
        return out, clock.seconds

    # fp32 always: the sample-wise mode fails on bf16 activations
    test_clock = Clock(device)
    with test_clock:
        jacobians = tracin._get_checkpoint_jacobians(test_loader, False, tracin.test_loss_fn)
    raw, train_s = train_pass(jacobians)  # (len(rows), len(cols)), loader orders
    ctx.clock.seconds += test_clock.seconds + train_s
    few = max(1, len(rows) // 5)
    pair_s, few_s = 0.0, None  # pairwise products of the whole subset
    if len(rows) < ctx.n_test and few < len(rows):
        _, few_s = train_pass([tuple(j[:few] for j in ck) for ck in jacobians])
        pair_s = max(0.0, (train_s - few_s) * len(rows) / (len(rows) - few))
    parts = {"test_s": test_clock.seconds, "train_s": train_s - pair_s}
    scores = torch.zeros(len(rows), len(cols), dtype=torch.float64)
    scores[test_order.unsqueeze(1), order.unsqueeze(0)] = raw.detach().double().cpu()
    full = scale_parts(ctx, **parts, pair_s=pair_s, n_rows=len(rows), n_cols=len(cols))
    parts.update(pair_s=pair_s, train_pass_s=train_s, train_pass_few_rows_s=few_s, few_rows=few)
    return Scored(scores, cols, rows, full, parts)


def run_autograd(ctx: Context, method: Method) -> Scored:
    """The plain fp32 loop anyone would write first: per-example autograd over every
    parameter, flattened (the reference's loop, in fp32), then one fp32 product of the test
    gradients with each train batch's. Timed by part (test side, train gradients,
    products) for `scale_parts`."""
    cols, rows = train_subset(ctx, ctx.args.reference_n_train), test_subset(ctx)
    train_batches = subset_batches(ctx, cols)
    test_batches = subset_batches(ctx, rows, test=True)
    device, fp32 = next(ctx.model.parameters()).device, torch.float32
    params = [p for p in ctx.model.parameters() if p.requires_grad]
    clocks = {part: Clock(device) for part in ("test_s", "train_s", "products_s")}
    scores = torch.zeros(len(rows), len(cols), dtype=torch.float64)
    ctx.model.eval()
    for path, _ in ctx.checkpoints:
        lr = load_checkpoint(ctx.model, path)
        with clocks["test_s"]:
            test = per_example_gradients(ctx.model, test_batches, len(rows), params, fp32)
        for b in train_batches:
            with clocks["train_s"]:
                train = per_example_gradients(
                    ctx.model, [dict(b, index=torch.arange(len(b["labels"])))],
                    len(b["labels"]), params, fp32,
                )  # fmt: skip
            with clocks["products_s"]:
                block = test @ train.T  # (rows, B)
            scores[:, b["index"]] += lr * block.double().cpu()
        del test
    parts = {k: c.seconds for k, c in clocks.items()}
    ctx.clock.seconds += sum(parts.values())
    full = scale_parts(
        ctx, test_s=parts["test_s"], train_s=parts["train_s"],
        pair_s=parts["products_s"], n_rows=len(rows), n_cols=len(cols),
    )  # fmt: skip
    return Scored(scores, cols, rows, full, parts)


def _reference_chunks(batches: list[Batch], size: int):
    """Groups of batches holding about `size` examples, with index renumbered 0..k-1.

    Bounds the reference's (examples x parameters) float64 matrix; yields (batches, columns).
    """
    group: list[Batch] = []
    for b in batches + [None]:
        n = sum(len(g["labels"]) for g in group)
        if group and (b is None or n + len(b["labels"]) > size):
            cols = torch.cat([g["index"] for g in group])
            ids = torch.arange(len(cols)).split([len(g["labels"]) for g in group])
            yield [dict(g, index=i) for g, i in zip(group, ids, strict=True)], cols
            group = []
        if b is not None:
            group.append(b)


def run_reference(ctx: Context, method: Method) -> Scored:
    """xlinfluence.tracin.reference_scores per checkpoint on a float64 copy, lr-weighted."""
    model = ctx.model.to(torch.float64)
    subset, rows = train_subset(ctx, ctx.args.reference_n_train), test_subset(ctx)
    test_batches = subset_batches(ctx, rows, test=True)
    scores = torch.zeros(len(rows), len(subset), dtype=torch.float64)
    param_filter = group_filter(ctx.groups, method.group)
    with ctx.clock:
        for path, _ in ctx.checkpoints:
            lr = load_checkpoint(model, path)
            for batches, cols in _reference_chunks(
                subset_batches(ctx, subset), ctx.args.reference_chunk
            ):
                block = reference_scores(
                    model,
                    batches,
                    test_batches,
                    n_train=len(cols),
                    n_test=len(rows),
                    param_filter=param_filter,
                )
                scores[:, cols] += lr * block
    return Scored(scores, subset, rows)


def _fine_tune_batches(ctx: Context) -> list[Batch]:
    """The train step's first-epoch batches (e5-sib200): its seeded shuffle, unbucketed."""
    from tracin_setup import real

    from xlinfluence.data.batching import TokenizedExamples
    from xlinfluence.training import epoch_batches

    splits, built = real(ctx.args)
    examples = TokenizedExamples(splits.train, built.tokenizer, ctx.args.max_len)
    return epoch_batches(examples, ctx.args.batch_size, 1, ctx.args.seed)


def run_train_step(ctx: Context) -> None:
    """xlinfluence's training.fine_tune for one epoch from checkpoint 0 on the e5-sib200
    rows, nothing saved, evaluated on one test row (so the timing is the training loop)."""
    from accelerate import Accelerator
    from tracin_setup import real

    from xlinfluence.training import fine_tune

    splits, built = real(ctx.args)
    load_checkpoint(ctx.model, ctx.checkpoints[0][0])
    accelerator = Accelerator(cpu=ctx.clock.device.type == "cpu")
    with ctx.clock:
        fine_tune(ctx.model, built.tokenizer, splits.train, splits.test.iloc[:1], epochs=1,
                  batch_size=ctx.args.batch_size, learning_rate=ctx.args.lr, weight_decay=0.01,
                  warmup_ratio=0.1, max_length=ctx.args.max_len, seed=ctx.args.seed,
                  accelerator=accelerator, checkpoint_root=None,
                  on_epoch_end=lambda *_: None)  # fmt: skip


def run_training(ctx: Context, method: Method) -> Scored:
    """One epoch from checkpoint 0: forward, mean cross-entropy, backward, AdamW step with
    fine_tune's linear warmup schedule; the plain loop the train step is compared with.

    e5-sib200's shuffled epoch runs on exactly the train step's batches.
    """
    if method.name == "train_step":
        if ctx.args.model != "e5-sib200":
            raise SystemExit("train_step needs --model e5-sib200 (fine_tune takes real rows)")
        run_train_step(ctx)
        return Scored(None, list(range(ctx.n_train)))
    bucket = method.name == "train_epoch_bucketed"
    if ctx.args.model == "e5-sib200" and not bucket:
        batches = _fine_tune_batches(ctx)
    else:
        batches = pad_batches(
            ctx.train,
            ctx.args.batch_size,
            bucket=bucket,
            shuffle_seed=None if bucket else ctx.args.seed,
        )
    model = ctx.model
    device = next(model.parameters()).device
    load_checkpoint(model, ctx.checkpoints[0][0])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=ctx.args.lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(opt, int(0.1 * len(batches)), len(batches))
    with ctx.clock:
        for b in batches:
            with autocast(ctx.args):
                logits = model(
                    input_ids=b["input_ids"].to(device),
                    attention_mask=b["attention_mask"].to(device),
                ).logits
            F.cross_entropy(logits.float(), b["labels"].to(device)).backward()
            opt.step()
            schedule.step()
            opt.zero_grad(set_to_none=True)
    return Scored(None, list(range(ctx.n_train)))


def run_floor(ctx: Context, method: Method) -> Scored:
    """Per checkpoint, over the bucketed train batches: the forward and a backward that
    computes only input gradients (weights frozen, the word embeddings' output the leaf), so
    every layer passes its input gradient down and no weight gradient is formed. Exact
    TracIn needs at least this per train example; the pairwise products come on top."""
    model = ctx.model
    device = next(model.parameters()).device
    embeddings = model.get_input_embeddings()
    captured = []

    def leaf(_module, _inputs, output):
        output = output.detach().requires_grad_()
        captured.append(output)
        return output

    for p in model.parameters():
        p.requires_grad_(False)
    handle = embeddings.register_forward_hook(leaf)
    try:
        with ctx.clock:
            for path, _ in ctx.checkpoints:
                load_checkpoint(model, path)
                for b in ctx.train_batches:
                    captured.clear()
                    with forward_autocast(model, ctx.args):
                        logits = model(
                            input_ids=b["input_ids"].to(device),
                            attention_mask=b["attention_mask"].to(device),
                        ).logits
                    loss = F.cross_entropy(logits.float(), b["labels"].to(device), reduction="sum")
                    torch.autograd.grad(loss, captured)
    finally:
        handle.remove()
        for p in model.parameters():
            p.requires_grad_(True)
    return Scored(None, list(range(ctx.n_train)))


def run_dattri(ctx: Context, method: Method) -> Scored:
    from tracin_dattri import run_dattri_llm

    return Scored(*run_dattri_llm(ctx, method))


def run_memory(ctx: Context, method: Method) -> Scored:
    """Score the train set at the first checkpoint keeping only the streamed top-k
    (memory_topk, the influence step's plan with store_scores=false) or the whole
    (M, N) matrix (memory_full), over --memory-params; the worker reports the peak RSS."""
    load_checkpoint(ctx.model, ctx.checkpoints[0][0])
    keep = parameter_filter(ctx.args.memory_params, ctx.model)
    full = method.name == "memory_full"
    with ctx.clock, engine.CheckpointScorer(ctx.model, keep) as scorer:
        test = scorer.test_cache(ctx.test_batches)
        topk = StreamingTopK(ctx.n_test, ctx.args.top_k)
        scores = torch.zeros(ctx.n_test, ctx.n_train) if full else None
        for batches in engine.row_blocks(ctx.train_batches, ctx.args.contraction_rows):
            block = scorer.train_block(batches, test)[0].T.float().cpu()  # (M, B)
            index = engine.block_index(batches)
            if full:
                scores[test.index.unsqueeze(1), index.unsqueeze(0)] = block
            else:
                topk.update(block, test.index, index)
        if full:
            topk.update(scores, test.index, torch.arange(ctx.n_train))
        topk.result()
    return Scored(None, list(range(ctx.n_train)))


RUNNERS = {
    "xlinfluence": run_xlinfluence,
    "captum": run_captum,
    "autograd": run_autograd,
    "reference": run_reference,
    "train": run_training,
    "floor": run_floor,
    "dattri": run_dattri,
    "memory": run_memory,
}


def warm_up(ctx: Context) -> None:
    """One untimed forward and backward, so no method pays for lazy initialisation."""
    b = ctx.train_batches[-1]
    device = next(ctx.model.parameters()).device
    with autocast(ctx.args):
        logits = ctx.model(
            input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)
        ).logits
    F.cross_entropy(logits.float(), b["labels"].to(device)).backward()
    ctx.model.zero_grad(set_to_none=True)
