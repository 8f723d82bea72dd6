"""Reduced-precision fine-tuning: bf16 matmuls under autocast, fp32 weights and optimizer;
a cheap retraining evaluates its last epoch only."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from xlinfluence import modeling, training
from xlinfluence.config import TrainConfig
from xlinfluence.data import load_splits
from xlinfluence.errors import ConfigError
from xlinfluence.steps import preflight


@pytest.fixture(scope="module")
def splits():
    langs = ["en", "de"]
    return load_splits(
        dataset="cldr", languages=langs, train_counts=dict.fromkeys(langs, 16),
        test_per_language=4, seed=5,
    )  # fmt: skip


def _fine_tune(splits, accelerator: Accelerator, **kwargs) -> tuple[torch.nn.Module, list]:
    texts = splits.train.text.tolist()
    built = modeling.build(
        "tiny", num_labels=len(splits.label_names), train_texts=texts, test_texts=[], seed=5
    )
    seen = []
    training.fine_tune(
        built.model, built.tokenizer, splits.train, splits.test, epochs=2, batch_size=8,
        learning_rate=1e-3, weight_decay=0.01, warmup_ratio=0.1, max_length=32, seed=5,
        accelerator=accelerator, checkpoint_root=None,
        on_epoch_end=lambda metrics, info, directory: seen.append(metrics), **kwargs,
    )  # fmt: skip
    return built.model, seen


def test_bf16_trains_in_bf16_over_fp32_weights(splits):
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    dtypes = set()
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: dtypes.add(out.dtype)
        if isinstance(module, torch.nn.Linear) and module.training else None
    )  # fmt: skip
    try:
        model, seen = _fine_tune(splits, accelerator)
    finally:
        hook.remove()
    assert dtypes == {torch.bfloat16}  # every training matmul ran in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights
    assert seen[-1].predictions["loss"].dtype == "float32"  # outputs accumulated in fp32
    assert torch.isfinite(torch.tensor(seen[-1].train_loss))


def test_a_cheap_retraining_evaluates_its_last_epoch_only(splits):
    _, seen = _fine_tune(splits, Accelerator(cpu=True), evaluate_every_epoch=False)
    assert [m.predictions is None for m in seen] == [True, False]
    assert seen[0].accuracy == {} and seen[0].evaluation_seconds == 0.0
    assert len(seen[1].predictions) == len(splits.test) and seen[1].evaluation_seconds > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed where CUDA is")
def test_fp16_is_refused_on_a_cpu():
    config = TrainConfig(model="tiny", languages="en,de", train_precision="fp16")
    with pytest.raises(ConfigError, match="train_precision='fp16': fp16 autocast needs a CUDA"):
        preflight.check(config)
