"""What an experiment is: a name, its checks, and how it runs under `main`.

An experiment runs under an open `main` run (the experiment's own) and returns the run IDs
of what it ran or reused, by setting name. Most compare ordinary pipelines: each setting is
a `main` run of its own (reused when finished with equal parameters), so it can be opened
and compared in the MLflow UI, and the experiment's run logs experiment/comparison.* and a
figure (`compare_settings`). Those that retrain on part of the data also say what a study
bundle carries (`Study`), so a study can be exported, continued elsewhere and tabled from
the repository alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from matplotlib.figure import Figure

from xlinfluence import artifacts, tracking
from xlinfluence.checks import refuse

if TYPE_CHECKING:  # config.main takes this registry; the drivers only read configs
    from xlinfluence.config.main import MainConfig
    from xlinfluence.config.steps import TrainConfig

Runner = Callable[["MainConfig", Path, "tracking.StepRun"], dict[str, str]]


@dataclass(frozen=True)
class Study:
    """What a retraining study is made of, for its bundle (study/export.py, tables.py).

    base: the base pipelines (setting name -> MainConfig), one per attribution method;
    retrainings: (config, the base's train manifest, the reference influence run) ->
    setting name -> TrainConfig; compute: (config, attributions, setting name -> train
    run) -> tables, or None where the tables need more than the runs (counterfactual's
    read the base run's predictions)."""

    base: Callable[[MainConfig], dict[str, MainConfig]]
    retrainings: Callable[[MainConfig, pd.DataFrame, str], dict[str, TrainConfig]]
    compute: Callable[..., dict[str, pd.DataFrame]] | None


@dataclass(frozen=True)
class Experiment:
    """name: `-P experiment=`; summary: what it runs, one line (the parameter's help);
    values: what experiment_values means for it ('' where it takes none); check: refuses
    a config it cannot run, before any run starts (a ConfigError naming the fix); run: the
    driver; study: the retrainings a bundle carries, for those that retrain."""

    name: str
    summary: str
    values: str
    check: Callable[[MainConfig], None]
    run: Runner
    study: Study | None = None


def require_scores(config: MainConfig, why: str) -> None:
    """Refuse store_scores=false for an experiment that reads the full score matrices."""
    if not config.store_scores:
        raise refuse("store_scores", False, why, "keep store_scores=true")


def compare_settings(
    settings: Callable[[MainConfig], dict[str, MainConfig]],
    tables: Callable[[MainConfig, dict[str, MainConfig], dict[str, dict[str, str]]], dict],
    figure: Callable[[dict[str, pd.DataFrame]], Figure],
) -> Runner:
    """The driver of an experiment that compares ordinary pipelines: run or reuse each
    setting's `main`, then log `tables(config, settings, children)` (children: setting ->
    step -> run ID) and `figure(tables)` on the experiment's run."""

    def run(config: MainConfig, project: Path, parent: tracking.StepRun) -> dict[str, str]:
        by_name = settings(config)
        main_runs = {name: tracking.run_or_reuse(s, project) for name, s in by_name.items()}
        parent.set_tags(
            {f"{tracking.SETTING_TAG}.{name}": run_id for name, run_id in main_runs.items()}
        )
        children = {name: child_runs(run_id) for name, run_id in main_runs.items()}
        made = tables(config, by_name, children)
        parent.log_frames(made, "experiment")
        parent.log_figure(figure(made), "experiment/comparison.png")
        return main_runs

    return run


def settings_of(experiment_run_id: str) -> dict[str, str]:
    """setting name -> run ID, from a finished experiment run's tags."""
    tags = tracking.fetch_run(experiment_run_id, step="main").data.tags
    prefix = f"{tracking.SETTING_TAG}."
    return {k[len(prefix) :]: v for k, v in tags.items() if k.startswith(prefix)}


def child_runs(main_run_id: str) -> dict[str, str]:
    """Step -> run ID of a setting's train, influence and analyze runs (its main's tags)."""
    tags = tracking.fetch_run(main_run_id, step="main").data.tags
    return {s: tags[tracking.CHILD_TAG.format(step=s)] for s in ("train", "influence", "analyze")}


def final_accuracy(train_run_id: str) -> dict[str, float]:
    """Final test accuracy per language of a train run (its accuracy.<lang> metrics)."""
    metrics = tracking.fetch_run(train_run_id, step="train").data.metrics
    return {k.removeprefix("accuracy."): v for k, v in metrics.items() if k.startswith("accuracy.")}


def analysis_table(analyze_run_id: str, name: str) -> pd.DataFrame:
    """One table an analyze run logged (analysis/<name>.parquet)."""
    return pd.read_parquet(
        tracking.download(analyze_run_id, f"{artifacts.ANALYSIS}/{name}.parquet")
    )
