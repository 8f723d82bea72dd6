"""experiment=language-datamodel: what each test language loses when a training language
is cut, measured by retraining on a designed set of compositions, against every
attribution's language-level prediction.

The training languages are the factors of a two-level design (analysis/design.py): in each
composition a language is whole or cut to `cut_fraction` (label-stratified, a fresh draw
per composition). Each composition is retrained with `retrain_seeds` training seeds shared
across compositions, at the full run's step count (removal_steps=fixed). Per test language
L, its mean test loss (and margin) is regressed on the cut indicators with seed effects:
beta(L, X), what L loses when X is cut, with intervals (analysis/language_truth.py).

A pilot comes first: the composition that cuts nothing and the one that cuts every
language, PILOT_SEEDS seeds each. Its seed spread sizes the design (the power analysis of
the own-language premium and of its equivalence test, logged as experiment/power.csv);
pilot_only=true stops there so the seeds can be chosen before the design is run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from xlinfluence import tracking
from xlinfluence.analysis import design, language_truth, partialled_lds, plots
from xlinfluence.analysis.agreement import REFERENCE
from xlinfluence.config import TrainConfig
from xlinfluence.data import subsets
from xlinfluence.experiments import attributions
from xlinfluence.experiments.base import Experiment, Study
from xlinfluence.steps import retrain

if TYPE_CHECKING:  # config.main takes the experiment registry
    from xlinfluence.config.main import MainConfig

PILOT_SEEDS = 4
NONE = "none"


@dataclasses.dataclass(frozen=True)
class Composition:
    """The training languages one retraining cuts (empty: none), in the languages' order."""

    cut: tuple[str, ...]

    @property
    def name(self) -> str:
        """cut-<X>.<Y> (MLflow tag keys, which name settings, allow no '+')."""
        return "cut-" + (".".join(self.cut) if self.cut else NONE)

    def remove(self, languages: list[str], fraction: float) -> str:
        """The train step's `remove` spec ('' for the whole training set). The draw is the
        composition's bitmask over the languages, so a composition is one retraining
        whichever design (or the pilot) asks for it."""
        if not self.cut:
            return ""
        code = sum(1 << languages.index(lang) for lang in self.cut)
        return subsets.Selection(subsets.FRACTION, alpha=fraction, draw=code, cut=self.cut).spec


def training_languages(config: MainConfig) -> list[str]:
    return list(config.train_counts)


def compositions(config: MainConfig) -> list[Composition]:
    """The design's compositions, the one that cuts nothing first."""
    languages = training_languages(config)
    cuts = design.cut_matrix(config.design, len(languages))
    return [Composition(tuple(np.asarray(languages)[row].tolist())) for row in cuts]


def pilot_compositions(config: MainConfig) -> list[Composition]:
    return [Composition(()), Composition(tuple(training_languages(config)))]


def setting_name(composition: Composition, seed: int) -> str:
    return f"{composition.name}:seed-{seed}"


def _settings(config, chosen: list[Composition], seeds: range) -> dict[str, TrainConfig]:
    base = retrain.cheap_base(config)
    languages = training_languages(config)
    return {
        setting_name(c, seed): dataclasses.replace(
            base, remove=c.remove(languages, config.cut_fraction), train_seed=seed
        )
        for c in chosen
        for seed in seeds
    }


def pilot_settings(config: MainConfig) -> dict[str, TrainConfig]:
    """The pilot's retrainings: nothing cut and everything cut, PILOT_SEEDS seeds each."""
    return _settings(config, pilot_compositions(config), range(PILOT_SEEDS))


def design_settings(config: MainConfig) -> dict[str, TrainConfig]:
    """The design's retrainings: every composition under seeds 0..retrain_seeds-1."""
    return _settings(config, compositions(config), range(config.retrain_seeds))


def run(config: MainConfig, project: Path, parent: tracking.StepRun) -> dict[str, str]:
    pilot = retrain.run_settings(config, pilot_settings(config), project, parent)
    power = power_analysis(config, pilot, _test_manifest(pilot))
    parent.log_frames({"power": power}, "experiment")
    if config.pilot_only:
        return pilot
    found = attributions.collect(config, project, parent)
    runs = retrain.run_settings(config, design_settings(config), project, parent)
    tables = compute(config, found, pilot | runs)
    parent.log_frames(tables, "experiment")
    parent.log_figure(plots.language_truth_figure(tables), "experiment/comparison.png")
    agree = tables["language_agreement"]
    headline = agree[
        (agree["target"] == "loss") & (agree["prediction"] == "summed")
        & (agree["centring"] == "double")
    ]  # fmt: skip
    parent.log_metrics(
        {
            f"agreement.{r.method}": r.agreement
            for r in headline.itertuples()
            if np.isfinite(r.agreement)
        }  # fmt: skip
        | {"retrainings": len(set(runs.values()) | set(pilot.values()))}
    )
    return found.main_runs | pilot | runs


def power_analysis(config: MainConfig, pilot: dict[str, str], test: pd.DataFrame) -> pd.DataFrame:
    """The power analysis from the pilot's retrainings (setting name -> run ID)."""
    outcomes = _language_outcomes(config, pilot, pilot_compositions(config), PILOT_SEEDS, test)
    return language_truth.power_table(
        outcomes,
        n_languages=len(training_languages(config)),
        n_compositions=len(compositions(config)),
    )


