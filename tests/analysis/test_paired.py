"""Paired differences: checked against closed-form expectations and a direct pandas
computation, not against the function's own arithmetic."""

import numpy as np
import pandas as pd
import pytest

from xlinfluence.analysis.paired import TRANSLATION_EXCESS, paired_mean_test, translation_excess
from xlinfluence.analysis.translation import CONTROL_SHARE, TRANSLATION_SHARE


def test_interval_matches_the_normal_approximation_for_many_examples():
    d = np.random.default_rng(1).normal(0.3, 1.0, size=2000)
    out = paired_mean_test(d, n_resamples=4000, rng=np.random.default_rng(0))
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    assert out["mean"] == pytest.approx(d.mean())
    assert out["ci_low"] == pytest.approx(d.mean() - half, abs=0.01)
    assert out["ci_high"] == pytest.approx(d.mean() + half, abs=0.01)
    assert out["p"] == pytest.approx(2 / 4001)  # the floor: no resample reaches 0


def test_a_difference_centred_on_zero_is_not_significant_and_nan_is_skipped():
    d = np.concatenate([np.random.default_rng(2).normal(0, 1, 400), [np.nan] * 5])
    out = paired_mean_test(d, n_resamples=2000, rng=np.random.default_rng(0))
    assert out["n"] == 400 and out["p"] > 0.05 and out["ci_low"] < 0 < out["ci_high"]
    empty = paired_mean_test(np.array([np.nan]), rng=np.random.default_rng(0))
    assert empty["n"] == 0 and np.isnan(empty["p"])


def test_translation_excess_pairs_examples_within_checkpoint_and_language():
    rng = np.random.default_rng(3)
    rows = []
    for checkpoint in ("epoch-1", "epoch-2"):
        for language, shift in (("en", 0.4), ("de", 0.0)):
            for j in range(60):
                control = rng.uniform(0.2, 0.6)
                noise = 0.01 * (-1) ** j  # mean 0 exactly
                share = control + shift + noise
                rows.append({"checkpoint": checkpoint, "test_language": language,
                             "test_index": j, TRANSLATION_SHARE: share,
                             CONTROL_SHARE: control})  # fmt: skip
    per_example = pd.DataFrame(rows)
    table = translation_excess(per_example, n_resamples=2000).set_index(
        ["checkpoint", "test_language"]
    )
    expected = (per_example[TRANSLATION_SHARE] - per_example[CONTROL_SHARE]).groupby(
        [per_example["checkpoint"], per_example["test_language"]]
    ).mean()  # fmt: skip
    for key, value in expected.items():
        assert table.loc[key, TRANSLATION_EXCESS] == pytest.approx(value)
    en, de = table.loc[("epoch-1", "en")], table.loc[("epoch-1", "de")]
    # paired: the control's own spread (0.2..0.6) does not widen the interval
    assert en["ci_high"] - en["ci_low"] < 0.01
    assert en["p_holm"] < 0.01 and de["ci_low"] < 0 < de["ci_high"]
    assert en["p_holm"] == pytest.approx(min(1.0, 2 * en["p"]))  # Holm over 2 languages


def test_no_spread_gives_no_p_and_holm_leaves_it_out():
    from xlinfluence.analysis.holm import holm

    rng = np.random.default_rng(0)
    one = paired_mean_test(np.array([0.3, np.nan]), rng=rng)
    same = paired_mean_test(np.full(5, 0.2), rng=rng)
    assert one["mean"] == pytest.approx(0.3) and np.isnan(one["p"]) and np.isnan(one["ci_low"])
    assert np.isnan(same["p"]) and same["n"] == 5
    adjusted = holm(np.array([0.01, np.nan, 0.04]))
    assert np.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2]], [0.02, 0.04])  # a family of two, not three


def test_translation_excess_groups_interleaved_rows_and_skips_undefined_examples():
    rows = []
    for j in range(40):  # rows interleave languages and checkpoints
        for checkpoint in ("epoch-2", "epoch-1"):
            for language, shift in (("de", 0.2), ("sw", np.nan)):
                share = np.nan if j % 4 == 0 else 0.5 + shift + 0.01 * (-1) ** j
                rows.append({"checkpoint": checkpoint, "test_language": language,
                             "test_index": j, TRANSLATION_SHARE: share,
                             CONTROL_SHARE: 0.5})  # fmt: skip
    table = translation_excess(pd.DataFrame(rows), n_resamples=1000)
    assert list(table["checkpoint"]) == ["epoch-2", "epoch-2", "epoch-1", "epoch-1"]
    de = table[table["test_language"] == "de"]
    sw = table[table["test_language"] == "sw"]
    assert (de["n_test"] == 30).all()  # every 4th example has no translation share
    np.testing.assert_allclose(de[TRANSLATION_EXCESS], 0.2 - 0.01 / 3)  # 10 even, 20 odd j
    assert (de["p_holm"] == de["p"]).all()  # sw tested nothing: a family of one
    assert sw[TRANSLATION_EXCESS].isna().all() and sw["p_holm"].isna().all()
