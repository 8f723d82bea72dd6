"""The train step: select data, fine-tune, log manifests, checkpoints and metrics.

A killed run continues from its last complete epoch: re-attach to it (`mlflow run
--run-id`, or MLFLOW_RUN_ID) or start a new run with resume_run_id, which copies the
finished epochs' checkpoints and metrics into itself. The training state saved after each
epoch (training/state.py) makes the result equal an uninterrupted run's.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from accelerate.utils import set_seed

from xlinfluence import artifacts, modeling, provenance, tracking
from xlinfluence.config import TrainConfig
from xlinfluence.data import schema, source_of, splits_of, subsets
from xlinfluence.errors import ConfigError
from xlinfluence.steps import set_threads
from xlinfluence.steps.upstream import summed_scores
from xlinfluence.training import CheckpointInfo, EpochMetrics, fine_tune, state

log = logging.getLogger(__name__)
STATE = "training_state"
#: train_precision -> Accelerate's mixed_precision: autocast over fp32 weights and AdamW.
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def run(config: TrainConfig) -> str:
    """Fine-tune per `config`; returns the MLflow run ID."""
    accelerator = Accelerator(mixed_precision=MIXED_PRECISION[config.train_precision])
    try:
        return _train(config, accelerator)
    finally:
        accelerator.end_training()  # destroys the process group; without it gloo aborts at exit


def _train(config: TrainConfig, accelerator: Accelerator) -> str:
    set_threads(config.threads)
    set_seed(config.training_seed)
    with accelerator.main_process_first():
        splits = splits_of(config)
    removed = _removed_ids(config, splits) if config.remove else []
    is_removed = splits.train[schema.ID].isin(removed).to_numpy()
    trained_on = splits.train[~is_removed].reset_index(drop=True)  # the logged manifest
    # By default (removal_steps=fixed) a retraining keeps every batch of the full run, its
    # step count and schedule, and skips the removed rows, so the two runs differ by those
    # rows alone. removal_steps=proportional trains a subset, a left-out language or a cut
    # as a set of its own: full batches of the kept rows, steps in proportion (fewer steps
    # is then part of what a removal does). A counterfactual removal is always fixed.
    as_own_set = subsets.is_selection(config.remove) and config.removal_steps == "proportional"
    built = modeling.build(
        config.model,
        num_labels=len(splits.label_names),
        train_texts=texts_of(splits.train),
        test_texts=texts_of(splits.test),
        seed=config.training_seed,
        trim_vocab=config.trim_vocab,
    )
    with (
        tracking.step_run(config, is_main=accelerator.is_main_process, system_metrics=True) as run,
        tempfile.TemporaryDirectory(prefix="xlinfluence-train-") as tmp,
    ):
        out = Path(tmp)
        run.set_tags(
            {
                provenance.DATA_TAG: provenance.data_digest(splits.train, splits.test),
                provenance.MODEL_TAG: provenance.model_digest(config.model),
            }
        )
        artifacts.save_manifest(trained_on, out / artifacts.TRAIN_MANIFEST)
        artifacts.save_manifest(splits.test, out / artifacts.TEST_MANIFEST)
        artifacts.write_json(splits.label_names, out / artifacts.LABELS)
        if removed:
            artifacts.write_json(removed, out / artifacts.REMOVED)
        run.log_artifacts(out / artifacts.DATA, artifacts.DATA)
        source = source_of(config.dataset, config.data_path)
        for frame, split, context in (
            (trained_on, "train", "training"),
            (splits.test, "test", "testing"),
        ):
            if config.save_checkpoints:  # a retraining's inputs are its manifest and spec
                run.log_dataset(
                    frame, name=f"{config.dataset}-{split}", context=context, source=source
                )
        run.log_metrics(
            {
                "n_train": len(trained_on),
                "n_test": len(splits.test),
                "num_processes": accelerator.num_processes,
            }
            | {f"n_train.{k}": v for k, v in _counts(trained_on).items()}
            | {"vocab_size": built.model.config.vocab_size, "n_removed": len(removed)}
        )
        resume = _resume_point(config, run.run_id or os.environ.get("MLFLOW_RUN_ID"), out)
        model, tokenizer, vocab_map = built.model, built.tokenizer, built.vocab_map
        index: list[dict] = []
        if resume is not None:
            log.info("resuming run %s after epoch %d", resume.run_id, resume.epoch)
            model, tokenizer = modeling.load_checkpoint(resume.checkpoint)
            model.train()
            vocab_map = modeling.VocabMap.load(resume.checkpoint)
            index = resume.index
            if resume.run_id != run.run_id:
                _copy_finished_epochs(run, resume, out)

        def log_epoch(metrics: EpochMetrics, info: CheckpointInfo, directory: Path) -> None:
            run.log_metrics(
                {"train_loss": metrics.train_loss, "learning_rate": info.learning_rate}
                | {
                    "epoch_seconds": metrics.seconds,
                    "evaluation_seconds": metrics.evaluation_seconds,
                }
                | {f"accuracy.{lang}": acc for lang, acc in metrics.accuracy.items()}
                | {f"test_loss.{lang}": loss for lang, loss in metrics.test_loss.items()},
                step=metrics.epoch,
            )
            if metrics.predictions is not None:
                predictions = out / artifacts.predictions(info.name)
                artifacts.save_predictions(metrics.predictions, splits.test, predictions)
                run.log_artifact(predictions, artifacts.EVALUATION)
            if metrics.rng_states is not None and config.save_checkpoints:  # replay reads them
                rng = out / artifacts.rng_states(info.name)
                artifacts.save_rng_states(metrics.rng_states, rng)
                run.log_artifact(rng, artifacts.TRAINING)
            if directory is not None:
                run.log_artifacts(directory, f"{artifacts.CHECKPOINTS}/{info.name}")
            index.append(info.to_dict())
            artifacts.save_checkpoint_index(index, out / artifacts.CHECKPOINT_INDEX)
            run.log_artifact(out / artifacts.CHECKPOINT_INDEX, artifacts.CHECKPOINTS)

        def log_state(folder: Path) -> None:
            destination = f"{STATE}/{folder.name.replace('state-', 'epoch-')}"
            for name in (state.OPTIMIZER, state.RNG, state.STATE):  # state.json last
                run.log_artifact(folder / name, destination)

        fine_tune(
            model,
            tokenizer,
            trained_on if as_own_set else splits.train,
            splits.test,
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            warmup_ratio=config.warmup_ratio,
            max_length=config.max_length,
            seed=config.training_seed,
            accelerator=accelerator,
            checkpoint_root=out / "local-checkpoints" if config.save_checkpoints else None,
            on_epoch_end=log_epoch,
            vocab_map=vocab_map,
            on_state=log_state if config.save_checkpoints else None,
            resume_from=resume.state if resume else None,
            exclude_rows=None if as_own_set else set(np.flatnonzero(is_removed).tolist()),
            evaluate_every_epoch=config.save_checkpoints,  # a retraining is scored at the end
        )
        run.log_metrics({"artifact_bytes": _size(out)})
        return run.run_id or ""


def _size(folder: Path) -> int:
    """Bytes this run wrote to its artifact staging folder (retraining cost)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _removed_ids(config: TrainConfig, splits) -> list[str]:
    """The training ids `config.remove` leaves out (counterfactual, subset or language).
    They stay in the data the tokenizer and the shuffle see, so the run differs from the
    full one only by them."""
    from xlinfluence.analysis.counterfactual import Removal, removed_ids

    if subsets.is_selection(config.remove):
        kept = subsets.kept_mask(subsets.Selection.parse(config.remove), splits.train, config.seed)
        return splits.train.loc[~kept, schema.ID].tolist()
    removal = Removal.parse(config.remove)
    total, train, test = summed_scores(removal.influence_run_id)
    if train[schema.ID].tolist() != splits.train[schema.ID].tolist():
        raise ConfigError(
            f"remove={config.remove!r}: influence run {removal.influence_run_id} scored another "
            "training set than these data parameters select; give the influence run of a "
            "train run with the same data parameters and seed."
        )
    ids = removed_ids(removal, total, train, test, seed=config.seed)
    log.info("counterfactual: leaving out %d examples (%s)", len(ids), config.remove)
    return ids


