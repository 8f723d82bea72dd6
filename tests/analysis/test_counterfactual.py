"""Which examples a counterfactual removal drops, and how effects are compared."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from xlinfluence.analysis import counterfactual as cf
from xlinfluence.errors import ConfigError, DataError

RUN = "a" * 32


def _frames():
    train = pd.DataFrame(
        {"id": [f"t{i}" for i in range(8)], "language": ["en"] * 4 + ["de"] * 4,
         "label": [0, 1, 0, 1, 0, 1, 0, 1]}
    )  # fmt: skip
    test = pd.DataFrame({"id": ["a", "b", "c"], "language": ["de", "de", "en"], "label": [0, 1, 0]})
    total = torch.zeros(3, 8)
    total[0, :4] = torch.tensor([1.0, 5.0, 2.0, 0.5])  # de test examples: en 1 > en 2 > en 0
    total[1, :4] = torch.tensor([1.0, 1.0, 2.0, -3.0])
    total[2, :4] = torch.tensor([9.0, 9.0, 9.0, 9.0])  # an en test example: not counted for de
    return total, train, test


def test_spec_round_trip_and_refusals():
    removal = cf.Removal(cf.RANDOM, RUN, "de", "en", 2, draw=1)
    assert cf.Removal.parse(removal.spec) == removal
    assert removal.tracin().spec == f"tracin:{RUN}:de:en:2"
    for bad in (f"tracin:{RUN}:de:en:2:1", f"random:{RUN}:de:en:2", "tracin:x:de:en:2"):
        with pytest.raises(ConfigError, match="not a removal"):
            cf.Removal.parse(bad)


def test_tracin_takes_the_highest_summed_scores_of_the_train_language():
    total, train, test = _frames()
    rows = cf.tracin_rows(total, train, test, cf.Removal(cf.TRACIN, RUN, "de", "en", 2))
    assert rows.tolist() == [1, 2]  # summed over the de test rows: [2, 6, 4, -2.5]


def test_random_control_matches_labels_and_avoids_tracins_picks():
    total, train, test = _frames()
    removal = cf.Removal(cf.RANDOM, RUN, "de", "en", 2, draw=0)
    chosen = cf.tracin_rows(total, train, test, removal)
    picked = cf.random_rows(train, chosen, removal, seed=1)
    assert set(picked).isdisjoint(chosen) and set(picked) <= {0, 3}
    assert sorted(train.label[picked]) == sorted(train.label[chosen])
    again = cf.random_rows(train, chosen, removal, seed=1)
    assert picked.tolist() == again.tolist()
    with pytest.raises(DataError, match="lower k"):  # label 0: en rows 0, 2 only
        cf.random_rows(train, np.array([0, 2]), cf.Removal(cf.RANDOM, RUN, "de", "en", 2), 1)


def test_paired_effect_and_the_comparison_table():
    base = pd.DataFrame({"language": ["de", "de", "en"], "loss": [1.0, 2.0, 5.0],
                         "correct": [1, 1, 0]})  # fmt: skip
    hurt = base.assign(loss=[2.0, 3.0, 5.0], correct=[0, 1, 0])
    effect = cf.paired_effect(base, hurt, "de")
    assert effect[cf.DELTA_LOSS] == 1.0 and effect[cf.DELTA_ACCURACY] == -0.5
    assert effect["delta_loss_ci_low"] == effect["delta_loss_ci_high"] == 1.0
    rows = [
        {"test_language": "de", "train_language": "en", "kind": cf.TRACIN, "draw": 0, "k": 2,
         "seconds": 10.0} | effect,
    ] + [
        {"test_language": "de", "train_language": "en", "kind": cf.RANDOM, "draw": d, "k": 2,
         "seconds": 12.0} | cf.paired_effect(base, base.assign(loss=[1.0 + s, 2.0, 5.0]), "de")
        for d, s in enumerate([0.1, -0.2, 0.3])
    ]  # fmt: skip
    table = cf.effects_table(rows)
    row = table.iloc[0]
    assert row["tracin_delta_loss"] == 1.0 and row["n_control"] == 3
    assert row["supported"] is None and np.isnan(row["p_control"]) and np.isnan(row["z"])
    assert "3 control draws cannot reach p <= 0.05" in row["verdict"]
    assert row["control_delta_loss_max"] == pytest.approx(0.15)
    assert row["seconds_per_retraining"] == pytest.approx(11.5)
    cf.effects_figure(table, pd.DataFrame(rows))


def test_a_verdict_needs_nineteen_control_draws():
    def table(n_draws, tracin_loss):
        rows = [
            {
                "test_language": "de",
                "train_language": "en",
                "kind": cf.TRACIN,
                "draw": 0,
                "k": 2,
                "seconds": 1.0,
                "delta_loss": tracin_loss,
                "delta_loss_ci_low": 0.0,
                "delta_loss_ci_high": 0.0,
                "delta_accuracy": 0.0,
                "n_test": 3,
            }
        ]
        rows += [rows[0] | {"kind": cf.RANDOM, "draw": d, "delta_loss": 0.01 * d}
                 for d in range(n_draws)]  # fmt: skip
        return cf.effects_table(rows).iloc[0]

    assert table(18, 1.0)["supported"] is None
    row = table(19, 1.0)
    assert row["supported"] and row["p_control"] == pytest.approx(1 / 20)
    assert row["verdict"] == "supported" and row["z"] > 0
    assert table(19, 0.1)["verdict"] == "not supported"  # 9 of 19 draws hurt as much
