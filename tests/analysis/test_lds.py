"""The linear datamodeling score on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from xlinfluence.analysis import lds
from xlinfluence.analysis.holm import holm


def test_column_spearman_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 7))
    b = a + rng.standard_normal((30, 7))
    b[:, 3] = np.round(b[:, 3])  # ties
    ours = lds.column_spearman(a, b)
    theirs = [spearmanr(a[:, j], b[:, j]).statistic for j in range(7)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert np.isnan(lds.column_spearman(a, np.ones_like(a))).all()  # constant: undefined


def test_holm_matches_the_step_down_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 -> 0.02, 0.03, 0.06, 0.04 -> monotone
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    assert holm(np.array([0.9, 0.8])).max() == 1.0


def _ridge_case(n_train=120, n_test=40, d=8, n_subsets=60, lam=60.0, noise=0.01, seed=0):
    """Ridge regression on fixed features: retrain exactly on every subset; first-order
    influence (the derivative of each test margin in the data weights at the full fit)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train, d))
    w_true = rng.standard_normal(d)
    y = np.sign(x @ w_true + 0.5 * rng.standard_normal(n_train))
    xt = rng.standard_normal((n_test, d))
    yt = np.sign(xt @ w_true)

    def fit(weights):
        return np.linalg.solve(x.T @ (weights[:, None] * x) + lam * np.eye(d), x.T @ (weights * y))

    theta = fit(np.ones(n_train))
    hessian = x.T @ x + lam * np.eye(d)
    gradients = x * (x @ theta - y)[:, None]  # per-example loss gradients
    # d margin_j / d w_i = -y_j x_j^T H^{-1} grad_i
    scores = -(yt[:, None] * xt) @ np.linalg.solve(hessian, gradients.T)
    masks = np.stack(
        [rng.permutation(n_train) < n_train // 2 for _ in range(n_subsets)]
    )  # alpha = 0.5
    margins = np.stack([yt * (xt @ fit(m.astype(float))) for m in masks])  # (M, n_test)
    seeds = margins[:, None, :] + noise * rng.standard_normal((n_subsets, 2, n_test))
    loss = np.log1p(np.exp(-seeds))
    outputs = {lds.MARGIN: seeds, lds.LOSS: loss}
    languages = np.array(["a", "b"] * (n_test // 2))
    return scores, masks, outputs, languages


def test_first_order_influence_predicts_ridge_retraining():
    scores, masks, outputs, languages = _ridge_case()
    random = lds.random_scores(*scores.shape, seed=1)
    table = lds.lds_table(
        {"influence": scores, lds.RANDOM: random}, masks, outputs, languages,
        reference=lds.RANDOM, n_resamples=300,
    )  # fmt: skip
    row = table.set_index(["method", "target", "test_language"])
    assert row.loc[("influence", lds.MARGIN, lds.ALL), "lds"] >= 0.9
    assert row.loc[("influence", lds.LOSS, lds.ALL), "lds"] >= 0.9  # loss is monotone in margin
    for language in ("a", "b"):
        assert row.loc[("influence", lds.MARGIN, language), "lds"] >= 0.85
    low, point, high = row.loc[("influence", lds.MARGIN, lds.ALL), ["ci_low", "lds", "ci_high"]]
    # duplicated subsets in a resample tie ranks, so near 1 the interval sits a hair low
    assert low < high and point - 0.01 <= high and high - low < 0.1
    assert abs(row.loc[(lds.RANDOM, lds.MARGIN, lds.ALL), "lds"]) <= 0.1
    ceiling = row.loc[(lds.CEILING, lds.MARGIN, lds.ALL), "lds"]
    assert ceiling > 0.95  # little seed noise: one seed predicts the other
    assert row.loc[(lds.CEILING_MEAN, lds.MARGIN, lds.ALL), "lds"] >= ceiling
    diff = row.loc[("influence", lds.MARGIN, lds.ALL)]
    # 300 resamples: the smallest two-sided p is 2/301, times 6 rows under Holm
    assert diff["diff_ci_low"] > 0.5 and diff["p_holm"] <= 6 * 2 / 301 + 1e-12


def test_random_scores_average_to_zero_over_many_subsets():
    rng = np.random.default_rng(3)
    n_train, n_test, n_subsets = 200, 60, 200
    masks = rng.random((n_subsets, n_train)) < 0.5
    outputs = rng.standard_normal((n_subsets, 2, n_test))
    table = lds.lds_table(
        {lds.RANDOM: lds.random_scores(n_test, n_train)},
        masks,
        {lds.MARGIN: outputs, lds.LOSS: -outputs},
        np.array(["x"] * n_test),
        n_resamples=100,
    )
    plain = table[table["method"] != lds.CEILING_MEAN]
    assert (plain["lds"].abs() <= 0.1).all()
    ceiling = table[table["method"] == lds.CEILING]
    assert (ceiling["lds"].abs() <= 0.1).all()  # independent seeds predict nothing
    # the seed-mean ceiling clips negative seed correlations at 0: biased up, still low
    assert (table[table["method"] == lds.CEILING_MEAN]["lds"] < 0.2).all()


def test_lds_needs_three_subsets():
    with pytest.raises(Exception, match="at least 3 subsets"):
        lds.lds_table({}, np.ones((2, 4), bool), {}, np.array(["x"]))
