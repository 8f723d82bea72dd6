"""Checks against the world before a step creates its run: files, runs, checkpoints, sizes.

A config is already valid in itself (checks.py, when it was built); here each path it
names must exist, each run ID must name a run of the right step (FINISHED where it
must be), and values must fit what those runs hold (checkpoint names, top_k). Errors name
the parameter, like the config's own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xlinfluence import artifacts, tracking
from xlinfluence.attribution import METHODS
from xlinfluence.checks import PathRef, RunRef, refuse
from xlinfluence.config import AnalyzeConfig, InfluenceConfig, StepConfig, check_of
from xlinfluence.data import subsets
from xlinfluence.errors import RunLookupError


def check(config: StepConfig) -> None:
    """Raise a ConfigError naming the first parameter the world does not agree with (an
    AccessError first, where the tracking server refuses this login)."""
    tracking.check_access()
    for f in dataclasses.fields(config):
        value, rule = getattr(config, f.name), check_of(f)
        if isinstance(rule, PathRef) and value:
            _path(f.name, value, rule)
        elif isinstance(rule, RunRef) and value:
            _run(f.name, value, rule)
    if getattr(config, "remove", "") and not subsets.is_selection(config.remove):
        run_id = config.remove.split(":")[1]
        _run("remove", run_id, RunRef("influence"))
    if isinstance(config, InfluenceConfig):
        _influence(config)
    elif isinstance(config, AnalyzeConfig):
        _analyze(config)
    if config.step in ("train", "main"):
        _languages(config)
        _train_precision(config)


def _path(name: str, value: str, rule: PathRef) -> None:
    path = Path(value).expanduser()
    kinds = {"file": path.is_file(), "folder": path.is_dir(), "file or folder": path.exists()}
    if not kinds[rule.kind]:
        raise refuse(name, value, f"no such {rule.kind}", f"give {rule.accepts}")


def _run(name: str, value: str, rule: RunRef) -> None:
    try:
        tracking.fetch_run(value, step=rule.step, finished=rule.finished)
    except RunLookupError as err:
        raise refuse(name, value, str(err).rstrip("."), f"give {rule.accepts}") from err


def _train_precision(config) -> None:
    """fp16 autocast is a GPU feature: on a CPU Accelerate would train in fp32 under an
    fp16 label."""
    import torch

    if config.train_precision == "fp16" and not torch.cuda.is_available():
        raise refuse(
            "train_precision", "fp16", "fp16 autocast needs a CUDA device and none is here",
            "use bf16 (native on CPUs with AVX512-BF16 or AMX) or fp32",
        )  # fmt: skip


def _influence(config: InfluenceConfig) -> None:
    run = tracking.fetch_run(config.train_run_id, step="train")
    trained = tracking.run_params(run).get("train_precision", "fp32")
    if METHODS[config.method].replays and trained != "fp32":
        raise refuse(
            "method", config.method,
            f"run {config.train_run_id} fine-tuned at train_precision={trained}, and the "
            "replay differentiates an fp32 run",
            f"fine-tune with train_precision=fp32 to score method={config.method}",
        )  # fmt: skip
    n_train = int(run.data.metrics.get("n_train", 0))
    if n_train and config.top_k > n_train:
        raise refuse(
            "top_k",
            config.top_k,
            f"run {config.train_run_id} has {n_train} training examples",
            f"give top_k <= {n_train}",
        )
    if config.checkpoint_names is not None:
        index = artifacts.load_checkpoint_index(
            tracking.download(config.train_run_id, artifacts.CHECKPOINT_INDEX)
        )
        names = [c["name"] for c in index]
        unknown = [n for n in config.checkpoint_names if n not in names]
        if unknown:
            raise refuse(
                "checkpoints",
                config.checkpoints,
                f"{unknown} are not checkpoints of run {config.train_run_id}",
                f"choose from {names}, or 'all'",
            )


def _analyze(config: AnalyzeConfig) -> None:
    run = tracking.fetch_run(config.influence_run_id, step="influence")
    params = InfluenceConfig.canonical(tracking.run_params(run))
    if params["store_scores"] == "false" and config.top_k > int(params["top_k"]):
        raise refuse(
            "top_k",
            config.top_k,
            f"influence run {config.influence_run_id} kept only "
            f"the top {params['top_k']} (store_scores=false)",
            f"give top_k <= {params['top_k']}, or re-run influence with a larger top_k",
        )
    train = tracking.fetch_run(params["train_run_id"], step="train")
    n_train = int(train.data.metrics.get("n_train", 0))
    if n_train and config.top_k > n_train:
        raise refuse(
            "top_k",
            config.top_k,
            f"the train run has {n_train} training examples",
            f"give top_k <= {n_train}",
        )


def _languages(config) -> None:
    """Languages the dataset cannot have, where that is known without reading the data."""
    from xlinfluence.data import available_languages

    available = available_languages(config.dataset, config.data_path)
    if available is None:
        return
    unknown = [c for c in config.language_codes if c not in available]
    if unknown:
        shown = ", ".join(sorted(available)[:60]) + (" ..." if len(available) > 60 else "")
        raise refuse(
            "languages",
            config.languages,
            f"{config.dataset} has no {unknown}",
            f"choose from {shown}",
        )
