"""Every attribution of one fine-tuning run, and the retrainings' outputs, for the
experiments that compare attributions (methods) or score them against retraining (lds,
leave-language-out, language-datamodel).

The attributions are named variants of the influence step (`ATTRIBUTION_METHODS`), each
the base pipeline under that method (an ordinary, reused main run), plus the reference's
single checkpoints and random scores, which every method must beat. Retrainings are read
back as their last epoch's per-test-example outputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from xlinfluence import artifacts, tracking
from xlinfluence.analysis import lds
from xlinfluence.analysis.agreement import REFERENCE
from xlinfluence.checks import refuse
from xlinfluence.data import schema
from xlinfluence.errors import ArtifactError, ConfigError
from xlinfluence.experiments.base import (
    require_scores,
    settings_of,
)
from xlinfluence.steps.upstream import InfluenceRun, influence_run_of
from xlinfluence.training import checkpoint_name

if TYPE_CHECKING:
    from xlinfluence.config.main import MainConfig

#: The trained model's checkpoint, whatever the number of epochs: an influence function is
#: taken there (Koh and Liang 2017; Grosse et al. 2023), not summed over checkpoints as
#: TracIn is, and EK-FAC's fit (a pass per label over the training set) is paid once.
FINAL_CHECKPOINT = "final"
#: Attribution variants of one fine-tuning run (the train run is shared), the reference
#: first. Each names its method and parameters in full, whatever the run's own settings.
ATTRIBUTION_METHODS = {
    "dot-all": {"method": "dot", "params": "all"},
    "cosine": {"method": "cosine", "params": "all"},
    "last-layer": {"method": "dot", "params": "last-layer"},
    "embeddings-only": {"method": "dot", "params": "embeddings"},
    "no-embeddings": {"method": "dot", "params": "^(?!.*embeddings)"},
    "cosine-word-embeddings": {"method": "cosine", "params": "word_embeddings"},
    "representation": {"method": "representation", "params": "all"},
    "ekfac": {"method": "ekfac", "params": "all", "checkpoints": FINAL_CHECKPOINT},
    "metagradient": {"method": "metagradient", "params": "all"},
    "label-only": {"method": "label-only", "params": "all"},
    "token-overlap": {"method": "token-overlap", "params": "all"},
}
#: Scored only when named in experiment_values (their cost grows with the test set).
ON_REQUEST = ("metagradient",)
#: What experiment_values means for the experiments that take attributions.
VALUES_HELP = (
    "the attribution methods to score (default all but metagradient, which is scored when named)"
)


def check_methods(config: MainConfig) -> None:
    """experiment_values must name attribution variants."""
    unknown = [v for v in config.values if v not in ATTRIBUTION_METHODS]
    if unknown:
        raise refuse(
            "experiment_values",
            config.experiment_values,
            f"{unknown} are not attribution methods",
            f"give some of {', '.join(ATTRIBUTION_METHODS)}, or nothing for the default",
        )


def check_scored_methods(config: MainConfig) -> None:
    """The check of an experiment that scores attributions against retraining: named
    variants, and the full score matrices it reads kept."""
    check_methods(config)
    require_scores(config, f"{config.experiment} reads every method's summed scores")


def chosen_methods(config: MainConfig) -> list[str]:
    """experiment_values as attribution method names, the reference first. Default: every
    method but those scored on request only (ON_REQUEST: metagradient, about 3 trainings per
    test example)."""
    chosen = config.values or [m for m in ATTRIBUTION_METHODS if m not in ON_REQUEST]
    return [REFERENCE, *[m for m in chosen if m != REFERENCE]]


def method_settings(config: MainConfig, names: list[str]) -> dict[str, MainConfig]:
    """The base pipeline under each named attribution method (one shared train run)."""
    base = config.without_experiment()
    final = {"checkpoints": checkpoint_name(config.epochs)}
    return {
        name: dataclasses.replace(base, **ATTRIBUTION_METHODS[name] | (
            final if ATTRIBUTION_METHODS[name].get("checkpoints") == FINAL_CHECKPOINT else {}
        ))
        for name in names
    }  # fmt: skip


def base_pipelines(config: MainConfig) -> dict[str, MainConfig]:
    """A study's base pipelines: one per chosen method."""
    return method_settings(config, chosen_methods(config))


