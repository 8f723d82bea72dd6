"""The influence step: one attribution method's score of every train example on every test
example (attribution/: the registry of methods; by default dot TracIn, the paper's).

The step plans the chunks (checkpoints x test rows x train columns; a replayed method, one
test row per chunk and no checkpoints), opens the run, fetches the chunks an interrupted
attempt finished (same run, or `resume_run_id`), has attribution/scoring.py compute the
rest, each logged as soon as it is written, and logs the outputs it streams them into:
scores.safetensors, self_influence.safetensors, topk.parquet and manifest.json.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from transformers import AutoTokenizer

from xlinfluence import artifacts, modeling, provenance, tracking
from xlinfluence.attribution import METHODS
from xlinfluence.attribution.scoring import (
    Scoring,
    score_checkpoints,
    score_replayed,
    write_outputs,
)
from xlinfluence.config import InfluenceConfig
from xlinfluence.data.batching import TokenizedExamples
from xlinfluence.errors import ConfigError
from xlinfluence.steps import replay, set_threads
from xlinfluence.steps.upstream import TrainRun
from xlinfluence.tracin.chunks import Chunk, ChunkStore, fingerprint, ranges
from xlinfluence.tracin.memory import given_chunk_way, plan_test_side
from xlinfluence.tracin.selection import parameter_filter

REPLAY = "fine-tuning"  # the one score name of a replayed method (no checkpoints)


def run(config: InfluenceConfig) -> str:
    accelerator = Accelerator()  # precision: the scorer autocasts the forward pass only
    try:
        return _influence(config, accelerator)
    finally:
        accelerator.end_training()  # destroys the process group; without it gloo aborts at exit


def _influence(config: InfluenceConfig, accelerator: Accelerator) -> str:
    set_threads(config.threads)
    if config.resume_run_id:
        tracking.fetch_run(config.resume_run_id, step=InfluenceConfig.step, finished=False)
    with accelerator.local_main_process_first():
        upstream = TrainRun.fetch(config.train_run_id)
    train, test, index = upstream.train, upstream.test, upstream.checkpoints
    max_length = upstream.config.max_length
    if not 1 <= config.top_k <= len(train):
        raise ConfigError(
            f"top_k={config.top_k} must be between 1 and the {len(train)} training examples "
            f"of run {config.train_run_id}; lower top_k."
        )
    method = METHODS[config.method]
    method.check(config, accelerator.num_processes)
    if method.replays:
        checkpoints = [{"name": REPLAY, "epoch": index[-1]["epoch"], "step": index[-1]["step"],
                        "learning_rate": 1.0}]  # fmt: skip
        test_chunk = config.test_chunk_size or 1  # one reverse pass per test example
        test_gradients = "keep"  # no TracIn test side
    else:
        checkpoints = _select_checkpoints(config.checkpoint_names, index)
        test_chunk, test_gradients = _plan_test_side(
            config, upstream.checkpoint, checkpoints[0]["name"], accelerator, train, test,
            max_length, method.test_gradient_way(config.test_gradients),
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
            out / artifacts.CHUNKS,
            fingerprint(
                train_run_id=config.train_run_id, params=config.params,
                precision=config.precision, rows=test_chunk,
                cols=config.train_chunk_size, code=provenance.numbers_version(config.step),
                n_train=len(train), n_test=len(test),
                with_self=method.wants_self(config.self_influence), scores=method.chunks,
            ),
        )  # fmt: skip
        done = _resume(config, run, store, plan) if accelerator.is_main_process else None
        done = broadcast_object_list([done])[0]  # every process skips the same chunks
        run.log_metrics(
            {"num_processes": accelerator.num_processes, "chunks_total": len(plan),
             "chunks_reused": len(done), "test_chunk_size": test_chunk}
        )  # fmt: skip
        run.set_tags({"test_gradients": test_gradients})
        job = Scoring(method, config, run, store, plan, set(done), train, test,
                      upstream.checkpoint)  # fmt: skip
        if method.replays:
            score_replayed(job, method, lambda: replay.verified(upstream))
        else:
            score_checkpoints(job, accelerator, max_length, test_gradients)
        if accelerator.is_main_process:
            write_outputs(job, checkpoints, test_rows, train_cols, out)
            run.log_artifact(out / artifacts.INFLUENCE_MANIFEST, artifacts.INFLUENCE)
            for name in (artifacts.SCORES, artifacts.SELF_INFLUENCE, artifacts.TOPK):
                if (out / name).exists():
                    run.log_artifact(out / name, artifacts.INFLUENCE)
        accelerator.wait_for_everyone()
        return run.run_id or ""


def _plan_test_side(
    config, checkpoint, name: str, accelerator, train, test, max_length: int, way: str
):
    """(test examples per chunk, "keep" or "reform"): test_chunk_size=0 takes as many as
    fit the device, each sized by its own length in tokens and the longest train
    example's, and way=auto picks how the gradients are held (tracin.memory.plan_test_side);
    a given test_chunk_size keeps them unless way says reform."""
    if config.test_chunk_size:  # no model or tokenizer needed
        return config.test_chunk_size, given_chunk_way(way)
    with accelerator.local_main_process_first():
        directory = checkpoint(name)
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
    sources = [run.existing_artifacts(artifacts.CHUNKS, staging / "own")]
    if config.resume_run_id:
        sources.append(
            tracking.download_partial(config.resume_run_id, artifacts.CHUNKS, staging / "other")
        )
    for folder in filter(None, sources):
        shutil.copytree(folder, store.root, dirs_exist_ok=True)
    done = [chunk.filename for chunk in plan if store.done(chunk)]
    if config.resume_run_id:  # the new run holds every chunk it is made of
        for chunk in plan:
            if chunk.filename in done:
                run.log_artifact(store.path(chunk), f"{artifacts.CHUNKS}/{chunk.checkpoint}")
    return done


def _select_checkpoints(names: tuple[str, ...] | None, index: list[dict]) -> list[dict]:
    """The checkpoints `names` asks for, in its order (None: all of the run's)."""
    if names is None:
        return index
    by_name = {c["name"]: c for c in index}
    unknown = [name for name in names if name not in by_name]
    if unknown or not names:
        raise ConfigError(
            f"checkpoints={','.join(names)!r}: unknown {unknown}; the train run has "
            f"{list(by_name)} (or use 'all')."
        )
    return [by_name[name] for name in names]
