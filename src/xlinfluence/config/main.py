"""The config of the main step: the pipeline's parameters and the experiments'.

It lives apart from the step configs because it takes the experiment registry (the names
and the checks of experiment_values), whose drivers build step configs themselves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from xlinfluence import checks
from xlinfluence.checks import refuse
from xlinfluence.config.base import StepConfig, param, same_as
from xlinfluence.config.steps import (
    AnalyzeConfig,
    DataSettings,
    InfluenceConfig,
    TrainConfig,
    check_data,
    data_name_parts,
)
from xlinfluence.experiments import EXPERIMENTS

BACKENDS = ("local", "slurm", "kubernetes")
#: MainConfig fields that only an experiment reads; without_experiment resets them.
EXPERIMENT_FIELDS = (
    "experiment",
    "experiment_values",
    "removal_k",
    "control_draws",
    "subsets",
    "subset_fraction",
    "subset_by",
    "retrain_seeds",
    "removal_steps",
    "cut_fraction",
    "design",
    "pilot_only",
    "workers",
    "backend",
    "backend_config",
)

_T, _I, _A = TrainConfig, InfluenceConfig, AnalyzeConfig  # short names for the fields below


@dataclass(frozen=True)
class MainConfig(DataSettings, StepConfig):
    """train -> influence -> analyze, reusing finished runs with matching parameters."""

    step: ClassVar[str] = "main"

    dataset: str = same_as(_T, "dataset")
    data_path: str = same_as(_T, "data_path")
    column_map: str = same_as(_T, "column_map")
    languages: str = same_as(_T, "languages")
    train_per_language: str = same_as(_T, "train_per_language")
    test_per_language: int = same_as(_T, "test_per_language")
    heldout_language: str = same_as(_T, "heldout_language")
    train_content: str = same_as(_T, "train_content")
    model: str = same_as(_T, "model")
    trim_vocab: bool = same_as(_T, "trim_vocab")
    epochs: int = same_as(_T, "epochs")
    batch_size: int = same_as(_T, "batch_size")
    learning_rate: float = same_as(_T, "learning_rate")
    weight_decay: float = same_as(_T, "weight_decay")
    warmup_ratio: float = same_as(_T, "warmup_ratio")
    max_length: int = same_as(_T, "max_length")
    train_precision: str = same_as(_T, "train_precision")
    seed: int = same_as(_T, "seed")
    threads: int = same_as(_T, "threads")
    checkpoints: str = same_as(_I, "checkpoints")
    params: str = same_as(_I, "params")
    precision: str = same_as(_I, "precision")
    influence_batch_size: int = param(
        _I.batch_size, "influence: training examples per backward pass", checks.AtLeast(1)
    )
    test_chunk_size: int = same_as(_I, "test_chunk_size")
    test_gradients: str = same_as(_I, "test_gradients")
    train_chunk_size: int = same_as(_I, "train_chunk_size")
    contraction_rows: int = same_as(_I, "contraction_rows")
    method: str = same_as(_I, "method")
    store_scores: bool = same_as(_I, "store_scores")
    self_influence: bool = same_as(_I, "self_influence")
    top_k: int = same_as(_A, "top_k")
    accelerate_config: str = param(
        "",
        "Accelerate config for train and influence; empty: plain",
        checks.PathRef("file"),
    )
    experiment: str = param(
        "",
        "'' runs one pipeline; an experiment runs one child per setting and compares them: "
        + "; ".join(f"{e.name}: {e.summary}" for e in EXPERIMENTS.values())
        + " (docs/analysis.md)",
        checks.OneOf(("", *EXPERIMENTS)),
    )
    experiment_values: str = param(
        "",
        "what the experiment varies: "
        + "; ".join(f"{e.name}: {e.values}" for e in EXPERIMENTS.values() if e.values),
        checks.Pattern(r"[\w.:-]*(,[\w.:-]+)*", "empty, or comma-separated values"),
    )
    removal_k: int = param(
        25,
        "counterfactual: training examples removed per (test language, training language)",
        checks.AtLeast(1),
    )
    control_draws: int = param(
        3, "counterfactual: random same-label removals per pair, the control", checks.AtLeast(1)
    )
    subsets: int = param(
        40, "lds: random training subsets, each retrained retrain_seeds times", checks.AtLeast(3)
    )
    subset_fraction: float = param(
        0.5,
        "lds: fraction alpha of each training language a subset keeps",
        checks.Real(0.0, 1.0, strict_low=True),
    )
    subset_by: str = param(
        "rows",
        "lds: draw subsets by rows of each language, by translation groups (pairs: "
        "pair_id), or by rows of each (language, label) cell (labels: every subset keeps the "
        "label proportions, so a score that counts same-label rows cannot predict it)",
        checks.OneOf(("rows", "pairs", "labels")),
    )
    retrain_seeds: int = param(
        3,
        "lds, leave-language-out, language-datamodel: training seeds per retraining "
        "(train_seed 0..S-1)",
        checks.AtLeast(1),
    )
    removal_steps: str = same_as(_T, "removal_steps")
    cut_fraction: float = param(
        0.25,
        "language-datamodel: the fraction of a training language kept where the design cuts "
        "it (label-stratified, a fresh draw per composition)",
        checks.Real(0.0, 1.0, strict_low=True),
    )
    design: str = param(
        "auto",
        "language-datamodel: two-level design over the training languages: full (2^k "
        "compositions), half (2^(k-1), resolution k), quarter (2^(k-2)), or auto (full up to "
        "4 languages, else half)",
        checks.OneOf(("auto", "full", "half", "quarter")),
    )
    pilot_only: bool = param(
        False,
        "language-datamodel: run the pilot (full and all-cut compositions, 4 seeds each) and "
        "its power analysis only, to choose retrain_seeds before the design",
        checks.Flag(),
    )
    workers: int = param(
        0,
        "retrainings run at once (0: what this machine's cores and memory bear; on a cluster "
        "backend, all)",
        checks.AtLeast(0),
    )
    backend: str = param(
        "local",
        "MLflow Projects backend for retrainings: local, slurm or kubernetes (docs/cluster.md)",
        checks.OneOf(BACKENDS),
    )
    backend_config: str = param(
        "",
        "the backend's config file (slurm, kubernetes: JSON, docs/cluster.md)",
        checks.PathRef("file"),
    )

    def _check_combinations(self) -> None:
        check_data(self)
        if self.experiment:
            EXPERIMENTS[self.experiment].check(self)
        elif self.experiment_values:
            raise refuse(
                "experiment_values",
                self.experiment_values,
                "set without an experiment",
                "set experiment, or leave it empty",
            )
        if not 1e-6 <= round(self.subset_fraction, 6) <= 1 - 1e-6:
            raise refuse(
                "subset_fraction",
                self.subset_fraction,
                "rounds to 0 or 1 at the 6 decimals a retraining's spec keeps",
                "give a fraction between 0.000001 and 0.999999",
            )
        if self.backend == "kubernetes" and not self.backend_config:
            raise refuse(
                "backend_config",
                "",
                "the kubernetes backend needs its config (kube-job-template-path, repository-uri)",
                "give configs/kubernetes/backend_config.json, edited (docs/cluster.md)",
            )
        total = sum(self.train_counts.values())
        if self.top_k > total:
            raise refuse(
                "top_k",
                self.top_k,
                f"more than the {total} training examples asked for",
                f"give top_k <= {total}",
            )

    @cached_property
    def values(self) -> tuple[str, ...]:
        """`experiment_values` as a list (empty: the experiment's default)."""
        return checks.items(self.experiment_values)

    def _name_parts(self) -> list[str]:
        if self.experiment:
            return [f"{self.experiment} experiment", *data_name_parts(self)[:3]]
        return data_name_parts(self)

    def without_experiment(self) -> MainConfig:
        """The plain pipeline an experiment builds on: every experiment field at its
        default, so it is the very run `main` without the experiment makes (and reuses)."""
        defaults = {
            name: MainConfig.__dataclass_fields__[name].default for name in EXPERIMENT_FIELDS
        }
        return dataclasses.replace(self, **defaults)

    def train(self) -> TrainConfig:
        return TrainConfig(**_shared_values(self, TrainConfig))

    def influence(self, train_run_id: str) -> InfluenceConfig:
        return InfluenceConfig(
            **_shared_values(self, InfluenceConfig, exclude=("batch_size",)),
            train_run_id=train_run_id,
            batch_size=self.influence_batch_size,
        )

    def analyze(self, influence_run_id: str) -> AnalyzeConfig:
        return AnalyzeConfig(influence_run_id=influence_run_id, top_k=self.top_k)


def _shared_values(
    source: StepConfig, target: type[StepConfig], exclude: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The target step's fields that the source config also has, by name."""
    return {
        f.name: getattr(source, f.name)
        for f in dataclasses.fields(target)
        if hasattr(source, f.name) and f.name not in exclude
    }


STEP_CONFIGS: dict[str, type[StepConfig]] = {
    c.step: c for c in (TrainConfig, InfluenceConfig, AnalyzeConfig, MainConfig)
}