def reference_method(base: dict[str, MainConfig]) -> str:
    """The base setting whose influence run the retrainings are drawn from (dot TracIn in
    method studies, the one base pipeline otherwise)."""
    return REFERENCE if REFERENCE in base else next(iter(base))


@dataclass
class Attributions:
    scores: dict[str, np.ndarray]  # method -> (n_test, n_train) lr-weighted sum
    train: pd.DataFrame  # the base run's training manifest (score columns)
    test: pd.DataFrame  # its test manifest (score rows)
    main_runs: dict[str, str]  # method -> its main run
    base_train: str  # the fine-tuning run every method scored


def collect(config: MainConfig, project: Path, parent: tracking.StepRun) -> Attributions:
    """Run or reuse the base pipeline under each chosen method; read every score matrix."""

    settings = base_pipelines(config)
    main_runs = {name: tracking.run_or_reuse(s, project) for name, s in settings.items()}
    parent.set_tags({f"{tracking.SETTING_TAG}.{name}": run for name, run in main_runs.items()})
    return read(config, main_runs)


def read(config: MainConfig, main_runs: dict[str, str]) -> Attributions:
    """Every method's summed scores (method -> its main run, or an influence run of the same
    fine-tuning, e.g. a method added to a finished study)."""
    scores: dict[str, np.ndarray] = {}
    base_train, train, test = "", None, None
    for name, run_id in main_runs.items():
        influence = InfluenceRun.fetch(influence_run_of(run_id))
        train_run = influence.train_run.run_id
        if base_train and train_run != base_train:
            raise ArtifactError(
                f"method {name!r} (run {run_id}) scored train run {train_run}, the others "
                f"{base_train}; every attribution of one study must score the same fine-tuning."
            )
        base_train, train, test = train_run, influence.train, influence.test
        tensors = influence.scores()
        scores[name] = tensors[artifacts.TOTAL].double().numpy()
        if name == REFERENCE:
            for checkpoint, tensor in tensors.items():
                if checkpoint != artifacts.TOTAL and len(tensors) > 2:
                    scores[f"{REFERENCE}@{checkpoint}"] = tensor.double().numpy()
    scores[lds.RANDOM] = lds.random_scores(len(test), len(train), seed=config.seed)
    return Attributions(scores, train, test, main_runs, base_train)


def last_outputs(run_id: str, epochs: int, test: pd.DataFrame) -> pd.DataFrame:
    """A retraining's last-epoch outputs per test example (loss, margin, correct, ...)."""
    path = tracking.download(run_id, artifacts.predictions(checkpoint_name(epochs)))
    return artifacts.load_predictions(path, test)


def kept_rows(run_id: str, train: pd.DataFrame) -> np.ndarray:
    """The rows of `train` a retraining kept, from its logged manifest."""
    kept = artifacts.load_manifest(tracking.download(run_id, artifacts.TRAIN_MANIFEST))
    return train[schema.ID].isin(set(kept[schema.ID])).to_numpy()


def study_methods(
    config: MainConfig, experiment_run_id: str, added: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """(settings, method -> run) of a finished lds / leave-language-out / language-datamodel
    run of `config`, with methods scored after it (`added`: name -> main or influence run)
    beside its own."""
    settings = settings_of(experiment_run_id)
    # the methods the study scored (its tags), whatever today's default set is; the
    # reference comes first in ATTRIBUTION_METHODS
    methods = {m: settings[m] for m in ATTRIBUTION_METHODS if m in settings}
    taken = [n for n in added or {} if n in methods or n == lds.RANDOM or "@" in n]
    if taken:
        raise ConfigError(
            f"added method name(s) {taken} clash with the study's own methods "
            f"({', '.join(methods)}), 'random' or a checkpoint name (with '@'); rename them."
        )
    return settings, methods | (added or {})