def compute(
    config: MainConfig, found: attributions.Attributions, runs: dict[str, str]
) -> dict[str, pd.DataFrame]:
    """The power analysis, the ground truth, the premium, each attribution's agreement
    with the truth and the example-level LDS with the language fractions partialled out,
    from finished retrainings (setting name -> train run ID, the pilot's and the design's)."""
    languages = training_languages(config)
    pilot = _language_outcomes(config, runs, pilot_compositions(config), PILOT_SEEDS, found.test)
    chosen = compositions(config)
    outcomes = _language_outcomes(config, runs, chosen, config.retrain_seeds, found.test)
    fit = language_truth.fit_truth(outcomes, languages)
    margins = language_truth.equivalence_margins(pilot, len(languages))
    example = _example_outputs(config, runs, chosen, config.retrain_seeds, found)
    cuts = np.array([[lang in c.cut for lang in languages] for c in chosen])
    test_languages = found.test["language"].to_numpy()
    examples = partialled_lds.per_example(found.scores, example["kept"], example["outputs"], cuts)
    truth = fit.table
    return {
        "power": language_truth.power_table(
            pilot, n_languages=len(languages), n_compositions=len(chosen)
        ),
        "language_truth": truth[truth["target"] == "loss"].drop(columns="target"),
        "language_truth_all": truth,
        "premium": language_truth.premium(fit, languages, margins),
        "language_agreement": language_truth.agreement(
            fit,
            found.scores,
            found.train,
            found.test,
            cut_fraction=config.cut_fraction,
            top_k=config.top_k,
            seed=config.seed,
        ),  # fmt: skip
        "lds_partialled": partialled_lds.partialled_lds(examples, test_languages, seed=config.seed),
        "lds_partialled_differences": partialled_lds.partialled_differences(
            examples, test_languages, reference=REFERENCE, seed=config.seed
        ),
        "retrainings": outcomes,
    }


def recompute(config: MainConfig, experiment_run_id: str, added: dict[str, str] | None = None):
    """compute() for a finished experiment run (scripts/findings_tables.py)."""
    settings, methods = attributions.study_methods(config, experiment_run_id, added)
    found = attributions.read(config, methods)
    names = pilot_settings(config) | design_settings(config)
    return compute(config, found, {name: settings[name] for name in names})


def _test_manifest(runs: dict[str, str]) -> pd.DataFrame:
    from xlinfluence.steps.upstream import train_manifests

    return train_manifests(next(iter(runs.values())))[1]


def _language_outcomes(config, runs, chosen, seeds, test) -> pd.DataFrame:
    """One row per (composition, seed, test language): the mean loss and margin of the
    language's test examples in that retraining, with the composition's cut indicators."""
    languages = training_languages(config)
    rows = []
    for composition in chosen:
        for seed in range(seeds):
            run_id = runs[setting_name(composition, seed)]
            frame = attributions.last_outputs(run_id, config.epochs, test)
            frame = frame.assign(test_language=test["language"].to_numpy())
            for lang, group in frame.groupby("test_language", sort=False):
                rows.append(
                    {"composition": composition.name, "seed": seed, "test_language": lang}
                    | {f"cut.{x}": int(x in composition.cut) for x in languages}
                    | {"loss": float(group["loss"].mean()),
                       "margin": float(group["margin"].mean()),
                       "accuracy": float(group["correct"].mean()), "run_id": run_id}
                )  # fmt: skip
    return pd.DataFrame(rows)


def _example_outputs(config, runs, chosen, seeds, found) -> dict[str, np.ndarray]:
    """kept: (compositions, n_train) rows each composition kept (checked equal across its
    seeds); outputs: target -> (compositions, seeds, n_test) last-epoch outputs."""
    kept = np.zeros((len(chosen), len(found.train)), dtype=bool)
    outputs = {t: np.empty((len(chosen), seeds, len(found.test))) for t in ("margin", "loss")}
    for i, composition in enumerate(chosen):
        for seed in range(seeds):
            run_id = runs[setting_name(composition, seed)]
            rows = attributions.kept_rows(run_id, found.train)
            if seed == 0:
                kept[i] = rows
            elif not np.array_equal(rows, kept[i]):
                raise language_truth.DesignError(
                    f"retraining {run_id} kept other rows than seed 0 of {composition.name}."
                )
            frame = attributions.last_outputs(run_id, config.epochs, found.test)
            for target in outputs:
                outputs[target][i, seed] = frame[target].to_numpy(dtype=float)
    return {"kept": kept, "outputs": outputs}


def _study_retrainings(config, train, influence) -> dict[str, TrainConfig]:
    """The pilot's and the design's retrainings (the pilot's power analysis is a table of
    the study, and its all-cut composition is in no design)."""
    return pilot_settings(config) | design_settings(config)


def _check(config: MainConfig) -> None:
    attributions.check_scored_methods(config)
    design.resolve(config.design, len(config.train_counts))  # a design it cannot carry


EXPERIMENT = Experiment(
    name="language-datamodel",
    summary="cuts training languages in a designed set of compositions; what L loses when "
    "X is cut, beside every attribution",
    values=attributions.VALUES_HELP,
    check=_check,
    run=run,
    study=Study(attributions.base_pipelines, _study_retrainings, compute),
)
