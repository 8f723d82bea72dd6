"""The influence step's scoring loops, shared by every method: chunk by chunk, each finished
chunk saved and logged at once (so an interrupted run resumes where it stopped), then the
chunks streamed into the logged outputs.

Checkpoints are the outer loop (each loaded once), then test chunks (test side cached
once), then train chunks. The train chunk is split across Accelerate processes and the
partial blocks summed, which equals the one-process result. A method that replays the
fine-tuning (metagradient) scores one test row per chunk through the replay instead.
"""

from __future__ import annotations

import functools
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from tqdm.auto import tqdm

from xlinfluence import artifacts, modeling
from xlinfluence.analysis.topk import StreamingTopK, topk_table_from
from xlinfluence.attribution.method import Method, ReplayMethod
from xlinfluence.data.batching import TokenizedExamples, make_loader
from xlinfluence.tracin.chunks import Chunk, ChunkStore
from xlinfluence.tracin.engine import block_index, row_blocks
from xlinfluence.tracin.selection import parameter_filter

if TYPE_CHECKING:  # the config package imports the registry that imports this package
    from xlinfluence.config import InfluenceConfig
    from xlinfluence.tracking import StepRun

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Scoring:
    """One influence run's scoring: the method, what it scores and where chunks go.
    `run` logs its metrics and chunks; `checkpoint(name)` is a checkpoint's folder."""

    method: Method
    config: InfluenceConfig  # params, precision, batch_size, contraction_rows, top_k
    run: StepRun
    store: ChunkStore
    plan: list[Chunk]
    done: set[str]
    train: pd.DataFrame
    test: pd.DataFrame
    checkpoint: Callable[[str], Path]

    @property
    def wants_self(self) -> bool:
        return self.method.wants_self(self.config.self_influence)

    @property
    def todo(self) -> list[Chunk]:
        return [chunk for chunk in self.plan if chunk.filename not in self.done]


def score_checkpoints(job: Scoring, accelerator, max_length: int, test_gradients: str) -> None:
    """Every chunk not yet done, checkpoint by checkpoint; each logged as soon as it is."""
    config, run, store, plan, todo = job.config, job.run, job.store, job.plan, job.todo
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc=f"{config.method} chunks",
               disable=not accelerator.is_main_process)  # fmt: skip
    first_rows = plan[0].rows if plan else None
    positions = {name: i for i, name in enumerate(dict.fromkeys(c.checkpoint for c in plan))}
    for name in dict.fromkeys(chunk.checkpoint for chunk in todo):
        start = time.perf_counter()
        with accelerator.local_main_process_first():
            directory = job.checkpoint(name)
        model, tokenizer = modeling.load_checkpoint(directory)
        model.to(accelerator.device)
        train_examples = TokenizedExamples(job.train, tokenizer, max_length)
        test_examples = TokenizedExamples(job.test, tokenizer, max_length)
        pairs = 0  # (test, train) pairs scored at this checkpoint
        wants_self = job.wants_self
        with job.method.scorer(
            model, parameter_filter(config.params, model), PRECISIONS[config.precision],
            functools.partial(make_loader, train_examples, config.batch_size,
                              bucket_by_length=True),
            test_gradients,
        ) as scorer:  # fmt: skip
            for rows in dict.fromkeys(c.rows for c in todo if c.checkpoint == name):
                cached = None  # the last chunk's cache goes before the next one is built
                test_loader = make_loader(
                    test_examples, config.batch_size, indices=rows, bucket_by_length=True
                )
                cached = scorer.test_cache(list(test_loader), with_self=wants_self)
                row_of = cached.index - rows.start  # cache order -> position in the chunk
                for chunk in (c for c in todo if c.checkpoint == name and c.rows == rows):
                    with_self = wants_self and rows == first_rows  # once per checkpoint
                    block = torch.zeros(len(rows), len(chunk.cols))
                    own = torch.zeros(len(chunk.cols))
                    with accelerator.split_between_processes(list(chunk.cols)) as shard:
                        loader = make_loader(
                            train_examples, config.batch_size, indices=shard,
                            bucket_by_length=True,
                        )  # fmt: skip
                    for batches in row_blocks(loader, config.contraction_rows):
                        scores, self_scores = scorer.train_block(
                            batches, cached, with_self=with_self
                        )
                        col = block_index(batches) - chunk.cols.start
                        block[row_of.unsqueeze(1), col.unsqueeze(0)] = scores.T.float().cpu()
                        if with_self:
                            own[col] = self_scores.float().cpu()
                    block = accelerator.reduce(block.to(accelerator.device), "sum").cpu()
                    own = accelerator.reduce(own.to(accelerator.device), "sum").cpu()
                    test_self = None
                    if wants_self:
                        test_self = torch.zeros(len(rows))
                        test_self[row_of] = cached.self_scores.float()
                    if accelerator.is_main_process:
                        path = store.save(chunk, block, test_self, own if with_self else None)
                        run.log_artifact(path, f"{artifacts.CHUNKS}/{chunk.checkpoint}")
                    pairs += len(rows) * len(chunk.cols)
                    bar.update()
        seconds = time.perf_counter() - start
        run.log_metrics(
            {
                "seconds_per_checkpoint": seconds,
                # train examples scored against the whole test set, per second
                "train_examples_per_second": pairs / len(job.test) / seconds,
                "peak_memory_mb": peak_memory_mb(accelerator.device),
            },
            step=positions[name],
        )
    bar.close()
    accelerator.wait_for_everyone()


