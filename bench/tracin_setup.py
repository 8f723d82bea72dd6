"""Shared set-up for bench/tracin.py: the data, the model, checkpoints, parameter groups.

Two settings: `synthetic` (the tiny preset's XLM-R shape, random init, random tokens) and
`e5-sib200` (the pipeline's own e5-small, vocabulary trimmed to the rows, on real SIB-200
rows from ../shared/data, as the findings' study runs it). Everything here is deterministic
given the benchmark's arguments, so each method's worker process rebuilds exactly the same
data and model, and reads the same checkpoint files.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

from xlinfluence.data.batching import PadCollator
from xlinfluence.modeling import TINY_CONFIG

BOS, PAD, EOS, N_SPECIAL = 0, 1, 2, 5  # XLM-R's special ids 0..4
Batch = dict[str, torch.Tensor]
GROUPS = ("all", "linear", "embeddings", "layernorm")
SIB200 = Path(__file__).resolve().parents[2] / "shared/data/sib200/data/annotated"


def make_examples(n: int, seed: int, args: argparse.Namespace) -> list[dict]:
    """n examples `<s> w_1 .. w_k </s>`, total length uniform in [min_len, max_len].

    Token ids are uniform over the non-special vocabulary, labels uniform over the classes.
    """
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n):
        length = int(torch.randint(args.min_len, args.max_len + 1, (1,), generator=gen))
        words = torch.randint(N_SPECIAL, args.vocab, (max(length - 2, 0),), generator=gen)
        label = int(torch.randint(0, args.num_labels, (1,), generator=gen))
        examples.append({"input_ids": [BOS, *words.tolist(), EOS], "label": label, "index": i})
    return examples


def pad_batches(
    examples: list[dict], batch_size: int, *, bucket: bool, shuffle_seed: int | None = None
) -> list[Batch]:
    """Padded batches in xlinfluence's contract (input_ids, attention_mask, labels, index).

    `bucket` sorts by length first, as xlinfluence's influence step does; `shuffle_seed`
    shuffles instead, as training does.
    """
    order = list(range(len(examples)))
    if shuffle_seed is not None:
        gen = torch.Generator().manual_seed(shuffle_seed)
        order = torch.randperm(len(examples), generator=gen).tolist()
    if bucket:
        order.sort(key=lambda i: len(examples[i]["input_ids"]))
    collate = PadCollator(PAD)
    return [
        collate([examples[i] for i in order[s : s + batch_size]])
        for s in range(0, len(order), batch_size)
    ]


@functools.cache
def sib200_e5(data_path: str, languages: str, per_language: int, test_per_language: int,
              seed: int):  # fmt: skip
    """SIB-200 splits as the pipeline selects them, and e5-small built for them (trimmed
    vocabulary, seeded head) as the train step builds it: (splits, built)."""
    from xlinfluence import modeling
    from xlinfluence.data import load_splits
    from xlinfluence.steps.train import texts_of

    langs = languages.split(",")
    splits = load_splits(dataset="sib200", data_path=data_path, languages=langs,
                         train_counts={lang: per_language for lang in langs},
                         test_per_language=test_per_language, seed=seed)  # fmt: skip
    built = modeling.build("e5-small", num_labels=len(splits.label_names),
                           train_texts=texts_of(splits.train), test_texts=texts_of(splits.test),
                           seed=seed)  # fmt: skip
    if built.tokenizer.pad_token_id != PAD:
        raise ValueError(f"e5-small's pad id is {built.tokenizer.pad_token_id}, not {PAD}")
    return splits, built


def real(args: argparse.Namespace):
    """(splits, built) of the e5-sib200 setting."""
    return sib200_e5(str(args.data_path), args.languages, args.per_language,
                     args.test_per_language, args.seed)  # fmt: skip


def _tokenized(frame, args: argparse.Namespace) -> list[dict]:
    from xlinfluence.data.batching import TokenizedExamples

    examples = TokenizedExamples(frame, real(args)[1].tokenizer, args.max_len)
    return [examples[i] for i in range(len(examples))]


def datasets(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """(train, test) examples; synthetic test uses a different seed stream than train."""
    if args.model == "e5-sib200":
        splits, _ = real(args)
        return _tokenized(splits.train, args), _tokenized(splits.test, args)
    return (
        make_examples(args.n_train, args.seed * 1000 + 1, args),
        make_examples(args.n_test, args.seed * 1000 + 2, args),
    )


def build_model(args: argparse.Namespace) -> nn.Module:
    """e5-small for e5-sib200 (a fresh copy each call); else the tiny preset's XLM-R shape
    (or a larger one from --hidden/--layers), random init."""
    if args.model == "e5-sib200":
        import copy

        return copy.deepcopy(real(args)[1].model)
    torch.manual_seed(args.seed)
    shape = dict(TINY_CONFIG)
    if (args.hidden, args.layers) != (TINY_CONFIG["hidden_size"], TINY_CONFIG["num_hidden_layers"]):
        shape.update(
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=max(1, args.hidden // 64),  # XLM-R base: 768 / 12 = 64 per head
            intermediate_size=4 * args.hidden,
        )
    config = XLMRobertaConfig(
        vocab_size=args.vocab,
        num_labels=args.num_labels,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        **shape,
    )
    return XLMRobertaForSequenceClassification(config)


def param_groups(model: nn.Module) -> dict[str, set[str]]:
    """Trainable parameter names by owning module type: linear, embeddings, layernorm.

    Raises if some trainable parameter belongs to none of them (then "all" would not be
    the sum of the groups).
    """
    kinds = {nn.Linear: "linear", nn.Embedding: "embeddings", nn.LayerNorm: "layernorm"}
    groups: dict[str, set[str]] = {g: set() for g in GROUPS[1:]}
    for mod_name, module in model.named_modules():
        kind = kinds.get(type(module))
        for p_name, p in module.named_parameters(recurse=False):
            if kind is None and p.requires_grad:
                raise TypeError(f"{mod_name}.{p_name} is in no parameter group")
            groups[kind].add(f"{mod_name}.{p_name}")
    groups["all"] = set().union(*groups.values())
    return groups


def group_filter(groups: dict[str, set[str]], group: str):
    """xlinfluence's param_filter for a group (None: every trainable parameter)."""
    return None if group == "all" else groups[group].__contains__


