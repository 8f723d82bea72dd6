import math

import numpy as np
import pandas as pd
import pytest

from xlinfluence.analysis.bootstrap import (
    bootstrap_means,
    hierarchical_bootstrap_means,
    pooled_self_share_intervals,
    pooled_share_intervals,
    pooled_translation_share_intervals,
    self_share_intervals,
    share_intervals,
    translation_share_intervals,
)
from xlinfluence.analysis.shares import example_shares, language_shares, self_shares
from xlinfluence.analysis.translation import (
    aggregate_translation_share,
    translation_share_per_example,
)
from xlinfluence.errors import ConfigError, DataError

from .cases import TRAIN_LANGS


def per_example_frame(values_by_language: dict[str, np.ndarray], checkpoints=("c0",)):
    """A per-example table: column "v", test languages in dict order, same values per ckpt."""
    rows, start = [], 0
    for language, values in values_by_language.items():
        for checkpoint in checkpoints:
            for i, v in enumerate(values):
                rows.append((checkpoint, start + i, language, float(v)))
        start += len(values)
    return pd.DataFrame(rows, columns=["checkpoint", "test_index", "test_language", "v"])


def reference_intervals(values_by_language, n_resamples, confidence, seed):
    """A plain per-language loop over the same random draws."""
    rng = np.random.default_rng(seed)
    alpha = 1 - confidence
    out = {}
    for language, values in values_by_language.items():
        values = np.asarray(values, dtype=float)
        idx = rng.integers(0, len(values), size=(n_resamples, len(values)))
        means = np.array([np.nanmean(values[row]) if (~np.isnan(values[row])).any() else np.nan
                          for row in idx])  # fmt: skip
        defined = means[~np.isnan(means)]
        bounds = np.quantile(defined, [alpha / 2, 1 - alpha / 2]) if len(defined) else [np.nan] * 2
        out[language] = tuple(bounds)
    return out


@pytest.fixture
def shares(table):
    return language_shares(table, TRAIN_LANGS)


@pytest.fixture
def per_example(table):
    return example_shares(table, TRAIN_LANGS)


def test_matches_a_per_example_loop():
    gen = np.random.default_rng(1)
    values = {"a": gen.random(13), "b": gen.random(7), "c": gen.random(1)}
    out = bootstrap_means(per_example_frame(values), ["v"], n_resamples=300, seed=5)
    expected = reference_intervals(values, 300, 0.95, seed=5)
    assert out["test_language"].tolist() == ["a", "b", "c"]
    assert out["n_test"].tolist() == [13, 7, 1]
    np.testing.assert_allclose(out["v"], [np.mean(v) for v in values.values()])
    np.testing.assert_allclose(out["v_ci_low"], [expected[k][0] for k in values])
    np.testing.assert_allclose(out["v_ci_high"], [expected[k][1] for k in values])


def test_nan_values_are_skipped_like_the_loop():
    values = {"a": np.array([0.2, np.nan, 0.6, 1.0, np.nan]), "b": np.array([np.nan, np.nan])}
    out = bootstrap_means(per_example_frame(values), ["v"], n_resamples=200, seed=3)
    expected = reference_intervals(values, 200, 0.95, seed=3)
    assert out["v"].iloc[0] == pytest.approx(0.6)
    np.testing.assert_allclose(out[["v_ci_low", "v_ci_high"]].iloc[0], expected["a"])
    assert out[["v", "v_ci_low", "v_ci_high"]].iloc[1].isna().all()  # nothing defined


def test_interval_contains_point_estimate(shares, per_example):
    out = share_intervals(shares, per_example)
    assert (out["ci_low"] <= out["share"] + 1e-12).all()
    assert (out["share"] <= out["ci_high"] + 1e-12).all()
    gen = np.random.default_rng(0)
    values = {lang: gen.beta(2, 5, size=n) for lang, n in (("a", 25), ("b", 40), ("c", 3))}
    out = bootstrap_means(per_example_frame(values, ("c0", "c1")), ["v"])
    assert ((out["v_ci_low"] <= out["v"]) & (out["v"] <= out["v_ci_high"])).all()


def test_interval_narrows_with_more_test_examples():
    gen = np.random.default_rng(0)
    widths = []
    for n in (10, 100, 1000):
        out = bootstrap_means(per_example_frame({"a": gen.random(n)}), ["v"], seed=1)
        widths.append((out["v_ci_high"] - out["v_ci_low"]).item())
    assert widths[0] > widths[1] > widths[2] > 0
    assert widths[0] / widths[2] == pytest.approx(10, rel=0.3)  # ~ 1 / sqrt(n)


