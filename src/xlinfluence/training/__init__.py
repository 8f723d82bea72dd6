"""Fine-tuning with Accelerate: one loop that runs unchanged on CPU, one GPU or many.

Knows nothing of MLflow: after each epoch it saves a checkpoint and hands the epoch's
metrics to a callback, which the train step uses to log as it goes; after every epoch but
the last it also saves the training state (state.py), from which a killed run continues.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from xlinfluence import modeling
from xlinfluence.data import schema
from xlinfluence.data.batching import TokenizedExamples, make_loader
from xlinfluence.training import state


@dataclass(frozen=True)
class CheckpointInfo:
    """One saved checkpoint and the learning rate TracIn weighs it by.

    learning_rate is the mean step size of the epoch that ended at this checkpoint: the
    checkpoint's gradients stand for that epoch's updates (Pruthi et al. 2020, eq. 3).
    """

    name: str
    epoch: int
    step: int
    learning_rate: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    step: int
    train_loss: float
    accuracy: dict[str, float]  # test language -> accuracy; "all" for the whole test set
    test_loss: dict[str, float]  # test language -> mean cross-entropy; "all" likewise
    #: per test example (manifest order): predicted, loss, correct, margin; None for an
    #: epoch that was not evaluated (a cheap retraining evaluates its last epoch only)
    predictions: pd.DataFrame | None
    seconds: float = float("nan")  # the epoch's training steps alone (the cost yardstick)
    evaluation_seconds: float = 0.0  # evaluating the test set after it (0: not evaluated)
    #: (steps, n) uint8: the CPU RNG's state before each step of the epoch, what dropout
    #: draws from; a replay of the run (method=metagradient) restores it step by step
    rng_states: torch.Tensor | None = None


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch}"


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch e's shuffle: each epoch's order depends on (seed, e) alone."""
    return seed * 10_000 + epoch


def epoch_batches(
    examples: TokenizedExamples, batch_size: int, epochs: int, seed: int
) -> list[dict]:
    """Every training step's batch, in order, as fine_tune draws them on one process (one
    seeded permutation per epoch): what a replay of the run steps through."""
    generator = torch.Generator()
    loader = make_loader(examples, batch_size, shuffle=True, generator=generator)
    batches = []
    for epoch in range(1, epochs + 1):
        generator.manual_seed(epoch_seed(seed, epoch))
        batches.extend(loader)
    return batches