def group_size(model: nn.Module, names: set[str]) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n in names)


def make_checkpoints(args: argparse.Namespace, directory: Path) -> list[tuple[str, float]]:
    """Train the model a few AdamW steps between saves; safetensors files with their lr.

    The lr saved with a checkpoint is the mean step size since the previous save (the
    weight TracIn gives it, as xlinfluence's training step records it). Linear decay.
    """
    model = build_model(args)
    train, _ = datasets(args)
    batches = pad_batches(train, args.batch_size, bucket=False, shuffle_seed=args.seed)
    total = args.checkpoints * args.steps_per_checkpoint
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / (total + 1))
    model.train()
    index, step = [], 0
    for c in range(args.checkpoints):
        lrs = []
        for _ in range(args.steps_per_checkpoint):
            batch = batches[step % len(batches)]
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            F.cross_entropy(logits, batch["labels"]).backward()
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
        lr = sum(lrs) / len(lrs)
        path = directory / f"checkpoint-{c}.safetensors"
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(path), metadata={"lr": repr(lr), "step": str(step)})
        index.append((str(path), lr))
    (directory / "checkpoints.json").write_text(json.dumps(index))
    return index


def read_checkpoints(directory: Path) -> list[tuple[str, float]]:
    return [tuple(item) for item in json.loads((directory / "checkpoints.json").read_text())]


def load_checkpoint(model: nn.Module, path: str) -> float:
    """Load weights into `model` (cast to its dtype and device), eval mode; return the lr.

    Also Captum's `checkpoints_load_func` (through the wrapper): eval at every load, since
    dropout left on gave 26% error.
    """
    device = next(model.parameters()).device
    model.load_state_dict(load_file(path, device=str(device)))
    model.eval()
    with safe_open(path, "pt") as f:
        return float(f.metadata()["lr"])


def autocast(args: argparse.Namespace):
    """bf16 autocast with fp32 weights (as the influence step's Accelerate mixed precision)."""
    if args.precision == "bf16":
        return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def forward_autocast(model: nn.Module, args: argparse.Namespace):
    """Autocast the model's forward only, not what the caller does with its outputs.

    Autocast around xlinfluence's checkpoint_scores (as the influence step does) also
    casts the engine's fp32 contractions to bf16, which fails when the bf16 block is written
    into the fp32 score matrix; around Captum it would make its dot products bf16. So
    the forward (and with it the backward) runs in bf16, the contractions in fp32.
    """
    if args.precision != "bf16":
        yield
        return
    original = model.forward

    def forward(*a, **k):
        with autocast(args):
            return original(*a, **k)

    model.forward = forward  # an instance attribute: parameter names and hooks unchanged
    try:
        yield
    finally:
        del model.forward