def test_identical_examples_give_a_point_interval():
    out = bootstrap_means(per_example_frame({"a": np.full(25, 0.3), "b": np.full(4, 1.0)}), ["v"])
    np.testing.assert_allclose(out["v_ci_low"], out["v"], rtol=1e-12)
    np.testing.assert_allclose(out["v_ci_high"], out["v"], rtol=1e-12)
    np.testing.assert_allclose(out["v"], [0.3, 1.0], rtol=1e-12)


def test_deterministic_for_a_seed(shares, per_example):
    first = share_intervals(shares, per_example, seed=7)
    pd.testing.assert_frame_equal(first, share_intervals(shares, per_example, seed=7))
    gen = np.random.default_rng(0)
    frame = per_example_frame({"a": gen.random(30)})
    a = bootstrap_means(frame, ["v"], seed=1)
    assert a.equals(bootstrap_means(frame, ["v"], seed=1))
    assert not a.equals(bootstrap_means(frame, ["v"], seed=2))


def test_share_intervals_keep_the_shares_table(shares, per_example):
    out = share_intervals(shares, per_example, n_resamples=200)
    assert list(out.columns) == [*shares.columns, "ci_low", "ci_high"]
    pd.testing.assert_frame_equal(out[list(shares.columns)], shares)
    # sw has one test example: nothing to resample, the interval is the point
    sw = out[out["test_language"] == "sw"]
    np.testing.assert_allclose(sw["ci_low"], sw["share"])
    np.testing.assert_allclose(sw["ci_high"], sw["share"])
    # epoch-1 proponents, de tests: en fractions 0.25 and 0.75 -> resample means in {.25,.5,.75}
    row = out[
        (out["checkpoint"] == "epoch-1")
        & (out["kind"] == "proponent")
        & (out["test_language"] == "de")
        & (out["train_language"] == "en")
    ]
    assert row[["ci_low", "ci_high"]].values.tolist() == [[0.25, 0.75]]


def test_self_share_intervals(shares, per_example):
    own = self_shares(shares)
    out = self_share_intervals(own, per_example, seed=4)
    ci = ["self_share_ci_low", "self_share_ci_high", "cross_share_ci_low", "cross_share_ci_high"]
    assert list(out.columns) == [*own.columns, *ci]
    sw = out[out["test_language"] == "sw"]
    assert sw["self_share_ci_low"].isna().all() and sw["self_share_ci_high"].isna().all()
    assert (sw["cross_share_ci_low"] == 1.0).all() and (sw["cross_share_ci_high"] == 1.0).all()
    seen = out[out["test_language"] != "sw"]
    np.testing.assert_allclose(seen["cross_share_ci_low"], 1 - seen["self_share_ci_high"])
    np.testing.assert_allclose(seen["cross_share_ci_high"], 1 - seen["self_share_ci_low"])
    # same seed, same draws: the own share's interval is the own cell's interval in shares
    cells = share_intervals(shares, per_example, seed=4)
    cells = cells[cells["train_language"] == cells["test_language"]]
    merged = seen.merge(cells, on=["checkpoint", "kind", "test_language"])
    np.testing.assert_allclose(merged["self_share_ci_low"], merged["ci_low"])
    np.testing.assert_allclose(merged["self_share_ci_high"], merged["ci_high"])


def test_translation_share_intervals(table, train):
    per = translation_share_per_example(table, train)
    aggregated = aggregate_translation_share(per)
    out = translation_share_intervals(aggregated, per, n_resamples=500)
    assert list(out.columns) == [
        *aggregated.columns,
        "translation_share_ci_low",
        "translation_share_ci_high",
    ]
    defined = out.dropna(subset=["translation_share"])
    assert (defined["translation_share_ci_low"] <= defined["translation_share"] + 1e-12).all()
    assert (defined["translation_share"] <= defined["translation_share_ci_high"] + 1e-12).all()
    undefined = out[out["translation_share"].isna()]
    assert undefined["translation_share_ci_low"].isna().all()


