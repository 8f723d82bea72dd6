"""Metagradients through AdamW against an independent reference: finite differences of
real retrainings with one example's data weight moved, on a float64 model; and the
functional replay against torch.optim.AdamW itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xlinfluence.training import metagradient as mg

N_TRAIN, N_LABELS, LRS = 12, 3, [5e-2, 4e-2, 3e-2, 2e-2, 1e-2, 5e-3]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(9, 4)
        self.inner = nn.Linear(4, 5)
        self.head = nn.Linear(5, N_LABELS)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        hidden = torch.tanh(self.inner(self.embed(input_ids)))
        return self.head((hidden * mask).sum(1) / mask.sum(1))


def _data(n: int, seed: int, batch_size: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 9, (n, 4), generator=g)
    mask = (torch.arange(4) < torch.randint(1, 5, (n, 1), generator=g)).long()
    labels = torch.randint(0, N_LABELS, (n,), generator=g)
    return [{"input_ids": ids[s : s + batch_size], "attention_mask": mask[s : s + batch_size],
             "labels": labels[s : s + batch_size], "index": torch.arange(s, min(n, s + batch_size))}
            for s in range(0, n, batch_size)]  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = Tiny().double()
    epoch = _data(N_TRAIN, 1, 4)  # 3 batches
    batches = epoch + epoch[::-1]  # 2 epochs, 6 steps
    test = _data(6, 2, 6)
    return model, batches, test


def test_the_replay_is_torch_adamw(setup):
    model, batches, _ = setup
    ours = mg.train(model, batches, LRS, torch.ones(N_TRAIN, dtype=torch.float64))
    reference = Tiny().double()
    reference.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(reference.parameters(), lr=LRS[0], weight_decay=0.01)
    for batch, lr in zip(batches, LRS, strict=True):
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = reference(batch["input_ids"], batch["attention_mask"])
        torch.nn.functional.cross_entropy(logits, batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    for got, want in zip(ours, reference.parameters(), strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=1e-12)


def test_metagradient_equals_finite_differences_of_retraining(setup):
    model, batches, test = setup
    output = mg.test_loss_output(model, test)
    gradient = mg.data_weight_gradient(model, batches, LRS, N_TRAIN, output)
    h = 1e-5
    for i in (0, 5, 11):
        up = torch.ones(N_TRAIN, dtype=torch.float64)
        down = up.clone()
        up[i] += h
        down[i] -= h
        with torch.no_grad():
            plus = output(mg.train(model, batches, LRS, up))
            minus = output(mg.train(model, batches, LRS, down))
        numeric = float((plus - minus) / (2 * h))
        assert abs(float(gradient[i]) - numeric) <= 1e-6 * max(1.0, abs(numeric)), (i, numeric)
    assert gradient.abs().max() > 1e-4  # the output does depend on the data weights


def test_recomputed_segments_give_the_same_gradient(setup):
    model, batches, test = setup
    output = mg.test_loss_output(model, test)
    whole = mg.data_weight_gradient(model, batches, LRS, N_TRAIN, output, segment=6)
    pieces = mg.data_weight_gradient(model, batches, LRS, N_TRAIN, output, segment=2)
    torch.testing.assert_close(pieces, whole, rtol=1e-10, atol=1e-14)
