"""dattri-llm (TRAIS-Lab; PyPI dattri-llm 0.1.0) as a TracIn peer, in its best exact mode.

Why this path: `TracInAttributor(...).attribute(train, test)` on the fly is the library's
one-call TracIn (README "Attribution on-the-fly"): one frozen probe per checkpoint (eval
mode, no optimizer step, so no clipping), nothing written but the final score. Per-sample
gradients come from one batched backward of the summed loss through hooks that keep each
layer's input activations and output gradients; no `projection_kwargs`, so nothing is
projected. `capture_style="auto"` and the attributor's scoring (`ops.layerwise_cross_dot`,
mode "auto") route each layer between the factorized ("ghost") and the materialized
contraction by the library's FLOP rule; every route is exact (a reassociation of the same
sum). nn.Linear layers use `invasive_linear_io`: the same capture, minus autograd's
weight-gradient GEMM that the capture never reads.

Coverage: its `linear_io` hooks take nn.Linear, nn.Embedding (padding_idx honoured) and
nn.LayerNorm exactly, so every group of tracin_setup.param_groups, "all" included (GROUP).

Two things the library does not do are done here, outside its algorithm: it sums
checkpoints unweighted (`AttributionScore.agnostic_matrix`), so its per-checkpoint
matrices (`step_matrix(k)`) are weighted by lr_k; and it keys rows and columns by a
content hash of the model inputs (padding stripped), mapped back to `index` with its
`hash_batch`.
"""

from __future__ import annotations

import tempfile

import torch
import torch.nn.functional as F
from dattri_llm import HookManagerConfig, hash_batch
from dattri_llm.attribution import AttributionArguments, TracInAttributor
from dattri_llm.task import AttributionTask
from torch import nn
from torch.utils.data import Dataset
from tracin_setup import Batch, load_checkpoint

GROUP = "all"  # the widest group dattri-llm scores exactly (compare over this one)
COVERS = ("all", "linear", "embeddings", "layernorm")  # groups run_dattri_llm accepts
FIELDS = ("input_ids", "attention_mask", "labels")


class PaddedExamples(Dataset):
    """The bench's bucketed batches as single examples, each still padded to its batch's
    length: the library's DataLoader (no shuffle, the same batch size, default collate)
    regroups them into exactly those batches."""

    def __init__(self, batches: list[Batch]):
        sizes = [len(b["labels"]) for b in batches]
        if any(s != sizes[0] for s in sizes[:-1]) or sizes[-1] > sizes[0]:
            raise ValueError(f"batches must all be full but the last, got sizes {sizes}")
        self.batch_size = sizes[0]
        self.items = [
            {k: b[k][i] for k in FIELDS} for b in batches for i in range(len(b["labels"]))
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def sample_ids(batches: list[Batch]) -> dict[str, list[int]]:
    """dattri-llm's identifier of each example (the content hash of what the model is
    called with) -> the example's `index` values (several if the inputs repeat)."""
    ids: dict[str, list[int]] = {}
    for b in batches:
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        for h, i in zip(hash_batch(inputs, len(b["labels"])), b["index"].tolist(), strict=True):
            ids.setdefault(h, []).append(i)
    return ids


def summed_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy on the gold label, summed over the batch: its per-sample pieces are
    each example's own loss, whose gradients the hooks capture."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits.float(), batch["labels"], reduction="sum")


def hook_config(model: nn.Module, params: set[str]) -> HookManagerConfig:
    """Hooks on the modules owning `params`: invasive capture on nn.Linear, linear_io on
    embeddings and LayerNorm; no projection."""
    owners = {name.rpartition(".")[0] for name in params}
    hook_types = {
        name: "invasive_linear_io" if type(module) is nn.Linear else "linear_io"
        for name, module in model.named_modules()
        if name in owners
    }
    return HookManagerConfig(hook_types=hook_types, capture_style="auto")


def _load(model: nn.Module, path: str) -> nn.Module:
    load_checkpoint(model, path)  # also model.eval(): dropout off
    return model


def run_dattri_llm(ctx, method) -> tuple[torch.Tensor, list[int]]:
    """sum_c lr_c <g_train, g_test> over method.group's parameters, by dattri-llm."""
    if method.group not in COVERS:
        raise ValueError(f"dattri-llm covers {COVERS}, not {method.group!r}")
    device = next(ctx.model.parameters()).device
    train, test = PaddedExamples(ctx.train_batches), PaddedExamples(ctx.test_batches)
    train_ids, test_ids = sample_ids(ctx.train_batches), sample_ids(ctx.test_batches)
    config = hook_config(ctx.model, ctx.groups[method.group])
    task = AttributionTask(
        summed_loss,
        ctx.model,
        checkpoints=[path for path, _ in ctx.checkpoints],
        checkpoints_load_func=_load,
    )
    scores = torch.zeros(ctx.n_test, ctx.n_train, dtype=torch.float64)
    with tempfile.TemporaryDirectory(prefix="dattri_llm_") as out:
        args = AttributionArguments(
            output_dir=out,  # attribute() saves its score here (counted: it is the API)
            per_device_train_batch_size=train.batch_size,
            per_device_eval_batch_size=test.batch_size,
            use_cpu=device.type == "cpu",
            bf16=ctx.args.precision == "bf16",
            max_grad_norm=None,  # frozen probes never clip; explicit all the same
            seed=ctx.args.seed,
        )
        attributor = TracInAttributor(args, task=task)
        with ctx.clock:
            score = attributor.attribute(train, test, hook_config=config)
            test_src, test_dst = _placement(score.test_ids, test_ids)
            for k, (_, lr) in enumerate(ctx.checkpoints):
                rows, block = score.step_matrix(k)  # (train rows, test columns), by hash
                src, dst = _placement(rows, train_ids)
                placed = torch.zeros_like(scores)  # repeated inputs: equal rows, written once
                placed[test_dst[:, None], dst[None, :]] = (
                    block.detach().double().cpu()[src[None, :], test_src[:, None]]
                )
                scores += lr * placed
    return scores, list(range(ctx.n_train))


def _placement(hashes: list[str], ids: dict[str, list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions in `hashes`, example indices): every example under each hash."""
    if set(hashes) != set(ids):
        raise RuntimeError("dattri-llm scored other examples than it was given")
    pairs = [(r, i) for r, h in enumerate(hashes) for i in ids[h]]
    return torch.tensor([r for r, _ in pairs]), torch.tensor([i for _, i in pairs])
