"""experiment=counterfactual: retrain without what TracIn names, against random removals.

The base pipeline (the experiment's parameters without the experiment) is run or reused;
then, for each (test language L, training language X), one train run leaves out TracIn's
top-k of X for L and `control_draws` train runs each leave out k random examples of X with
the same labels (analysis/counterfactual.py). Every retraining is an ordinary train run
(reused when finished), a child of the experiment's run; the comparison table and figure
are logged on the experiment's run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from xlinfluence import artifacts, tracking
from xlinfluence.analysis import counterfactual
from xlinfluence.analysis.counterfactual import RANDOM, TRACIN, Removal
from xlinfluence.checks import refuse
from xlinfluence.config import TrainConfig
from xlinfluence.experiments.base import (
    Experiment,
    Study,
    child_runs,
    require_scores,
)
from xlinfluence.steps.upstream import summed_scores, train_manifests

if TYPE_CHECKING:  # config.main takes the experiment registry
    from xlinfluence.config.main import MainConfig


def pairs(config: MainConfig) -> list[tuple[str, str]]:
    """(L, X) pairs from experiment_values ("L" means every training language X)."""
    languages = config.language_codes
    train = [lang for lang in languages if lang != config.heldout_language]
    values = config.values or languages
    out = []
    for value in values:
        test, _, source = value.partition(":")
        out += [(test, x) for x in ([source] if source else train)]
    return list(dict.fromkeys(out))


def settings(config: MainConfig, influence_run_id: str) -> dict[str, TrainConfig]:
    base = config.without_experiment().train()
    out = {}
    for test, source in pairs(config):
        removal = Removal(TRACIN, influence_run_id, test, source, config.removal_k)
        out[f"{source}-to-{test}:tracin"] = dataclasses.replace(base, remove=removal.spec)
        for draw in range(config.control_draws):
            random = dataclasses.replace(removal, kind=RANDOM, draw=draw)
            out[f"{source}-to-{test}:random-{draw}"] = dataclasses.replace(base, remove=random.spec)
    return out


def run(config: MainConfig, project: Path, parent: tracking.StepRun) -> dict[str, str]:
    base = config.without_experiment()
    base_main = tracking.run_or_reuse(base, project)
    children = child_runs(base_main)
    base_train, influence = children["train"], children["influence"]
    chosen = settings(config, influence)
    _check_removals(influence, chosen)  # refuse a bad k before any retraining
    retrainings = {
        name: tracking.run_or_reuse(setting, project) for name, setting in chosen.items()
    }
    parent.set_tags(
        {f"{tracking.SETTING_TAG}.base": base_main}
        | {f"{tracking.SETTING_TAG}.{name}": run_id for name, run_id in retrainings.items()}
    )
    raw = effects(base_train, retrainings)
    table = counterfactual.effects_table(raw.to_dict("records"))
    parent.log_frames({"comparison": table, "retrainings": raw}, "experiment")
    parent.log_figure(counterfactual.effects_figure(table, raw), "experiment/comparison.png")
    return {"base": base_main, **retrainings}


def _check_removals(influence: str, chosen: dict[str, TrainConfig]) -> None:
    """Every removal can be drawn from the base run's data (else its DataError, now)."""
    total, train, test = summed_scores(influence)
    for setting in chosen.values():
        counterfactual.removed_ids(Removal.parse(setting.remove), total, train, test, setting.seed)


def effects(base_train: str, retrainings: dict[str, str]) -> pd.DataFrame:
    """One row per retraining: its removal, L's paired loss/accuracy change, run time."""
    _, test = train_manifests(base_train)
    last = artifacts.load_checkpoint_index(
        tracking.download(base_train, artifacts.CHECKPOINT_INDEX)
    )[-1]["name"]
    base = _predictions(base_train, last, test)
    rows = []
    for name, run_id in retrainings.items():
        run = tracking.fetch_run(run_id, step="train")
        removal = Removal.parse(tracking.run_params(run)["remove"])
        effect = counterfactual.paired_effect(
            base, _predictions(run_id, last, test), removal.test_language
        )
        rows.append(
            {
                "setting": name,
                "run_id": run_id,
                "kind": removal.kind,
                "draw": removal.draw,
                "test_language": removal.test_language,
                "train_language": removal.train_language,
                "k": removal.k,
                "seconds": (run.info.end_time - run.info.start_time) / 1000,
            }
            | effect
        )
    return pd.DataFrame(rows)


def _predictions(train_run_id: str, checkpoint: str, test: pd.DataFrame) -> pd.DataFrame:
    return artifacts.load_predictions(
        tracking.download(train_run_id, artifacts.predictions(checkpoint)), test
    )


def _check(config: MainConfig) -> None:
    require_scores(config, "counterfactual ranks training examples by their summed scores")
    languages = config.language_codes
    for value in config.values:
        test, _, train = value.partition(":")
        unknown = [lang for lang in (test, train) if lang and lang not in languages]
        if unknown or not test:
            raise refuse(
                "experiment_values",
                config.experiment_values,
                f"cannot read {value!r} (languages {unknown})",
                "give test languages L, or L:X pairs, from languages",
            )


EXPERIMENT = Experiment(
    name="counterfactual",
    summary="retrains without TracIn's top-k of X for L, against label-matched random removals",
    values="test languages L or L:X pairs (default every pair)",
    check=_check,
    run=run,
    study=Study(
        lambda config: {"base": config.without_experiment()},
        lambda config, train, influence: settings(config, influence),
        None,
    ),
)
