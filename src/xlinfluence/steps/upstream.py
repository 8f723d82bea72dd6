"""Upstream runs as objects, shared by the steps, `explain` and the experiments: a finished
train run and a finished influence run, each checked once when fetched and giving its
artifacts on demand (downloads are cached, so each is fetched from the store once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from xlinfluence import artifacts, tracking
from xlinfluence.analysis.topk import TOPK_COLUMNS, require_columns
from xlinfluence.config import AnalyzeConfig, InfluenceConfig, TrainConfig
from xlinfluence.data import schema
from xlinfluence.errors import ArtifactError, RunLookupError


@dataclass(frozen=True)
class TrainRun:
    """A finished train run: its parameters as a config, its final metrics, its (train,
    test) manifests in tensor order and its checkpoint index; checkpoints, labels and RNG
    states on demand."""

    run_id: str
    config: TrainConfig
    metrics: dict[str, float]
    train: pd.DataFrame
    test: pd.DataFrame
    checkpoints: list[dict]

    @classmethod
    def fetch(cls, run_id: str) -> TrainRun:
        """Refused unless `run_id` is a FINISHED train run (tracking.fetch_run)."""
        run = tracking.fetch_run(run_id, step=TrainConfig.step)
        train, test = train_manifests(run_id)
        index = artifacts.load_checkpoint_index(
            tracking.download(run_id, artifacts.CHECKPOINT_INDEX)
        )
        config = TrainConfig.from_params(tracking.run_params(run))
        return cls(run_id, config, dict(run.data.metrics), train, test, index)

    def checkpoint(self, name: str) -> Path:
        """The folder of checkpoint `name` (e.g. epoch-3)."""
        return tracking.download(self.run_id, f"{artifacts.CHECKPOINTS}/{name}")

    def labels(self) -> list[str]:
        return artifacts.read_json(tracking.download(self.run_id, artifacts.LABELS))

    def rng_states(self, name: str) -> list[torch.Tensor]:
        """The CPU RNG state before each step of the epoch that ended at checkpoint `name`."""
        return artifacts.load_rng_states(tracking.download(self.run_id, artifacts.rng_states(name)))


@dataclass(frozen=True)
class InfluenceRun:
    """A finished influence run and the finished train run it scored, their example ids
    checked against each other; its scores, one matrix of them, or its top-k table on
    demand."""

    run_id: str
    manifest: dict
    train_run: TrainRun

    @classmethod
    def fetch(cls, run_id: str) -> InfluenceRun:
        """Refused unless `run_id` is a FINISHED influence run of a FINISHED train run whose
        manifests hold the example ids it scored."""
        tracking.fetch_run(run_id, step=InfluenceConfig.step)
        manifest = artifacts.read_json(tracking.download(run_id, artifacts.INFLUENCE_MANIFEST))
        train_run = TrainRun.fetch(manifest.get("train_run_id", ""))
        if (
            manifest.get("train_ids") != train_run.train[schema.ID].tolist()
            or manifest.get("test_ids") != train_run.test[schema.ID].tolist()
        ):
            raise ArtifactError(
                f"influence run {run_id}'s example ids do not match its train run's "
                "manifests; the artifacts were altered or mixed up: re-run the influence step."
            )
        return cls(run_id, manifest, train_run)

    @property
    def train(self) -> pd.DataFrame:
        return self.train_run.train

    @property
    def test(self) -> pd.DataFrame:
        return self.train_run.test

    @property
    def score_names(self) -> list[str]:
        """The checkpoints it scored, then "total"."""
        names = self.manifest.get("score_names") or [
            *(c["name"] for c in self.manifest.get("checkpoints", [])),
            artifacts.TOTAL,
        ]
        return list(names)

    @property
    def has_full_scores(self) -> bool:
        """False for a store_scores=false run, which kept only its top-k table."""
        return bool(self.manifest.get("has_full_scores", True))

    @property
    def kept_top_k(self) -> int:
        return int(self.manifest.get("top_k", 0))

    def scores(self) -> dict[str, torch.Tensor]:
        """Every (n_test, n_train) score matrix by name, "total" the lr-weighted sum."""
        return artifacts.load_scores(
            tracking.download(self.run_id, artifacts.SCORES),
            n_test=len(self.test),
            n_train=len(self.train),
        )

    def matrix(self, name: str) -> torch.Tensor:
        """One named score matrix, without reading the others."""
        return artifacts.load_score_matrix(
            tracking.download(self.run_id, artifacts.SCORES),
            name,
            (len(self.test), len(self.train)),
        )

    def topk(self) -> pd.DataFrame:
        """Its top-k table (every checkpoint's and the total's), columns checked."""
        path = tracking.download(self.run_id, artifacts.TOPK)
        try:
            table = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several unrelated types for bad files
            raise ArtifactError(
                f"artifact {path} is unreadable or corrupt ({err}); re-run the influence step."
            ) from err
        require_columns(table, TOPK_COLUMNS, what=f"top-k table {path}")
        return table


def influence_run_of(run_id: str) -> str:
    """The influence run that `run_id` is, or that an analyze or main run names."""
    step = tracking.run_step(run_id)
    if step == InfluenceConfig.step:
        return run_id
    if step == AnalyzeConfig.step:
        params = tracking.run_params(tracking.fetch_run(run_id, step=step))
        return params.get("influence_run_id", "")
    if step == "main":  # config.main.MainConfig, which imports the experiments, hence us
        run = tracking.fetch_run(run_id, step=step)
        child = run.data.tags.get(tracking.CHILD_TAG.format(step=InfluenceConfig.step), "")
        if child:
            return child
        raise RunLookupError(
            f"main run {run_id} has no influence child (an experiment's parent run?); "
            "pass the influence or analyze run of one of its settings."
        )
    raise RunLookupError(
        f"run {run_id} is a {step or 'non-xlinfluence'} run, not an influence or analyze run; "
        "pass the ID of an influence or analyze run (`xlinfluence main` prints both)."
    )


def train_manifests(train_run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) example frames of a train run, in tensor order."""
    train = artifacts.load_manifest(tracking.download(train_run_id, artifacts.TRAIN_MANIFEST))
    test = artifacts.load_manifest(tracking.download(train_run_id, artifacts.TEST_MANIFEST))
    return train, test


def summed_scores(influence_run_id: str) -> tuple[torch.Tensor, pd.DataFrame, pd.DataFrame]:
    """An influence run's lr-weighted summed scores (n_test, n_train) with the (train, test)
    frames of the train run it scored."""
    run = InfluenceRun.fetch(influence_run_id)
    return run.scores()[artifacts.TOTAL], run.train, run.test
