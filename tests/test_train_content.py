"""experiment=train-content's table: paired shifts of each test example's shares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xlinfluence import artifacts
from xlinfluence.config.main import MainConfig
from xlinfluence.errors import ConfigError
from xlinfluence.experiments.train_content import settings, share_shift


def _example_shares(shares: dict[str, list[float]], test_language: list[str]) -> pd.DataFrame:
    n = len(test_language)
    final = pd.DataFrame({"checkpoint": artifacts.TOTAL, "kind": "proponent",
                          "test_index": range(n), "test_id": [f"t{i}" for i in range(n)],
                          "test_language": test_language, **shares})  # fmt: skip
    # rows the table must ignore: an epoch's shares and the opponents
    noise = final.assign(checkpoint="epoch-1", en=1.0, de=0.0)
    return pd.concat([noise, final, final.assign(kind="opponent", en=0.0, de=1.0)])


def test_the_shift_is_the_paired_mean_per_cell_with_holm():
    rng = np.random.default_rng(1)
    langs = ["en"] * 30 + ["de"] * 30
    en_before = rng.uniform(0.3, 0.7, 60)
    shift = np.where(np.array(langs) == "en", 0.2, 0.0) + rng.normal(0, 0.01, 60)
    parallel = _example_shares({"en": en_before, "de": 1 - en_before}, langs)
    disjoint = _example_shares({"en": en_before + shift, "de": 1 - en_before - shift}, langs)
    table = share_shift(parallel, disjoint).set_index(["test_language", "train_language"])
    assert len(table) == 4 and (table["n_test"] == 30).all()
    en = table.loc[("en", "en")]
    assert en["parallel"] == pytest.approx(en_before[:30].mean())
    assert en["difference"] == pytest.approx(shift[:30].mean())
    assert en["ci_low"] < en["difference"] < en["ci_high"]
    assert table.loc[("en", "de"), "difference"] == pytest.approx(-shift[:30].mean())
    assert en["p_holm"] < 0.01 and table.loc[("de", "en"), "p_holm"] > 0.05
    assert (table["p_holm"] >= table["p"]).all()


def test_settings_differ_in_train_content_only():
    config = MainConfig(experiment="train-content")
    made = settings(config)
    assert list(made) == ["parallel", "disjoint"]
    assert made["disjoint"] == MainConfig(train_content="disjoint")
    with pytest.raises(ConfigError, match="experiment_values"):
        MainConfig(experiment="train-content", experiment_values="x")
