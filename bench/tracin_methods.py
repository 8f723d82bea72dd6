"""The methods bench/tracin.py compares, each run in its own worker process.

A runner gets the model (tiny preset, on the device), the checkpoint list and the data, and
returns the lr-weighted TracIn matrix summed over checkpoints, (n_test, n_train) float64 with
the columns it covered (Captum may cover a subset), or None for the training yardstick.
Runners open `clock` around exactly the part that is timed.
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
from xlinfluence.tracin.memory import auto_test_chunk
from xlinfluence.tracin.selection import parameter_filter


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    group: str  # parameter group covered: all, linear, embeddings
    kind: str  # xlinfluence, captum, reference, train
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
    Method("reference_fp32", "per-example loop, fp32 model", "all", "reference", True),
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


def test_chunk(ctx: Context, keep) -> int | None:
    """--test-chunk-size; 0: as the influence step sizes it from the test examples' lengths
    in the order the chunks cut them, and the longest train example."""
    if ctx.args.test_chunk_size != 0:
        return ctx.args.test_chunk_size
    order = engine.block_index(ctx.test_batches).tolist()
    chunk = auto_test_chunk(
        ctx.model, keep, next(ctx.model.parameters()).device, ctx.n_test,
        test_lengths=[len(ctx.test[i]["input_ids"]) for i in order],
        train_length=max(len(e["input_ids"]) for e in ctx.train),
    )  # fmt: skip
    print(f"[tracin bench] automatic test chunk: {chunk} of {ctx.n_test} test examples")
    return chunk


def run_xlinfluence(ctx: Context, method: Method) -> tuple[torch.Tensor, list[int]]:
    """sum_c lr_c * checkpoint_scores(theta_c), over the method's parameter group."""
    scores = torch.zeros(ctx.n_test, ctx.n_train, dtype=torch.float64)
    keep = group_filter(ctx.groups, method.group)
    chunk = test_chunk(ctx, keep)
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
                )
            scores += lr * block.double()
    return scores, list(range(ctx.n_train))


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


def train_subset(ctx: Context, n: int | None) -> list[int]:
    """Train indices a slow method scores: all, or a seeded random sample of n (the same
    sample for Captum and the references, so their errors compare on shared columns).

    Random, not the first rows, so the sample has the set's length mix (batches are bucketed).
    """
    if n is None or n >= ctx.n_train:
        return list(range(ctx.n_train))
    gen = torch.Generator().manual_seed(ctx.args.seed + 7)
    return sorted(torch.randperm(ctx.n_train, generator=gen)[:n].tolist())


def subset_batches(ctx: Context, cols: list[int]) -> list[Batch]:
    """Bucketed batches of the train rows `cols`, their index renumbered 0..len(cols)-1."""
    subset = [dict(ctx.train[i], index=k) for k, i in enumerate(cols)]
    return pad_batches(subset, ctx.args.batch_size, bucket=True)


def run_captum(ctx: Context, method: Method) -> tuple[torch.Tensor, list[int]]:
    """captum.influence.TracInCP on the same checkpoints and lr weights.

    All-parameter mode (sample_wise_grads_per_batch=False) takes one autograd call per
    example and needs a per-example loss (Captum asserts reduction="none" there); the
    sample-wise mode takes a summed loss and covers nn.Linear (and Conv2d) layers only.
    """
    from captum.influence import TracInCP

    sample_wise = method.kind == "captum" and method.group == "linear"
    device = next(ctx.model.parameters()).device
    cols = train_subset(ctx, ctx.args.captum_n_train)
    train_batches = subset_batches(ctx, cols)  # index: column in the subset
    order = torch.cat([b["index"] for b in train_batches])  # Captum's columns, in loader order
    as_tuples = lambda bs: [(b["input_ids"].to(device), b["labels"].to(device)) for b in bs]  # noqa: E731
    train_loader = DataLoader(as_tuples(train_batches), batch_size=None)
    test_loader = DataLoader(as_tuples(ctx.test_batches), batch_size=None)
    test_order = torch.cat([b["index"] for b in ctx.test_batches])

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
    with ctx.clock:  # fp32 always: the sample-wise mode fails on bf16 activations
        raw = tracin.influence(test_loader)  # (n_test, len(cols)), loader orders
    scores = torch.zeros(ctx.n_test, len(cols), dtype=torch.float64)
    scores[test_order.unsqueeze(1), order.unsqueeze(0)] = raw.detach().double().cpu()
    return scores, cols


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


def run_reference(ctx: Context, method: Method) -> tuple[torch.Tensor, list[int]]:
    """xlinfluence.tracin.reference_scores per checkpoint (fp32 or float64 model), lr-weighted."""
    dtype = torch.float32 if method.name == "reference_fp32" else torch.float64
    model = ctx.model.to(dtype)
    subset = train_subset(ctx, ctx.args.reference_n_train)
    scores = torch.zeros(ctx.n_test, len(subset), dtype=torch.float64)
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
                    ctx.test_batches,
                    n_train=len(cols),
                    n_test=ctx.n_test,
                    param_filter=param_filter,
                )
                scores[:, cols] += lr * block
    return scores, subset


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


def run_training(ctx: Context, method: Method) -> tuple[None, list[int]]:
    """One epoch from checkpoint 0: forward, mean cross-entropy, backward, AdamW step with
    fine_tune's linear warmup schedule; the plain loop the train step is compared with.

    e5-sib200's shuffled epoch runs on exactly the train step's batches.
    """
    if method.name == "train_step":
        if ctx.args.model != "e5-sib200":
            raise SystemExit("train_step needs --model e5-sib200 (fine_tune takes real rows)")
        run_train_step(ctx)
        return None, list(range(ctx.n_train))
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
    return None, list(range(ctx.n_train))


def run_floor(ctx: Context, method: Method) -> tuple[None, list[int]]:
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
    return None, list(range(ctx.n_train))


def run_dattri(ctx: Context, method: Method) -> tuple[torch.Tensor, list[int]]:
    from tracin_dattri import run_dattri_llm

    return run_dattri_llm(ctx, method)


def run_memory(ctx: Context, method: Method) -> tuple[None, list[int]]:
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
    return None, list(range(ctx.n_train))


RUNNERS = {
    "xlinfluence": run_xlinfluence,
    "captum": run_captum,
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
