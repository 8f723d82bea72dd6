"""The language-blind null: what top-k gives when it ignores language."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xlinfluence.analysis import example_shares, language_shares, share_intervals
from xlinfluence.analysis.null import EXCESS, NULL_SHARE, null_fractions, with_null


def _train():
    # label 0: en 6, de 2; label 1: en 2, de 6
    rows = [("en", 0)] * 6 + [("de", 0)] * 2 + [("en", 1)] * 2 + [("de", 1)] * 6
    return pd.DataFrame(
        {"id": [f"t{i}" for i in range(len(rows))], "language": [r[0] for r in rows],
         "label": [r[1] for r in rows]}
    )  # fmt: skip


def test_null_is_the_language_mix_of_the_same_label_pool():
    train = _train()
    null = null_fractions(train, np.array([0, 1]), ["en", "de"], k=4, same_label=True)
    np.testing.assert_allclose(null, [[0.75, 0.25], [0.25, 0.75]])
    # k above the pool: all 8 of label 0, then 2 of the 8 others at their mix (2 en, 6 de)
    null = null_fractions(train, np.array([0]), ["en", "de"], k=10, same_label=True)
    np.testing.assert_allclose(null, [[(6 + 2 * 2 / 8) / 10, (2 + 2 * 6 / 8) / 10]])
    opponents = null_fractions(train, np.array([0]), ["en", "de"], k=4, same_label=False)
    np.testing.assert_allclose(opponents, [[0.25, 0.75]])


def test_excess_is_share_minus_null_with_a_paired_interval():
    train = _train()
    test = pd.DataFrame({"id": ["a", "b"], "language": ["en", "en"], "label": [0, 0]})
    # both test examples take all 4 of their top-k from en; the null says 0.75 en
    table = pd.DataFrame(
        {"checkpoint": "total", "kind": "proponent", "test_index": np.repeat([0, 1], 4),
         "test_id": np.repeat(["a", "b"], 4), "test_language": "en", "rank": np.tile(range(4), 2),
         "train_index": [0, 1, 2, 3] * 2, "train_language": "en", "score": 1.0}
    )  # fmt: skip
    per_example = example_shares(table, train_languages=["en", "de"])
    shares = share_intervals(language_shares(table, ["en", "de"]), per_example)
    out = with_null(shares, per_example, train, test, k=4).set_index("train_language")
    assert out.loc["en", NULL_SHARE] == pytest.approx(0.75)
    assert out.loc["en", EXCESS] == pytest.approx(0.25)
    assert out.loc["de", EXCESS] == pytest.approx(-0.25)
    assert out.loc["en", "excess_ci_low"] == pytest.approx(0.25)  # no spread: paired
    assert list(out["share"]) == list(shares["share"])


def test_self_share_change_is_paired_over_the_same_test_examples():
    from xlinfluence.analysis.dynamics import CHANGE, self_share_change

    rows = []
    for checkpoint, own in (("epoch-1", [1.0, 0.5, 0.0, 0.5]), ("epoch-2", [0.5, 0.0, 0.0, 0.0])):
        for j, fraction in enumerate(own):
            rows.append({"checkpoint": checkpoint, "kind": "proponent", "test_index": j,
                         "test_id": f"t{j}", "test_language": "en", "en": fraction,
                         "de": 1 - fraction})  # fmt: skip
    per_example = pd.DataFrame(rows)
    table = self_share_change(per_example, "epoch-1", "epoch-2", n_resamples=2000)
    row = table.iloc[0]
    assert row[CHANGE] == pytest.approx(-0.375)
    assert row["ci_low"] <= -0.375 <= row["ci_high"] and row["ci_high"] <= 0
    assert row["p_holm"] == row["p"]  # one language: nothing to correct