def score_replayed(
    job: Scoring, method: ReplayMethod, replay: Callable[[], tuple[object, float]]
) -> None:
    """Each test row's scores through the replayed fine-tuning (`replay()`: the replay and
    its parameter difference from the run's last checkpoint), one chunk per row; `method`
    is the job's, as the ReplayMethod that scores a row."""
    todo = job.todo
    if not todo:
        return
    start = time.perf_counter()
    rerun, difference = replay()
    job.run.log_metrics({"replay_parameter_difference": difference, "replay_steps":
                         len(rerun.batches), "replay_segment": rerun.segment})  # fmt: skip
    outputs = 0
    for chunk in tqdm(todo, desc=f"{method.name} chunks"):
        block = torch.stack([method.row_scores(rerun, row) for row in chunk.rows])
        path = job.store.save(chunk, block, None, None)
        job.run.log_artifact(path, f"{artifacts.CHUNKS}/{chunk.checkpoint}")
        outputs += len(chunk.rows)
    seconds = time.perf_counter() - start
    job.run.log_metrics({"seconds_per_output": seconds / outputs,
                         "peak_memory_mb": peak_memory_mb(torch.device("cpu"))})  # fmt: skip


def write_outputs(job: Scoring, checkpoints, test_rows, train_cols, out: Path) -> None:
    """Stream the chunk files into the final tensors, top-k table and manifest."""
    config, store, train, test = job.config, job.store, job.train, job.test
    names = [c["name"] for c in checkpoints] + [artifacts.TOTAL]
    lr = {c["name"]: c["learning_rate"] for c in checkpoints}
    topk = {name: StreamingTopK(len(test), config.top_k) for name in names}
    full = (
        {name: torch.zeros(len(test), len(train)) for name in names}
        if config.store_scores
        else None
    )
    self_influence = {name: torch.zeros(len(train)) for name in names}
    for rows in test_rows:
        row_index = torch.arange(rows.start, rows.stop)
        for cols in train_cols:
            col_index = torch.arange(cols.start, cols.stop)
            total = torch.zeros(len(rows), len(cols))
            for checkpoint in checkpoints:
                name = checkpoint["name"]
                tensors = store.load(Chunk(name, rows, cols))
                if "train_self" in tensors:
                    self_influence[name][col_index] = tensors["train_self"]
                # train self-scores: from test_rows[0]
                block = job.method.normalise(
                    tensors["scores"], tensors.get("test_self"), self_influence[name][col_index]
                )
                total += lr[name] * block
                _keep(name, block, row_index, col_index, topk, full)
            _keep(artifacts.TOTAL, total, row_index, col_index, topk, full)
    if job.wants_self:
        self_influence[artifacts.TOTAL] = sum(lr[n] * self_influence[n] for n in lr)
        artifacts.save_scores(self_influence, out / artifacts.SELF_INFLUENCE)
    if full is not None:
        artifacts.save_scores(full, out / artifacts.SCORES)
    table = topk_table_from({name: s.result() for name, s in topk.items()}, train, test)
    table.to_parquet(out / artifacts.TOPK, index=False)
    artifacts.write_json(
        {
            "train_run_id": config.train_run_id,
            "resume_run_id": config.resume_run_id,
            "train_ids": train["id"].tolist(),
            "test_ids": test["id"].tolist(),
            "checkpoints": checkpoints,
            "params": config.params,
            "precision": config.precision,
            "method": config.method,
            "score_names": names,
            "top_k": config.top_k,
            "has_full_scores": config.store_scores,
        },
        out / artifacts.INFLUENCE_MANIFEST,
    )


def _keep(name, block, rows, cols, topk, full) -> None:
    topk[name].update(block, rows, cols)
    if full is not None:
        full[name][rows.unsqueeze(1), cols.unsqueeze(0)] = block


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
