"""The experiment registry is the one place an experiment is declared: the parameters' help
and checks, the main step and study bundles read it, and nothing dispatches on a name."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from xlinfluence.config.main import MainConfig
from xlinfluence.errors import ConfigError
from xlinfluence.experiments import EXPERIMENTS

SRC = Path(__file__).resolve().parents[1] / "src" / "xlinfluence"


def test_every_experiment_is_offered_and_described_by_the_parameters():
    fields = {f.name: f for f in dataclasses.fields(MainConfig)}
    help_text = fields["experiment"].metadata["help"]
    values_help = fields["experiment_values"].metadata["help"]
    for name, experiment in EXPERIMENTS.items():
        assert experiment.name == name
        assert f"{name}: {experiment.summary}" in help_text
        assert not experiment.values or f"{name}: {experiment.values}" in values_help
        MainConfig(experiment=name)  # the default values pass its own check
    with pytest.raises(ConfigError, match="experiment="):
        MainConfig(experiment="no-such-experiment")


def test_an_experiments_own_check_refuses_before_any_run():
    with pytest.raises(ConfigError, match="not among languages"):
        MainConfig(experiment="zero-shot", experiment_values="xx")
    with pytest.raises(ConfigError, match="not attribution methods"):
        MainConfig(experiment="lds", experiment_values="dot-all,nonsense")
    with pytest.raises(ConfigError, match="store_scores"):
        MainConfig(experiment="counterfactual", store_scores=False)
    with pytest.raises(ConfigError, match="set without an experiment"):
        MainConfig(experiment_values="1,2")


def test_no_code_dispatches_on_an_experiments_name():
    """`if config.experiment == "lds"` anywhere in src/ would be a second registry."""
    names = "|".join(re.escape(name) for name in EXPERIMENTS)
    dispatch = re.compile(rf"""(==|!=|\bin\b)\s*\(?["']({names})["']""")
    found = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in SRC.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if dispatch.search(line)
    ]
    assert found == []


def test_retraining_experiments_say_what_a_bundle_carries():
    retraining = {name for name, e in EXPERIMENTS.items() if e.study}
    assert retraining == {"counterfactual", "lds", "leave-language-out", "language-datamodel"}


def test_experiments_take_an_influence_function_at_the_trained_model_only():
    """EK-FAC is an influence function of the trained model, not a sum over checkpoints as
    TracIn is; whatever the epochs, its setting names the last checkpoint."""
    from xlinfluence.experiments import attributions

    for epochs in (2, 5):
        config = MainConfig(experiment="methods", epochs=epochs)
        settings = attributions.method_settings(config, ["dot-all", "ekfac"])
        assert settings["ekfac"].checkpoints == f"epoch-{epochs}"
        assert settings["dot-all"].checkpoints == "all"
