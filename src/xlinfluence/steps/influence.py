"""The influence step: exact TracIn of every train example on every test example.

Checkpoints are the outer loop (each loaded once); the training set is sharded across
Accelerate processes and the per-process partial matrices are summed, so the result is
the one-process result. Logs scores.safetensors, topk.parquet and manifest.json.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from xlinfluence import artifacts, modeling, tracking
from xlinfluence.analysis.topk import topk_table
from xlinfluence.config import InfluenceConfig, TrainConfig
from xlinfluence.data.batching import TokenizedExamples, make_loader
from xlinfluence.errors import ConfigError
from xlinfluence.steps.upstream import train_manifests
from xlinfluence.tracin.engine import checkpoint_scores
from xlinfluence.tracin.selection import parameter_filter

PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def run(config: InfluenceConfig) -> str:
    if config.precision not in PRECISIONS:
        raise ConfigError(f"precision={config.precision!r}; choose one of {sorted(PRECISIONS)}.")
    accelerator = Accelerator(mixed_precision=PRECISIONS[config.precision])
    try:
        return _influence(config, accelerator)
    finally:
        accelerator.end_training()  # destroys the process group; without it gloo aborts at exit


def _influence(config: InfluenceConfig, accelerator: Accelerator) -> str:
    train_run = tracking.fetch_run(config.train_run_id, step=TrainConfig.step)
    max_length = TrainConfig.from_params(tracking.run_params(train_run)).max_length
    with accelerator.local_main_process_first():
        train, test = train_manifests(config.train_run_id)
        index = artifacts.load_checkpoint_index(
            tracking.download(config.train_run_id, artifacts.CHECKPOINT_INDEX)
        )
    if not 1 <= config.top_k <= len(train):
        raise ConfigError(
            f"top_k={config.top_k} must be between 1 and the {len(train)} training examples "
            f"of run {config.train_run_id}; lower top_k."
        )
    selected = _select_checkpoints(config.checkpoints, index)

    with tracking.step_run(config, is_main=accelerator.is_main_process) as run:
        run.log_metrics({"num_processes": accelerator.num_processes})
        scores: dict[str, torch.Tensor] = {}
        total = torch.zeros(len(test), len(train))
        for position, checkpoint in enumerate(selected):
            with accelerator.local_main_process_first():
                directory = tracking.download(
                    config.train_run_id, f"{artifacts.CHECKPOINTS}/{checkpoint['name']}"
                )
            model, tokenizer = modeling.load_checkpoint(directory)
            model.to(accelerator.device)
            train_examples = TokenizedExamples(train, tokenizer, max_length)
            test_examples = TokenizedExamples(test, tokenizer, max_length)
            with accelerator.split_between_processes(list(range(len(train)))) as shard:
                train_loader = make_loader(
                    train_examples, config.batch_size, indices=shard, bucket_by_length=True
                )
            test_loader = make_loader(test_examples, config.batch_size, bucket_by_length=True)
            start = time.perf_counter()
            with accelerator.autocast():
                partial = checkpoint_scores(
                    model,
                    train_loader,
                    test_loader,
                    n_train=len(train),
                    n_test=len(test),
                    param_filter=parameter_filter(config.params, model),
                    test_chunk_size=config.test_chunk_size or None,
                    progress=accelerator.is_main_process,
                )
            matrix = accelerator.reduce(partial.to(accelerator.device), "sum").cpu()
            seconds = time.perf_counter() - start
            scores[checkpoint["name"]] = matrix
            total += checkpoint["learning_rate"] * matrix
            run.log_metrics(
                {
                    "seconds_per_checkpoint": seconds,
                    "train_examples_per_second": len(train) / seconds,
                    "peak_memory_mb": _peak_memory_mb(accelerator.device),
                },
                step=position,
            )
        scores[artifacts.TOTAL] = total

        with tempfile.TemporaryDirectory(prefix="xlinfluence-influence-") as tmp:
            out = Path(tmp)
            artifacts.save_scores(scores, out / artifacts.SCORES)
            topk_table(scores, train, test, config.top_k).to_parquet(
                out / artifacts.TOPK, index=False
            )
            artifacts.write_json(
                {
                    "train_run_id": config.train_run_id,
                    "train_ids": train["id"].tolist(),
                    "test_ids": test["id"].tolist(),
                    "checkpoints": selected,
                    "params": config.params,
                    "precision": config.precision,
                    "score_names": list(scores),
                },
                out / artifacts.INFLUENCE_MANIFEST,
            )
            run.log_artifacts(out / artifacts.INFLUENCE, artifacts.INFLUENCE)
        return run.run_id or ""


def _select_checkpoints(spec: str, index: list[dict]) -> list[dict]:
    if spec.strip() == "all":
        return index
    by_name = {c["name"]: c for c in index}
    wanted = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in by_name]
    if unknown or not wanted:
        raise ConfigError(
            f"checkpoints={spec!r}: unknown {unknown}; the train run has {list(by_name)} "
            "(or use 'all')."
        )
    return [by_name[name] for name in wanted]


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
