"""Tokenised examples and padded batches, shared by training and TracIn.

A batch is a dict of tensors:
    input_ids       (B, T) long, padded with the tokenizer's pad id
    attention_mask  (B, T) long, 1 for real tokens
    labels          (B,)   long, gold class
    index           (B,)   long, row position of the example in its manifest frame
Batches are padded to their own longest member, never to max_length.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from xlinfluence.data import schema


class TokenizedExamples(Dataset):
    """Examples of a manifest frame, tokenised once, in frame order."""

    def __init__(self, frame: pd.DataFrame, tokenizer, max_length: int):
        texts = frame[schema.TEXT].tolist()
        pairs = frame[schema.TEXT_PAIR]
        pairs = None if pairs.isna().all() else pairs.fillna("").tolist()
        encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False)
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.labels = frame[schema.LABEL].to_numpy()
        self.pad_id = tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "label": int(self.labels[i]), "index": i}

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


class PadCollator:
    """Pads a list of items to the longest one (a class, so DataLoader workers can pickle it)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(it["input_ids"]) for it in items)
        input_ids = torch.full((len(items), longest), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, it in enumerate(items):
            ids = torch.as_tensor(it["input_ids"], dtype=torch.long)
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        }


class ShuffledBatches(torch.utils.data.Sampler):
    """Seeded shuffled batches of all n rows, each without the rows in `exclude`.

    Batches are cut from a permutation of all n rows and the excluded rows are then taken
    out of their batch: a retraining without a few examples (counterfactual) sees every
    other batch exactly as the full run does, so it differs from it by those examples, not
    by a new order. With nothing excluded it is torch's shuffled batching (one randperm per
    pass, cut into batch_size pieces)."""

    def __init__(self, n: int, batch_size: int, exclude: set[int], generator: torch.Generator):
        self.n, self.batch_size = n, batch_size
        self.exclude, self.generator = set(exclude), generator

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist()
        for start in range(0, self.n, self.batch_size):
            batch = [i for i in order[start : start + self.batch_size] if i not in self.exclude]
            if batch:
                yield batch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)  # an upper bound when rows are excluded


def make_loader(
    examples: TokenizedExamples,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    exclude: set[int] | None = None,
    indices: list[int] | None = None,
    bucket_by_length: bool = False,
) -> DataLoader:
    """A DataLoader over `examples` (or the subset `indices`).

    shuffle draws each pass's order from `generator` (which the caller seeds), leaving out
    the rows in `exclude` (ShuffledBatches).
    bucket_by_length sorts the subset by token count so each batch carries little padding;
    used by TracIn, where order does not matter because every row keeps its `index`.
    """
    if shuffle:
        batches = ShuffledBatches(
            len(examples), batch_size, exclude or set(), generator or torch.Generator()
        )
        return DataLoader(examples, batch_sampler=batches, collate_fn=PadCollator(examples.pad_id))
    subset = list(range(len(examples))) if indices is None else list(indices)
    if bucket_by_length:
        lengths = examples.lengths()
        subset.sort(key=lambda i: lengths[i])
    dataset = torch.utils.data.Subset(examples, subset)
    return DataLoader(dataset, batch_size=batch_size, collate_fn=PadCollator(examples.pad_id))