def test_hierarchical_with_one_seed_is_the_plain_bootstrap(per_example):
    plain = bootstrap_means(per_example, TRAIN_LANGS, ("checkpoint", "kind"), seed=2)
    pooled = hierarchical_bootstrap_means(
        [per_example], TRAIN_LANGS, ("checkpoint", "kind"), seed=2
    )
    assert (pooled["n_seeds"] == 1).all()
    pd.testing.assert_frame_equal(pooled.drop(columns="n_seeds"), plain)


def test_hierarchical_matches_a_loop_and_widens_with_seed_spread():
    gen = np.random.default_rng(0)
    n, n_seeds, n_resamples = 20, 4, 400
    base = gen.random(n)
    offsets = np.array([-0.2, 0.0, 0.1, 0.3])
    tables = [per_example_frame({"a": base + o}) for o in offsets]
    out = hierarchical_bootstrap_means(tables, ["v"], n_resamples=n_resamples, seed=9)
    # reference: seeds with replacement, then examples within each drawn seed
    rng = np.random.default_rng(9)
    values = np.stack([base + o for o in offsets])  # (S, n)
    seeds = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    examples = rng.integers(0, n, size=(n_resamples, n_seeds, n))
    means = values[seeds[:, :, None], examples].mean(axis=(1, 2))
    low, high = np.quantile(means, [0.025, 0.975])
    assert out["v"].item() == pytest.approx(values.mean())
    assert out["v_ci_low"].item() == pytest.approx(low)
    assert out["v_ci_high"].item() == pytest.approx(high)
    assert out[["n_seeds", "n_test"]].values.tolist() == [[4, 20]]
    # ignoring the seeds (one pool of 80 examples) underestimates the spread
    flat = per_example_frame({"a": values.ravel()})
    naive = bootstrap_means(flat, ["v"], n_resamples=n_resamples, seed=9)
    assert (high - low) > (naive["v_ci_high"] - naive["v_ci_low"]).item()


def test_pooled_tables(table, train, per_example):
    pooled = pooled_share_intervals([per_example, per_example], n_resamples=100)
    assert list(pooled.columns) == [
        "checkpoint", "kind", "test_language", "train_language",
        "share", "n_seeds", "n_test", "ci_low", "ci_high",
    ]  # fmt: skip
    point = language_shares(table, TRAIN_LANGS)
    np.testing.assert_allclose(pooled["share"], point["share"])
    assert pooled[["checkpoint", "kind", "test_language", "train_language"]].equals(
        point[["checkpoint", "kind", "test_language", "train_language"]]
    )
    own = pooled_self_share_intervals([per_example, per_example], n_resamples=100)
    assert own.loc[own["test_language"] == "sw", "zero_shot"].all()
    assert math.isnan(own.loc[own["test_language"] == "sw", "self_share"].iloc[0])
    per = translation_share_per_example(table, train)
    tr = pooled_translation_share_intervals([per, per, per], n_resamples=100)
    np.testing.assert_allclose(
        tr["translation_share"], aggregate_translation_share(per)["translation_share"]
    )


def test_pooling_needs_alike_tables():
    a = per_example_frame({"a": np.ones(5)})
    b = per_example_frame({"a": np.ones(6)})
    with pytest.raises(DataError, match="same"):
        hierarchical_bootstrap_means([a, b], ["v"])


def test_settings_are_checked():
    frame = per_example_frame({"a": np.ones(3)})
    with pytest.raises(ConfigError, match="n_resamples"):
        bootstrap_means(frame, ["v"], n_resamples=0)
    with pytest.raises(ConfigError, match="confidence"):
        bootstrap_means(frame, ["v"], confidence=95)
    with pytest.raises(DataError, match="same"):
        bootstrap_means(frame.iloc[:-1].assign(checkpoint=["c0", "c1"]), ["v"])


def test_fast_enough_for_a_real_analysis():
    """125 test examples x 5 languages x 4 checkpoints x 2 kinds, 1000 resamples."""
    import time

    gen = np.random.default_rng(0)
    langs = list("abcde")
    rows = [
        (f"c{c}", kind, j, f"t{j}", langs[j // 25], *gen.dirichlet(np.ones(5)))
        for c in range(4)
        for kind in ("proponent", "opponent")
        for j in range(125)
    ]
    per = pd.DataFrame(
        rows, columns=["checkpoint", "kind", "test_index", "test_id", "test_language", *langs]
    )
    start = time.perf_counter()
    bootstrap_means(per, langs, ("checkpoint", "kind"))
    assert time.perf_counter() - start < 1.0