@dataclass(frozen=True)
class _Resume:
    run_id: str  # the run whose epochs are continued
    epoch: int  # last complete epoch
    state: Path  # its training state folder
    checkpoint: Path  # its checkpoint folder
    index: list[dict]  # checkpoint index entries up to that epoch


def _resume_point(config: TrainConfig, own_run_id: str | None, out: Path) -> _Resume | None:
    """The latest epoch with a complete state: of this run if re-attached, else of
    resume_run_id (whose parameters must equal this run's), else None."""
    if own_run_id:
        point = _latest_state(own_run_id, out / "resume-own")
        if point is not None:
            return point
    if not config.resume_run_id:
        return None
    source = tracking.fetch_run(config.resume_run_id, step=TrainConfig.step, finished=False)
    ignored = ("resume_run_id", "threads", "accelerate_config")
    theirs = TrainConfig.canonical(tracking.run_params(source))
    differ = sorted(
        k for k, v in config.to_params().items() if k not in ignored and theirs.get(k) != v
    )
    if differ:
        raise ConfigError(
            f"resume_run_id={config.resume_run_id!r} was trained with other values of {differ}; "
            "resume with the same parameters, or train from scratch without resume_run_id."
        )
    point = _latest_state(config.resume_run_id, out / "resume-other")
    if point is None:
        raise ConfigError(
            f"resume_run_id={config.resume_run_id!r} has no complete training state (it "
            "stopped before its first epoch ended); train from scratch without resume_run_id."
        )
    return point


