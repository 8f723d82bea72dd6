"""A run continued from a saved training state ends in the same checkpoints, byte for byte."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from xlinfluence import modeling, training
from xlinfluence.data import load_splits
from xlinfluence.errors import ArtifactError
from xlinfluence.training import state


def _fine_tune(model, tokenizer, splits, root, **kwargs):
    saved = {}
    training.fine_tune(
        model, tokenizer, splits.train, splits.test, epochs=3, batch_size=8,
        learning_rate=1e-3, weight_decay=0.01, warmup_ratio=0.1, max_length=32, seed=4,
        accelerator=Accelerator(cpu=True), checkpoint_root=root,
        on_epoch_end=lambda metrics, info, directory: saved.__setitem__(info.name, directory),
        **kwargs,
    )  # fmt: skip
    return saved


@pytest.fixture(scope="module")
def splits():
    langs = ["en", "de"]
    return load_splits(
        dataset="cldr", languages=langs, train_counts=dict.fromkeys(langs, 24),
        test_per_language=4, seed=4,
    )  # fmt: skip


def test_resumed_training_equals_uninterrupted(splits, tmp_path):
    torch.manual_seed(4)
    texts = splits.train.text.tolist()
    built = modeling.build(
        "tiny", num_labels=len(splits.label_names), train_texts=texts, test_texts=[], seed=4
    )
    states = []
    full = _fine_tune(
        built.model, built.tokenizer, splits, tmp_path / "full", on_state=states.append
    )
    assert [s.name for s in states] == ["state-1", "state-2"]  # none after the last epoch
    assert state.is_complete(states[0])

    model, tokenizer = modeling.load_checkpoint(full["epoch-1"])
    model.train()
    resumed = _fine_tune(model, tokenizer, splits, tmp_path / "resumed", resume_from=states[0])
    assert sorted(resumed) == ["epoch-2", "epoch-3"]
    for name, directory in resumed.items():
        expected = (full[name] / "model.safetensors").read_bytes()
        assert (directory / "model.safetensors").read_bytes() == expected, name


def test_a_cut_off_state_is_recognised(splits, tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state.save(tmp_path, state.TrainingState(1, 1), optimizer, scheduler)
    assert state.is_complete(tmp_path)
    (tmp_path / state.OPTIMIZER).write_bytes(b"cut")
    assert not state.is_complete(tmp_path)
    with pytest.raises(ArtifactError, match="incomplete or corrupt"):
        state.load(tmp_path, optimizer, scheduler)
