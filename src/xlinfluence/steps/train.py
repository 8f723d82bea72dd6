"""The train step: select data, fine-tune, log manifests, checkpoints and metrics."""

from __future__ import annotations

import tempfile
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed

from xlinfluence import artifacts, modeling, tracking
from xlinfluence.config import TrainConfig
from xlinfluence.data import load_splits, schema
from xlinfluence.data.params import parse_column_map, parse_counts, parse_languages
from xlinfluence.steps import set_threads
from xlinfluence.training import CheckpointInfo, EpochMetrics, fine_tune


def run(config: TrainConfig) -> str:
    """Fine-tune per `config`; returns the MLflow run ID."""
    accelerator = Accelerator()
    try:
        return _train(config, accelerator)
    finally:
        accelerator.end_training()  # destroys the process group; without it gloo aborts at exit


def _train(config: TrainConfig, accelerator: Accelerator) -> str:
    set_threads(config.threads)
    set_seed(config.seed)
    languages = parse_languages(config.languages)
    heldout = config.heldout_language.strip() or None
    train_languages = [lang for lang in languages if lang != heldout]
    with accelerator.main_process_first():
        splits = load_splits(
            dataset=config.dataset,
            data_path=config.data_path,
            column_map=parse_column_map(config.column_map),
            languages=languages,
            train_counts=_train_counts(config.train_per_language, train_languages, heldout),
            test_per_language=config.test_per_language,
            heldout_language=heldout,
            seed=config.seed,
        )
    built = modeling.build(
        config.model,
        num_labels=len(splits.label_names),
        train_texts=_texts(splits.train),
        test_texts=_texts(splits.test),
        seed=config.seed,
        trim_vocab=config.trim_vocab,
    )
    with (
        tracking.step_run(config, is_main=accelerator.is_main_process) as run,
        tempfile.TemporaryDirectory(prefix="xlinfluence-train-") as tmp,
    ):
        out = Path(tmp)
        artifacts.save_manifest(splits.train, out / artifacts.TRAIN_MANIFEST)
        artifacts.save_manifest(splits.test, out / artifacts.TEST_MANIFEST)
        artifacts.write_json(splits.label_names, out / artifacts.LABELS)
        run.log_artifacts(out / artifacts.DATA, artifacts.DATA)
        run.log_metrics(
            {
                "n_train": len(splits.train),
                "n_test": len(splits.test),
                "num_processes": accelerator.num_processes,
            }
            | {f"n_train.{k}": v for k, v in _counts(splits.train).items()}
            | {"vocab_size": built.model.config.vocab_size}
        )
        index: list[dict] = []

        def log_epoch(metrics: EpochMetrics, info: CheckpointInfo, directory: Path) -> None:
            run.log_metrics(
                {"train_loss": metrics.train_loss, "learning_rate": info.learning_rate}
                | {f"accuracy.{lang}": acc for lang, acc in metrics.accuracy.items()},
                step=metrics.epoch,
            )
            run.log_artifacts(directory, f"{artifacts.CHECKPOINTS}/{info.name}")
            index.append(info.to_dict())
            artifacts.save_checkpoint_index(index, out / artifacts.CHECKPOINT_INDEX)
            run.log_artifact(out / artifacts.CHECKPOINT_INDEX, artifacts.CHECKPOINTS)

        fine_tune(
            built.model,
            built.tokenizer,
            splits.train,
            splits.test,
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            warmup_ratio=config.warmup_ratio,
            max_length=config.max_length,
            seed=config.seed,
            accelerator=accelerator,
            checkpoint_root=out / "local-checkpoints",
            on_epoch_end=log_epoch,
            vocab_map=built.vocab_map,
        )
        return run.run_id or ""


def _train_counts(text: str, train_languages: list[str], heldout: str | None) -> dict[str, int]:
    """Per-language counts; a count given for the held-out language is ignored, so the same
    counts serve the seen and the zero-shot setting."""
    entries = [e for e in text.split(",") if not (heldout and e.strip().startswith(f"{heldout}="))]
    return parse_counts(",".join(entries), train_languages)


def _texts(frame) -> list[str]:
    """Every text field (both sides of pair tasks): what tokenizers are trained or trimmed on."""
    return [*frame[schema.TEXT], *frame[schema.TEXT_PAIR].dropna()]


def _counts(frame) -> dict[str, int]:
    return frame[schema.LANGUAGE].value_counts(sort=False).to_dict()
