"""Helpers for the TracIn tests: a tiny random XLM-R classifier, padded batches, no network."""

from __future__ import annotations

import torch
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

from xlinfluence.data.batching import PadCollator

PAD = 1
N_TRAIN, N_TEST = 24, 10


def tiny_model(seed: int = 0) -> XLMRobertaForSequenceClassification:
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=80,
        num_labels=3,
        pad_token_id=PAD,
        bos_token_id=0,
        eos_token_id=2,
    )
    return XLMRobertaForSequenceClassification(config)


def make_examples(n: int, seed: int) -> list[dict]:
    """<s> tokens </s>, 1..24 tokens, ids mostly from a small range so train and test share them."""
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n):
        length = int(torch.randint(1, 25, (1,), generator=gen))
        common = torch.randint(3, 30, (length,), generator=gen)
        rare = torch.randint(3, 300, (length,), generator=gen)
        ids = torch.where(torch.rand(length, generator=gen) < 0.7, common, rare)
        examples.append(
            {
                "input_ids": [0, *ids.tolist(), 2],
                "label": int(torch.randint(0, 3, (1,), generator=gen)),
                "index": i,
            }
        )
    return examples


def batches(examples: list[dict], size: int, *, bucket: bool = False, seed: int | None = None):
    """Padded batches in collator format; `bucket` sorts by length, `seed` shuffles first."""
    order = list(range(len(examples)))
    if seed is not None:
        order = torch.randperm(
            len(examples), generator=torch.Generator().manual_seed(seed)
        ).tolist()
    if bucket:
        order.sort(key=lambda i: len(examples[i]["input_ids"]))
    collate = PadCollator(PAD)
    return [collate([examples[i] for i in order[s : s + size]]) for s in range(0, len(order), size)]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()