def learning_rates(total_steps: int, learning_rate: float, warmup_ratio: float) -> list[float]:
    """The learning rate of every step: linear warmup, then linear decay (as fine_tune)."""
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=learning_rate)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(warmup_ratio * total_steps), total_steps
    )
    rates = []
    for _ in range(total_steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def fine_tune(
    model: torch.nn.Module,
    tokenizer,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    warmup_ratio: float,
    max_length: int,
    seed: int,
    accelerator: Accelerator,
    checkpoint_root: Path | None,
    on_epoch_end: Callable[[EpochMetrics, CheckpointInfo, Path | None], None],
    vocab_map: modeling.VocabMap | None = None,
    on_state: Callable[[Path], None] | None = None,
    resume_from: Path | None = None,
    exclude_rows: set[int] | None = None,
    evaluate_every_epoch: bool = True,
) -> list[CheckpointInfo]:
    """Train for `epochs`, saving `checkpoint_root/epoch-<e>` (main process) after each;
    with checkpoint_root None nothing is saved and the callback gets no folder (a cheap
    retraining that keeps only the test outputs).

    With on_state, the training state after epoch e < epochs is saved to
    `checkpoint_root/state-<e>` and handed over. resume_from is such a folder: the model
    must already hold that epoch's checkpoint; training continues with the next epoch.
    exclude_rows (rows of `train`) are never trained on, and the other rows keep the order
    they have in a run without exclusions (counterfactual retraining).
    evaluate_every_epoch False evaluates the test set after the last epoch only: a
    retraining is scored on its final outputs, and evaluating 500 test rows after each of
    3 epochs of 500 training rows was about a fifth of its time.
    """
    generator = torch.Generator()  # reseeded per epoch (epoch_seed)
    train_loader = make_loader(
        TokenizedExamples(train, tokenizer, max_length),
        batch_size,
        shuffle=True,
        generator=generator,
        exclude=exclude_rows,
    )
    # sorted by length, so a batch carries little padding; evaluate() restores the order
    test_loader = make_loader(
        TokenizedExamples(test, tokenizer, max_length), 2 * batch_size, bucket_by_length=True
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    model, optimizer, train_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, test_loader
    )
    total_steps = epochs * len(train_loader)  # per process, after prepare() sharded it
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(warmup_ratio * total_steps), total_steps
    )
    test_languages = test[schema.LANGUAGE].to_numpy()
    checkpoints: list[CheckpointInfo] = []
    done = state.TrainingState(epoch=0, step=0)
    if resume_from is not None:
        done = state.load(resume_from, optimizer, scheduler)
    step = done.step
    for epoch in range(done.epoch + 1, epochs + 1):
        generator.manual_seed(epoch_seed(seed, epoch))
        model.train()
        loss_sum, lr_sum, n_batches = 0.0, 0.0, 0
        bar = tqdm(
            train_loader, desc=f"epoch {epoch}/{epochs}", disable=not accelerator.is_main_process
        )
        started = time.perf_counter()
        rng_states = []
        for batch in bar:
            rng_states.append(torch.get_rng_state())
            outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = torch.nn.functional.cross_entropy(outputs.logits, batch["labels"])
            accelerator.backward(loss)
            lr_sum += scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            loss_sum += loss.item()
            n_batches += 1
            step += 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
        seconds = time.perf_counter() - started
        epoch_loss = accelerator.reduce(
            torch.tensor(loss_sum / max(n_batches, 1), device=accelerator.device), "mean"
        ).item()
        evaluated = evaluate_every_epoch or epoch == epochs
        started = time.perf_counter()
        predictions = evaluate(model, test_loader, len(test), accelerator) if evaluated else None
        evaluation_seconds = time.perf_counter() - started if evaluated else 0.0
        info = CheckpointInfo(checkpoint_name(epoch), epoch, step, lr_sum / max(n_batches, 1))
        directory = checkpoint_root / info.name if checkpoint_root is not None else None
        if accelerator.is_main_process and directory is not None:
            modeling.save_checkpoint(
                accelerator.unwrap_model(model), tokenizer, directory, vocab_map
            )
        accelerator.wait_for_everyone()
        checkpoints.append(info)
        accuracy, test_loss = _per_language(predictions, test_languages) if evaluated else ({}, {})
        metrics = EpochMetrics(epoch, step, epoch_loss, accuracy, test_loss, predictions, seconds,
                               evaluation_seconds,
                               torch.stack(rng_states) if rng_states else None)  # fmt: skip
        on_epoch_end(metrics, info, directory)
        if on_state is not None and checkpoint_root is not None and epoch < epochs:
            folder = checkpoint_root / f"state-{epoch}"
            if accelerator.is_main_process:
                state.save(folder, state.TrainingState(epoch, step), optimizer, scheduler)
            accelerator.wait_for_everyone()
            on_state(folder)
    return checkpoints


@torch.no_grad()
def evaluate(model, loader, n_test: int, accelerator: Accelerator) -> pd.DataFrame:
    """Each test example's prediction, gold-label loss and margin (gold logit minus the
    best other), gathered across processes, in manifest order: columns predicted, loss,
    correct, margin. The margin is the output the linear datamodeling score predicts."""
    model.eval()
    parts = []
    for batch in loader:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"], reduction="none")
        predicted = logits.argmax(-1)
        parts.append(
            [t.cpu() for t in accelerator.gather_for_metrics(
                (batch["index"], predicted, loss, (predicted == batch["labels"]).long(),
                 margin(logits.float(), batch["labels"]))
            )]
        )  # fmt: skip
    index, predicted, loss, correct, margins = (
        torch.cat(column) for column in zip(*parts, strict=True)
    )
    frame = pd.DataFrame(
        {
            "predicted": predicted.numpy(),
            "loss": loss.numpy(),
            "correct": correct.numpy(),
            "margin": margins.numpy(),
        },
        index=index.numpy(),
    ).sort_index()
    if len(frame) != n_test:
        raise RuntimeError(f"evaluation saw {len(frame)} test examples, expected {n_test}")
    return frame.reset_index(drop=True)


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gold-class logit minus the largest other logit, per row."""
    gold = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return gold - others.amax(1)


def _per_language(
    predictions: pd.DataFrame, languages
) -> tuple[dict[str, float], dict[str, float]]:
    """Accuracy and mean test loss per test language, and over all ("all")."""
    frame = predictions.assign(language=languages)
    grouped = frame.groupby("language", sort=False)
    accuracy = grouped["correct"].mean().to_dict() | {"all": frame["correct"].mean()}
    loss = grouped["loss"].mean().to_dict() | {"all": frame["loss"].mean()}
    return (
        {k: float(v) for k, v in accuracy.items()},
        {k: float(v) for k, v in loss.items()},
    )