def _latest_state(run_id: str, staging: Path) -> _Resume | None:
    index_file = tracking.download_partial(run_id, artifacts.CHECKPOINT_INDEX, staging / "index")
    if index_file is None:
        return None
    index = artifacts.load_checkpoint_index(index_file)
    by_epoch = {entry["epoch"]: entry for entry in index}
    saved = [int(p.rsplit("-", 1)[-1]) for p in tracking.artifact_names(run_id, STATE)]
    for epoch in sorted((e for e in saved if e in by_epoch), reverse=True):
        folder = tracking.download_partial(run_id, f"{STATE}/epoch-{epoch}", staging / "state")
        name = by_epoch[epoch]["name"]
        checkpoint = tracking.download_partial(
            run_id, f"{artifacts.CHECKPOINTS}/{name}", staging / "checkpoint"
        )
        if folder is not None and checkpoint is not None and state.is_complete(folder):
            entries = [e for e in index if e["epoch"] <= epoch]
            return _Resume(run_id, epoch, folder, checkpoint, entries)
    return None


def _copy_finished_epochs(run: tracking.StepRun, resume: _Resume, out: Path) -> None:
    """A new run continuing another holds its finished epochs: checkpoints, index, metrics."""
    for entry in resume.index:
        folder = tracking.download(resume.run_id, f"{artifacts.CHECKPOINTS}/{entry['name']}")
        run.log_artifacts(folder, f"{artifacts.CHECKPOINTS}/{entry['name']}")
        predictions = tracking.download(resume.run_id, artifacts.predictions(entry["name"]))
        run.log_artifact(predictions, artifacts.EVALUATION)
        rng = artifacts.rng_states(entry["name"])
        if rng in tracking.artifact_names(resume.run_id, artifacts.TRAINING):
            run.log_artifact(tracking.download(resume.run_id, rng), artifacts.TRAINING)
    artifacts.save_checkpoint_index(resume.index, out / artifacts.CHECKPOINT_INDEX)
    run.log_artifact(out / artifacts.CHECKPOINT_INDEX, artifacts.CHECKPOINTS)
    for step, metrics in tracking.epoch_metrics(resume.run_id, up_to=resume.epoch).items():
        run.log_metrics(metrics, step=step)
    run.set_tags({tracking.RESUMED_TAG: f"{resume.run_id}@epoch-{resume.epoch}"})


def texts_of(frame) -> list[str]:
    """Every text field (both sides of pair tasks): what tokenizers are trained or trimmed on."""
    return [*frame[schema.TEXT], *frame[schema.TEXT_PAIR].dropna()]


def _counts(frame) -> dict[str, int]:
    return frame[schema.LANGUAGE].value_counts(sort=False).to_dict()
