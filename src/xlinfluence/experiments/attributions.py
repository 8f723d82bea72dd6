"""Every attribution of one fine-tuning run, and the retrainings' outputs, for the
ground-truth experiments (lds, leave-language-out).

The attributions are the influence runs of experiment=methods on the base pipeline (each
an ordinary, reused main run), the reference's single checkpoints, and random scores,
which every method must beat. Retrainings are read back as their last epoch's per-test
example outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xlinfluence import artifacts, tracking
from xlinfluence.analysis import lds
from xlinfluence.analysis.agreement import REFERENCE
from xlinfluence.config import ATTRIBUTION_METHODS, InfluenceConfig, MainConfig
from xlinfluence.data import schema
from xlinfluence.errors import ArtifactError, ConfigError
from xlinfluence.steps.experiment import child_runs, chosen_methods, method_settings
from xlinfluence.steps.upstream import train_manifests
from xlinfluence.training import checkpoint_name


@dataclass
class Attributions:
    scores: dict[str, np.ndarray]  # method -> (n_test, n_train) lr-weighted sum
    train: pd.DataFrame  # the base run's training manifest (score columns)
    test: pd.DataFrame  # its test manifest (score rows)
    main_runs: dict[str, str]  # method -> its main run
    base_train: str  # the fine-tuning run every method scored


def collect(config: MainConfig, project: Path, parent: tracking.StepRun) -> Attributions:
    """Run or reuse the base pipeline under each chosen method; read every score matrix."""

    settings = method_settings(config, chosen_methods(config))
    main_runs = {name: tracking.run_or_reuse(s, project) for name, s in settings.items()}
    parent.set_tags({f"xlinfluence.setting.{name}": run for name, run in main_runs.items()})
    return read(config, main_runs)


def read(config: MainConfig, main_runs: dict[str, str]) -> Attributions:
    """Every method's summed scores (method -> its main run, or an influence run of the same
    fine-tuning, e.g. a method added to a finished study)."""
    scores: dict[str, np.ndarray] = {}
    base_train, train, test = "", None, None
    for name, run_id in main_runs.items():
        train_run, influence_run = scored_runs(run_id)
        if base_train and train_run != base_train:
            raise ArtifactError(
                f"method {name!r} (run {run_id}) scored train run {train_run}, the others "
                f"{base_train}; every attribution of one study must score the same fine-tuning."
            )
        base_train = train_run
        if train is None:
            train, test = train_manifests(base_train)
        tensors = artifacts.load_scores(
            tracking.download(influence_run, artifacts.SCORES),
            n_test=len(test),
            n_train=len(train),
        )
        scores[name] = tensors[artifacts.TOTAL].double().numpy()
        if name == REFERENCE:
            for checkpoint, tensor in tensors.items():
                if checkpoint != artifacts.TOTAL and len(tensors) > 2:
                    scores[f"{REFERENCE}@{checkpoint}"] = tensor.double().numpy()
    scores[lds.RANDOM] = lds.random_scores(len(test), len(train), seed=config.seed)
    return Attributions(scores, train, test, main_runs, base_train)


def scored_runs(run_id: str) -> tuple[str, str]:
    """(train run, influence run) behind a method's run: a main run, or an influence run."""
    if tracking.run_step(run_id) == InfluenceConfig.step:
        tracking.fetch_run(run_id, step=InfluenceConfig.step)  # finished, or a clear error
        manifest = artifacts.read_json(tracking.download(run_id, artifacts.INFLUENCE_MANIFEST))
        return manifest["train_run_id"], run_id
    children = child_runs(run_id)
    return children["train"], children["influence"]


def last_outputs(run_id: str, epochs: int, test: pd.DataFrame) -> pd.DataFrame:
    """A retraining's last-epoch outputs per test example (loss, margin, correct, ...)."""
    path = tracking.download(run_id, artifacts.predictions(checkpoint_name(epochs)))
    return artifacts.load_predictions(path, test)


def kept_rows(run_id: str, train: pd.DataFrame) -> np.ndarray:
    """The rows of `train` a retraining kept, from its logged manifest."""
    kept = artifacts.load_manifest(tracking.download(run_id, artifacts.TRAIN_MANIFEST))
    return train[schema.ID].isin(set(kept[schema.ID])).to_numpy()


def study_methods(
    experiment_run_id: str, added: dict[str, str] | None = None
) -> tuple[MainConfig, dict[str, str], dict[str, str]]:
    """(config, settings, method -> run) of a finished lds / leave-language-out run, with
    methods scored after it (`added`: name -> main or influence run) beside its own."""
    config = MainConfig.from_params(
        tracking.run_params(tracking.fetch_run(experiment_run_id, step="main"))
    )
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
    return config, settings, methods | (added or {})


def settings_of(experiment_run_id: str) -> dict[str, str]:
    """setting name -> run ID, from a finished experiment run's tags."""
    tags = tracking.fetch_run(experiment_run_id, step="main").data.tags
    prefix = "xlinfluence.setting."
    return {k[len(prefix) :]: v for k, v in tags.items() if k.startswith(prefix)}
