"""The influence step: one attribution method's score of every train example on every test
example (tracin/methods.py; by default cosine TracIn).

Checkpoints are the outer loop (each loaded once), then test chunks (test side cached
once), then train chunks. Each finished chunk is written and logged at once, so an
interrupted run resumes where it stopped (same run, or `resume_run_id`). The train chunk
is split across Accelerate processes and the partial blocks summed, which equals the
one-process result. Finally the chunks are streamed into the logged outputs:
scores.safetensors, self_influence.safetensors, topk.parquet and manifest.json. A method
that replays the fine-tuning (metagradient) has no checkpoints: one chunk per test row.
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from xlinfluence import artifacts, modeling, provenance, tracking
from xlinfluence.analysis.topk import StreamingTopK, topk_table_from
from xlinfluence.config import InfluenceConfig, TrainConfig
from xlinfluence.data.batching import TokenizedExamples, make_loader
from xlinfluence.errors import ConfigError
from xlinfluence.steps import replay, set_threads
from xlinfluence.steps.upstream import train_manifests
from xlinfluence.tracin.chunks import Chunk, ChunkStore, fingerprint, ranges
from xlinfluence.tracin.engine import block_index, cosine_normalized, row_blocks
from xlinfluence.tracin.memory import given_chunk_way, plan_test_side
from xlinfluence.tracin.methods import METHODS
from xlinfluence.tracin.selection import parameter_filter

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CHUNKS = f"{artifacts.INFLUENCE}/chunks"
REPLAY = "fine-tuning"  # the one score name of a replayed method (no checkpoints)


def run(config: InfluenceConfig) -> str:
    accelerator = Accelerator()  # precision: the scorer autocasts the forward pass only
    try:
        return _influence(config, accelerator)
    finally:
        accelerator.end_training()  # destroys the process group; without it gloo aborts at exit


def _influence(config: InfluenceConfig, accelerator: Accelerator) -> str:
    set_threads(config.threads)
    train_run = tracking.fetch_run(config.train_run_id, step=TrainConfig.step)
    if config.resume_run_id:
        tracking.fetch_run(config.resume_run_id, step=InfluenceConfig.step, finished=False)
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
    method = METHODS[config.method]
    if config.test_gradients == "reform" and not method.reforms:
        raise ConfigError(
            f"test_gradients=reform re-forms TracIn's per-example test gradients (method dot "
            f"or cosine); method={config.method} holds its own test side. Use "
            "test_gradients=auto or keep."
        )
    if method.replays:
        _check_replayable(config, accelerator)
        checkpoints = [{"name": REPLAY, "epoch": index[-1]["epoch"], "step": index[-1]["step"],
                        "learning_rate": 1.0}]  # fmt: skip
        test_chunk = config.test_chunk_size or 1  # one reverse pass per test example
        test_gradients = "keep"  # no TracIn test side
    else:
        checkpoints = _select_checkpoints(config.checkpoints, index)
        test_chunk, test_gradients = _plan_test_side(
            config, checkpoints[0]["name"], accelerator, train, test, max_length,
            config.test_gradients if method.reforms else "keep",
        )  # fmt: skip
    test_rows = ranges(len(test), test_chunk)
    train_cols = ranges(len(train), None if method.replays else config.train_chunk_size)
    plan = [Chunk(c["name"], r, k) for c in checkpoints for r in test_rows for k in train_cols]

    with (
        tracking.step_run(config, is_main=accelerator.is_main_process, system_metrics=True) as run,
        tempfile.TemporaryDirectory(prefix="xlinfluence-influence-") as tmp,
    ):
        out = Path(tmp)
        store = ChunkStore(
            out / CHUNKS,
            fingerprint(
                train_run_id=config.train_run_id, params=config.params,
                precision=config.precision, rows=test_chunk,
                cols=config.train_chunk_size, code=provenance.numbers_version(config.step),
                n_train=len(train), n_test=len(test), with_self=_wants_self(config),
                scores=METHODS[config.method].chunks,
            ),
        )  # fmt: skip
        done = _resume(config, run, store, plan) if accelerator.is_main_process else None
        done = broadcast_object_list([done])[0]  # every process skips the same chunks
        run.log_metrics(
            {"num_processes": accelerator.num_processes, "chunks_total": len(plan),
             "chunks_reused": len(done), "test_chunk_size": test_chunk}
        )  # fmt: skip
        run.set_tags({"test_gradients": test_gradients})
        if method.replays:
            _compute_replay(config, run, store, plan, set(done))
        else:
            _compute(config, accelerator, run, store, plan, set(done), train, test, max_length,
                     test_gradients)  # fmt: skip
        if accelerator.is_main_process:
            _write_outputs(config, checkpoints, store, test_rows, train_cols, train, test, out)
            run.log_artifact(out / artifacts.INFLUENCE_MANIFEST, artifacts.INFLUENCE)
            for name in (artifacts.SCORES, artifacts.SELF_INFLUENCE, artifacts.TOPK):
                if (out / name).exists():
                    run.log_artifact(out / name, artifacts.INFLUENCE)
        accelerator.wait_for_everyone()
        return run.run_id or ""


def _plan_test_side(config, name: str, accelerator, train, test, max_length: int, way: str):
    """(test examples per chunk, "keep" or "reform"): test_chunk_size=0 takes as many as
    fit the device, each sized by its own length in tokens and the longest train
    example's, and way=auto picks how the gradients are held (tracin.memory.plan_test_side);
    a given test_chunk_size keeps them unless way says reform."""
    if config.test_chunk_size:  # no model or tokenizer needed
        return config.test_chunk_size, given_chunk_way(way)
    with accelerator.local_main_process_first():
        directory = tracking.download(config.train_run_id, f"{artifacts.CHECKPOINTS}/{name}")
    model = modeling.skeleton(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    test_lengths = TokenizedExamples(test, tokenizer, max_length).lengths()
    train_lengths = TokenizedExamples(train, tokenizer, max_length).lengths()
    return plan_test_side(
        model, parameter_filter(config.params, model), accelerator.device, len(test),
        test_lengths=list(test_lengths), train_length=max(train_lengths, default=1),
        test_chunk_size=config.test_chunk_size, test_gradients=way,
    )  # fmt: skip


def _resume(config, run, store: ChunkStore, plan: list[Chunk]) -> list[str]:
    """Fetch finished chunks of this run (if re-attached) or of resume_run_id; log reused ones.

    Returns the file names of the chunks that need no recomputation.
    """
    staging = store.root.parent / "resume"
    sources = [run.existing_artifacts(CHUNKS, staging / "own")]
    if config.resume_run_id:
        sources.append(tracking.download_partial(config.resume_run_id, CHUNKS, staging / "other"))
    for folder in filter(None, sources):
        shutil.copytree(folder, store.root, dirs_exist_ok=True)
    done = [chunk.filename for chunk in plan if store.done(chunk)]
    if config.resume_run_id:  # the new run holds every chunk it is made of
        for chunk in plan:
            if chunk.filename in done:
                run.log_artifact(store.path(chunk), f"{CHUNKS}/{chunk.checkpoint}")
    return done


def _compute(
    config, accelerator, run, store, plan, done, train, test, max_length, test_gradients
) -> None:
    """Every chunk not yet done, checkpoint by checkpoint; each logged as soon as it is."""
    todo = [chunk for chunk in plan if chunk.filename not in done]
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc=f"{config.method} chunks",
               disable=not accelerator.is_main_process)  # fmt: skip
    first_rows = plan[0].rows if plan else None
    positions = {name: i for i, name in enumerate(dict.fromkeys(c.checkpoint for c in plan))}
    for name in dict.fromkeys(chunk.checkpoint for chunk in todo):
        start = time.perf_counter()
        with accelerator.local_main_process_first():
            directory = tracking.download(config.train_run_id, f"{artifacts.CHECKPOINTS}/{name}")
        model, tokenizer = modeling.load_checkpoint(directory)
        model.to(accelerator.device)
        train_examples = TokenizedExamples(train, tokenizer, max_length)
        test_examples = TokenizedExamples(test, tokenizer, max_length)
        pairs = 0  # (test, train) pairs scored at this checkpoint
        wants_self = _wants_self(config)
        with _scorer(config, model, train_examples, test_gradients) as scorer:
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
                        run.log_artifact(path, f"{CHUNKS}/{chunk.checkpoint}")
                    pairs += len(rows) * len(chunk.cols)
                    bar.update()
        seconds = time.perf_counter() - start
        run.log_metrics(
            {
                "seconds_per_checkpoint": seconds,
                # train examples scored against the whole test set, per second
                "train_examples_per_second": pairs / len(test) / seconds,
                "peak_memory_mb": _peak_memory_mb(accelerator.device),
            },
            step=positions[name],
        )
    bar.close()
    accelerator.wait_for_everyone()


def _check_replayable(config: InfluenceConfig, accelerator) -> None:
    """A replayed method differentiates every parameter in fp32 on one process."""
    wrong = [
        f"{name}={value!r} (use {fix})"
        for name, value, ok, fix in (
            ("params", config.params, config.params == "all", "'all'"),
            ("precision", config.precision, config.precision == "fp32", "'fp32'"),
            ("num_processes", accelerator.num_processes, accelerator.num_processes == 1, "1"),
        )
        if not ok
    ]
    if wrong:
        raise ConfigError(
            f"method={config.method} replays the whole fine-tuning over every parameter in "
            f"fp32 on one process; this run has {', '.join(wrong)}."
        )


def _compute_replay(config, run, store, plan, done) -> None:
    """Each test row's exact data-weight gradient through the replayed fine-tuning; a score
    is minus the derivative of the test loss (positive: the row helps, as for TracIn)."""
    todo = [chunk for chunk in plan if chunk.filename not in done]
    if not todo:
        return
    start = time.perf_counter()
    rerun, difference = replay.verified(config.train_run_id)
    run.log_metrics({"replay_parameter_difference": difference, "replay_steps":
                     len(rerun.batches), "replay_segment": rerun.segment})  # fmt: skip
    outputs = 0
    for chunk in tqdm(todo, desc=f"{config.method} chunks"):
        block = torch.stack([-rerun.test_loss_gradient([row]) for row in chunk.rows])
        path = store.save(chunk, block, None, None)
        run.log_artifact(path, f"{CHUNKS}/{chunk.checkpoint}")
        outputs += len(chunk.rows)
    seconds = time.perf_counter() - start
    run.log_metrics({"seconds_per_output": seconds / outputs,
                     "peak_memory_mb": _peak_memory_mb(torch.device("cpu"))})  # fmt: skip


def _scorer(config: InfluenceConfig, model, train_examples, test_gradients: str):
    """The method's scorer at this checkpoint (tracin/methods.py); a method that fits
    (EK-FAC) reads the whole training set, length-bucketed, once per checkpoint."""
    method = METHODS[config.method]
    fit = ()
    if method.fits:
        fit = make_loader(train_examples, config.batch_size, bucket_by_length=True)
    return method.scorer(
        model, parameter_filter(config.params, model), PRECISIONS[config.precision], fit,
        test_gradients,
    )  # fmt: skip


def _write_outputs(config, checkpoints, store, test_rows, train_cols, train, test, out) -> None:
    """Stream the chunk files into the final tensors, top-k table and manifest."""
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
                block = tensors["scores"]
                if METHODS[config.method].normalised:  # train self-scores: from test_rows[0]
                    train_self = self_influence[name][col_index]
                    block = cosine_normalized(block, tensors["test_self"], train_self)
                total += lr[name] * block
                _keep(name, block, row_index, col_index, topk, full)
            _keep(artifacts.TOTAL, total, row_index, col_index, topk, full)
    if _wants_self(config):
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


def _wants_self(config: InfluenceConfig) -> bool:
    method = METHODS[config.method]
    return method.self_scores and (config.self_influence or method.normalised)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
