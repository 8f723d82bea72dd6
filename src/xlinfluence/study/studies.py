"""What a retraining study is made of, per experiment: its base pipelines (one per
attribution method), its retrainings by setting name, and the tables computed from them.

Export finds the runs through these (a study killed before its experiment run tagged
them included), and a bundle's tables are recomputed through the same drivers' `compute`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from xlinfluence.config import MainConfig, TrainConfig
from xlinfluence.data import schema
from xlinfluence.steps import (
    attributions,
    counterfactual,
    language_datamodel,
    lds,
    leave_language_out,
)
from xlinfluence.steps.experiment import chosen_methods, method_settings


@dataclass(frozen=True)
class Study:
    """base: setting name -> MainConfig of each base pipeline; retrainings: (config, the
    base's train manifest, the reference influence run) -> setting name -> TrainConfig;
    compute: (config, attributions, setting name -> train run) -> tables (None where the
    tables need more than the runs, as counterfactual's do)."""

    base: Callable[[MainConfig], dict[str, MainConfig]]
    retrainings: Callable[[MainConfig, pd.DataFrame, str], dict[str, TrainConfig]]
    compute: Callable[..., dict[str, pd.DataFrame]] | None


def _methods(config: MainConfig) -> dict[str, MainConfig]:
    return method_settings(config, chosen_methods(config))


def _lds_retrainings(config, train, influence) -> dict[str, TrainConfig]:
    return {lds.setting_name(k): s for k, s in lds.retraining_settings(config).items()}


def _lds_compute(config, found, runs: dict[str, str]) -> dict[str, pd.DataFrame]:
    keys = {lds.setting_name(k): k for k in lds.retraining_settings(config)}
    return lds.compute(config, found, {keys[name]: run for name, run in runs.items()})


def _llo_retrainings(config, train, influence) -> dict[str, TrainConfig]:
    languages = list(pd.unique(train[schema.LANGUAGE]))
    return {
        leave_language_out.setting_name(k): s
        for k, s in leave_language_out.retraining_settings(config, languages).items()
    }


def _llo_compute(config, found, runs: dict[str, str]) -> dict[str, pd.DataFrame]:
    languages = list(pd.unique(found.train[schema.LANGUAGE]))
    keys = {
        leave_language_out.setting_name(k): k
        for k in leave_language_out.retraining_settings(config, languages)
    }
    return leave_language_out.compute(
        config, found, {keys[name]: run for name, run in runs.items()}
    )


def _ldm_retrainings(config, train, influence) -> dict[str, TrainConfig]:
    """The pilot's and the design's retrainings (the pilot's power analysis is a table of
    the study, and its all-cut composition is in no design)."""
    return language_datamodel.pilot_settings(config) | language_datamodel.design_settings(config)


STUDIES: dict[str, Study] = {
    "lds": Study(_methods, _lds_retrainings, _lds_compute),
    "leave-language-out": Study(_methods, _llo_retrainings, _llo_compute),
    "language-datamodel": Study(_methods, _ldm_retrainings, language_datamodel.compute),
    "counterfactual": Study(
        lambda config: {"base": config.without_experiment()},
        lambda config, train, influence: counterfactual.settings(config, influence),
        None,
    ),
}


def reference_method(base: dict[str, MainConfig]) -> str:
    """The base setting whose influence run the retrainings are drawn from (dot TracIn in
    method studies, the one base pipeline otherwise)."""
    return attributions.REFERENCE if attributions.REFERENCE in base else next(iter(base))
