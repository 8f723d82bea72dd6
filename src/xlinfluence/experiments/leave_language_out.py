"""experiment=leave-language-out: retrain without each training language, against every
attribution's language-level prediction.

The base pipeline runs (or is reused) under each chosen attribution method. Then, for
each of `retrain_seeds` training seeds, one cheap retraining on the full training set and
one without each training language X (outputs only), fanned out `workers` at a time. The
ablation table (analysis/ablation.py: L's paired loss and accuracy change per X, with
two-level bootstrap intervals and Holm-adjusted p) and each attribution's rank agreement
with it over the off-diagonal cells are logged on the experiment's run, with a figure of
the ablation matrix beside dot TracIn's share matrix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from xlinfluence import tracking
from xlinfluence.analysis import ablation
from xlinfluence.analysis.agreement import REFERENCE
from xlinfluence.config import TrainConfig
from xlinfluence.data import schema, subsets
from xlinfluence.experiments import attributions
from xlinfluence.experiments.base import Experiment, Study
from xlinfluence.steps import retrain

if TYPE_CHECKING:  # config.main takes the experiment registry
    from xlinfluence.config.main import MainConfig

FULL = "full"


def retraining_settings(
    config: MainConfig, train_languages: list[str]
) -> dict[tuple[str, int], TrainConfig]:
    """(left-out language or FULL, training seed) -> its cheap train run."""
    base = retrain.cheap_base(config)
    out = {}
    for seed in range(config.retrain_seeds):
        cheap = dataclasses.replace(base, train_seed=seed)
        out[(FULL, seed)] = cheap
        for language in train_languages:
            spec = subsets.Selection(subsets.LANGUAGE, language=language).spec
            out[(language, seed)] = dataclasses.replace(cheap, remove=spec)
    return out


def setting_name(key: tuple[str, int]) -> str:
    language, seed = key
    return f"{'full' if language == FULL else 'without-' + language}:seed-{seed}"


def run(config: MainConfig, project: Path, parent: tracking.StepRun) -> dict[str, str]:
    found = attributions.collect(config, project, parent)
    languages = list(pd.unique(found.train[schema.LANGUAGE]))
    chosen = retraining_settings(config, languages)
    runs = retrain.run_settings(
        config, {setting_name(key): setting for key, setting in chosen.items()}, project, parent
    )
    tables = compute(config, found, {key: runs[setting_name(key)] for key in chosen})
    parent.log_frames(tables, "experiment")
    shares = tables["shares"]
    figure = ablation.figure(tables["comparison"], shares[shares["method"] == REFERENCE], REFERENCE)
    parent.log_figure(figure, "experiment/comparison.png")
    parent.log_metrics(
        {
            f"agreement.{r.method}.{r.prediction.replace(' ', '_')}": r.spearman
            for r in tables["agreement"].itertuples()
        }  # fmt: skip
        | {"retrainings": len(runs)}
    )
    return found.main_runs | runs


def compute(
    config: MainConfig, found: attributions.Attributions, runs: dict[tuple[str, int], str]
) -> dict[str, pd.DataFrame]:
    """The ablation table, each attribution's agreement with it and its share matrix, from
    finished retrainings ((left-out language or FULL, training seed) -> train run ID)."""
    languages = list(pd.unique(found.train[schema.LANGUAGE]))
    seeds = range(config.retrain_seeds)

    def outputs(language: str) -> list[pd.DataFrame]:
        return [
            attributions.last_outputs(runs[(language, s)], config.epochs, found.test) for s in seeds
        ]

    base = outputs(FULL)
    removed = {language: outputs(language) for language in languages}
    loss = ablation.deltas(base, removed, "loss")
    accuracy = ablation.deltas(base, removed, "correct")
    test_languages = found.test[schema.LANGUAGE].to_numpy()
    effects = ablation.effect_table(loss, accuracy, test_languages, seed=config.seed)
    own = ablation.own_language_excess(loss, test_languages, seed=config.seed)
    predictions, share_frames = {}, []
    for method, scores in found.scores.items():
        summed, share, _ = ablation.attribution_cells(scores, found.train, found.test,
                                                      config.top_k)  # fmt: skip
        predictions[f"{method}:summed"] = summed
        predictions[f"{method}:top-k share"] = share
        share_frames.append(_share_frame(share, test_languages, languages).assign(method=method))
    agree = ablation.agreement(loss, predictions, languages, test_languages, seed=config.seed)
    agree[["method", "prediction"]] = agree["prediction"].str.split(":", n=1, expand=True)
    shares = pd.concat(share_frames, ignore_index=True)
    return {"comparison": effects, "own_excess": own, "agreement": agree, "shares": shares}


def recompute(
    config: MainConfig, experiment_run_id: str, added: dict[str, str] | None = None
) -> dict[str, pd.DataFrame]:
    """compute() for a finished experiment run; `added` as in lds.recompute."""
    settings, methods = attributions.study_methods(config, experiment_run_id, added)
    found = attributions.read(config, methods)
    languages = list(pd.unique(found.train[schema.LANGUAGE]))
    keys = retraining_settings(config, languages)
    return compute(config, found, {key: settings[setting_name(key)] for key in keys})


def _share_frame(share: np.ndarray, test_languages, train_languages) -> pd.DataFrame:
    """Mean top-k share per (L, X) as a long table."""
    rows = []
    for lang in pd.unique(test_languages):
        mean = share[test_languages == lang].mean(axis=0)
        rows += [
            {"test_language": lang, "train_language": x, "share": float(v)}
            for x, v in zip(train_languages, mean, strict=True)
        ]
    return pd.DataFrame(rows)


def _study_retrainings(config, train, influence) -> dict[str, TrainConfig]:
    languages = list(pd.unique(train[schema.LANGUAGE]))
    return {setting_name(k): s for k, s in retraining_settings(config, languages).items()}


def _study_compute(config, found, runs: dict[str, str]) -> dict[str, pd.DataFrame]:
    languages = list(pd.unique(found.train[schema.LANGUAGE]))
    keys = {setting_name(k): k for k in retraining_settings(config, languages)}
    return compute(config, found, {keys[name]: run for name, run in runs.items()})


EXPERIMENT = Experiment(
    name="leave-language-out",
    summary="retrains without each training language; L's paired loss change beside every "
    "attribution",
    values=attributions.VALUES_HELP,
    check=attributions.check_scored_methods,
    run=run,
    study=Study(attributions.base_pipelines, _study_retrainings, _study_compute),
)
