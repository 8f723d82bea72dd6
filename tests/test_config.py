"""Step configs: the string round-trip that run reuse relies on."""

import dataclasses

import pytest

from xlinfluence.config import AnalyzeConfig, InfluenceConfig, TrainConfig
from xlinfluence.config.main import STEP_CONFIGS, MainConfig
from xlinfluence.errors import ConfigError

R1, R2 = "1" * 32, "2" * 32  # well-formed run IDs
REQUIRED = {"influence": {"train_run_id": R1}, "analyze": {"influence_run_id": R2}}


@pytest.mark.parametrize("cls", list(STEP_CONFIGS.values()))
def test_params_round_trip(cls):
    config = cls(**REQUIRED.get(cls.step, {}))
    assert cls.from_params(config.to_params()) == config


def test_canonical_form_ignores_spelling():
    a = TrainConfig.canonical({"learning_rate": "1e-3", "epochs": "3.0"})
    b = TrainConfig.canonical({"learning_rate": "0.001", "epochs": 3})
    assert a == b


@pytest.mark.parametrize(
    "params, message",
    [
        ({"epochs": "three"}, "epochs='three'"),
        ({"epochs": "2.5"}, "not a valid int"),
        ({"nonsense": "1"}, "unknown parameter"),
    ],
)
def test_bad_params_name_the_problem(params, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_params(params)


def test_runs_logged_under_a_renamed_parameter_still_parse():
    """Studies logged before `similarity` became `method` are read back (findings tables)."""
    logged = {"train_run_id": R1, "similarity": "dot"}
    assert InfluenceConfig.from_params(logged).method == "dot"
    assert MainConfig.from_params({"similarity": "ekfac"}).method == "ekfac"
    assert InfluenceConfig(train_run_id=R1).method == "dot"  # the paper's (findings 1h)


def test_main_splits_into_steps_with_their_own_defaults():
    main = MainConfig(epochs=2, influence_batch_size=8, top_k=7, accelerate_config="x.yaml")
    assert main.train() == TrainConfig(epochs=2, accelerate_config="x.yaml")
    assert main.influence(R1) == InfluenceConfig(
        train_run_id=R1, batch_size=8, top_k=7, accelerate_config="x.yaml"
    )
    assert main.analyze(R2) == AnalyzeConfig(influence_run_id=R2, top_k=7)


def test_main_shares_defaults_with_steps():
    """A default written once: MainConfig repeats the steps' fields, not their values."""
    main = {f.name: f.default for f in dataclasses.fields(MainConfig)}
    for cls in (TrainConfig, InfluenceConfig, AnalyzeConfig):
        for f in dataclasses.fields(cls):
            if f.name in main and f.name != "batch_size":
                assert main[f.name] == f.default, f.name
    assert main["influence_batch_size"] == InfluenceConfig.batch_size


def test_upstream_run_id():
    assert InfluenceConfig(train_run_id=R1).upstream_run_id == R1
    assert AnalyzeConfig(influence_run_id=R2).upstream_run_id == R2
    assert TrainConfig().upstream_run_id == ""
