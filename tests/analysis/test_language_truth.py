"""The language-level ground truth against simulated designs whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xlinfluence.analysis import design, lds, partialled_lds
from xlinfluence.analysis import language_truth as lt
from xlinfluence.errors import ConfigError

LANGUAGES = ["aa", "bb", "cc", "dd", "ee"]
TESTS = [*LANGUAGES, "zz"]  # zz: a zero-shot test language


def _outcomes(beta: np.ndarray, *, seeds: int, noise: float, rng, cuts=None) -> pd.DataFrame:
    """Per (composition, seed, test language) mean loss = base + sum_X beta[L, X] cut_X +
    seed effect + noise; margin = -loss (so both targets carry the same beta)."""
    cuts = design.cut_matrix("half", len(LANGUAGES)) if cuts is None else cuts
    seed_effect = rng.normal(0, 0.3, seeds)
    rows = []
    for cut in cuts:
        name = "cut-" + ("+".join(np.asarray(LANGUAGES)[cut]) or "none")
        for s in range(seeds):
            for i, lang in enumerate(TESTS):
                loss = 1.0 + 0.1 * i + beta[i] @ cut + seed_effect[s] + rng.normal(0, noise)
                rows.append({"composition": name, "seed": s, "test_language": lang}
                            | {f"cut.{x}": int(c) for x, c in zip(LANGUAGES, cut, strict=True)}
                            | {"loss": loss, "margin": -loss})  # fmt: skip
    return pd.DataFrame(rows)


def _beta(own: float, other: float) -> np.ndarray:
    beta = np.full((len(TESTS), len(LANGUAGES)), other)
    for i in range(len(LANGUAGES)):
        beta[i, i] = own
    return beta


def test_designs_are_balanced_orthogonal_and_hold_the_whole_set():
    for name, k, runs in (("full", 3, 8), ("half", 5, 16), ("quarter", 5, 8), ("auto", 5, 16)):
        cuts = design.cut_matrix(name, k)
        assert cuts.shape == (runs, k) and not cuts[0].any()
        design.check_orthogonal(cuts)
        assert len({tuple(c) for c in cuts}) == runs
    with pytest.raises(ConfigError, match="design=full"):
        design.cut_matrix("quarter", 4)


def test_the_regression_recovers_beta_within_its_intervals():
    rng = np.random.default_rng(0)
    beta = rng.uniform(0, 0.2, (len(TESTS), len(LANGUAGES)))
    fit = lt.fit_truth(_outcomes(beta, seeds=3, noise=0.02, rng=rng), LANGUAGES)
    table = fit.table[fit.table["target"] == "loss"]
    measured = table.pivot(index="test_language", columns="train_language", values="beta")
    np.testing.assert_allclose(measured.loc[TESTS, LANGUAGES], beta, atol=0.03)
    covered = (table["low"] <= beta.ravel()) & (beta.ravel() <= table["high"])
    assert covered.mean() >= 0.85  # 95% intervals over 30 cells
    assert (table["df"] == 16 * 3 - 1 - 5 - 2).all()
    margin = fit.table[fit.table["target"] == "margin"]["beta"].to_numpy()
    np.testing.assert_allclose(margin, table["beta"].to_numpy())  # margin negated: same sign


def test_the_premium_is_found_refuted_as_equivalent_or_left_open():
    rng = np.random.default_rng(1)
    margins = {"loss": 0.02, "margin": 0.02}
    found = lt.premium(lt.fit_truth(_outcomes(_beta(0.2, 0.05), seeds=3, noise=0.01, rng=rng),
                                    LANGUAGES), LANGUAGES, margins)  # fmt: skip
    loss = found[found["target"] == "loss"]
    assert list(loss["test_language"]) == LANGUAGES  # zz has no own language
    assert (loss["verdict"] == "premium").all()
    np.testing.assert_allclose(loss["premium"], 0.15, atol=0.02)
    none = lt.premium(lt.fit_truth(_outcomes(_beta(0.05, 0.05), seeds=3, noise=0.005, rng=rng),
                                   LANGUAGES), LANGUAGES, margins)  # fmt: skip
    assert (none["verdict"] == "equivalent (no premium beyond the margin)").all()
    noisy = lt.premium(lt.fit_truth(_outcomes(_beta(0.05, 0.05), seeds=3, noise=0.5, rng=rng),
                                    LANGUAGES), LANGUAGES, margins)  # fmt: skip
    assert (noisy["verdict"] == "inconclusive").all()
    assert (noisy["p_holm"] >= noisy["p"]).all() and (noisy["p_tost_holm"] >= noisy["p_tost"]).all()


def test_the_power_analysis_reads_the_pilots_spread():
    rng = np.random.default_rng(2)
    k = len(LANGUAGES)
    pilot_cuts = np.array([[False] * k, [True] * k])
    pilot = _outcomes(_beta(0.1, 0.1), seeds=4, noise=0.02, rng=rng, cuts=pilot_cuts)
    margins = lt.equivalence_margins(pilot, k)
    assert margins["loss"] == pytest.approx(0.5 * 0.1, abs=0.01)  # all cut: 0.5 = 5 x 0.1
    power = lt.power_table(pilot, n_languages=k, n_compositions=16)
    loss = power[power["target"] == "loss"]
    assert loss["seed_sd"].iloc[0] == pytest.approx(0.02, rel=0.5)
    assert loss["power_premium"].is_monotonic_increasing
    assert loss["se_beta"].iloc[0] == pytest.approx(2 * loss["seed_sd"].iloc[0] / np.sqrt(32))
    assert loss["chosen"].sum() == 1 and loss[loss["chosen"]]["seeds"].iloc[0] >= 3
    noisy = lt.power_table(
        _outcomes(_beta(0.1, 0.1), seeds=4, noise=1.0, rng=rng, cuts=pilot_cuts),
        n_languages=k, n_compositions=16,
    )  # fmt: skip
    assert noisy["power_equivalence"].max() < lt.POWER_GOAL and not noisy["chosen"].any()


def test_double_centring_ignores_row_and_column_effects():
    rng = np.random.default_rng(3)
    measured = rng.normal(size=(6, 5))
    shifted = 3 * measured + rng.normal(size=(6, 1)) + rng.normal(size=(1, 5))
    assert lt.double_centred_correlation(shifted, measured) == pytest.approx(1.0)
    only_rows = rng.normal(size=(6, 1)) + np.zeros((6, 5))
    assert np.isnan(lt.double_centred_correlation(only_rows, measured))


def _scores_frames(n_per_language=20, n_test=8, n_labels=4, seed=4):
    rng = np.random.default_rng(seed)
    train = pd.DataFrame(
        {
            "language": np.repeat(LANGUAGES, n_per_language),
            "label": rng.integers(0, n_labels, len(LANGUAGES) * n_per_language),
        }
    )
    test = pd.DataFrame({"language": np.repeat(TESTS, n_test),
                         "label": rng.integers(0, n_labels, len(TESTS) * n_test)})  # fmt: skip
    return train, test


def test_an_attribution_that_knows_beta_agrees_and_random_scores_do_not():
    rng = np.random.default_rng(5)
    beta = rng.uniform(0, 0.2, (len(TESTS), len(LANGUAGES)))
    fit = lt.fit_truth(_outcomes(beta, seeds=3, noise=0.005, rng=rng), LANGUAGES)
    train, test = _scores_frames()
    # an oracle: every row of X scores beta[L, X] / rows for every test example of L
    oracle = np.stack([beta[TESTS.index(t), [LANGUAGES.index(x) for x in train["language"]]]
                       for t in test["language"]]) / 20  # fmt: skip
    table = lt.agreement(fit, {"oracle": oracle, lds.RANDOM: oracle}, train, test,
                         cut_fraction=0.25, top_k=10, n_draws=300, n_random=50)  # fmt: skip
    summed = table[
        (table["prediction"] == "summed") & (table["target"] == "loss")
        & (table["centring"] == "double")
    ]  # fmt: skip
    by = summed.set_index("method")
    assert by.loc["oracle", "agreement"] > 0.95 and by.loc["oracle", "low"] > 0.8
    assert by.loc["random", "low"] < 0 < by.loc["random", "high"]
    assert abs(by.loc["random", "agreement"]) < 0.2
    assert {"label-only", "language-only", "random"} <= set(by.index)
    assert by.loc["oracle", "diff_low"] > 0  # paired over beta's draws, vs label-only
    rows = table[(table["centring"] == "rows") & (table["prediction"] == "summed")]
    assert rows.set_index(["target", "method"]).loc[("loss", "oracle"), "agreement"] > 0.95


def test_label_only_lds_on_a_label_count_case_is_its_known_value_and_random_is_near_zero():
    """Outputs that are exactly 'same-label rows kept minus the others' share' are what
    label-only predicts: Spearman 1 on every test example. Random scores: about 0."""
    rng = np.random.default_rng(6)
    train, test = _scores_frames(n_per_language=30, n_labels=3)
    scores = lt.label_only_scores(train, test, 3)
    masks = rng.random((40, len(train))) < rng.uniform(0.2, 0.8, (40, 1))  # label counts vary
    truth = lds.predicted_outputs(scores, masks)
    seeds = np.repeat(truth[:, None], 2, axis=1)
    outputs = {"margin": seeds, "loss": -seeds}
    random = lds.random_scores(len(test), len(train), seed=1)
    table = lds.lds_table({"label-only": scores, "random": random}, masks, outputs,
                          test["language"].to_numpy(), n_resamples=200)  # fmt: skip
    overall = table[table["test_language"] == lds.ALL].set_index(["method", "target"])["lds"]
    assert overall[("label-only", "margin")] == pytest.approx(1.0)
    assert overall[("label-only", "loss")] == pytest.approx(1.0)
    assert abs(overall[("random", "margin")]) < 0.1


def _partialled_case(seed: int = 7):
    """A half design over LANGUAGES with a fresh random quarter of every cut language, and
    outputs that follow one 'informed' score matrix plus seed noise."""
    rng = np.random.default_rng(seed)
    train, test = _scores_frames(n_per_language=24, n_labels=3)
    cuts = design.cut_matrix("half", len(LANGUAGES))
    language = train["language"].to_numpy()
    kept = np.ones((len(cuts), len(train)), dtype=bool)
    for r, cut in enumerate(cuts):  # a fresh random quarter of every cut language
        for x, is_cut in zip(LANGUAGES, cut, strict=True):
            if is_cut:
                rows = np.flatnonzero(language == x)
                kept[r, rows] = False
                kept[r, rng.choice(rows, 6, replace=False)] = True
    informed = rng.normal(size=(len(test), len(train)))
    signal = lds.predicted_outputs(informed, kept)
    outputs = {
        "margin": signal[:, None] + rng.normal(0, 0.5, (len(cuts), 3, len(test))),
        "loss": -signal[:, None] + rng.normal(0, 0.5, (len(cuts), 3, len(test))),
    }
    return train, test, cuts, kept, informed, outputs


def test_partialled_lds_credits_what_is_known_beyond_the_language_amounts():
    train, test, cuts, kept, informed, outputs = _partialled_case()
    language = train["language"].to_numpy()
    # label-only on label-stratified cuts would be flat; here a per-language constant is
    language_only = np.stack([(language == t).astype(float) for t in test["language"]])
    scores = {"informed": informed, "language-amounts": language_only,
              lds.RANDOM: lds.random_scores(len(test), len(train))}  # fmt: skip
    examples = partialled_lds.per_example(scores, kept, outputs, cuts)
    table = partialled_lds.partialled_lds(examples, test["language"].to_numpy())
    overall = table[(table["test_language"] == lds.ALL) & (table["target"] == "margin")]
    by = overall.set_index("method")
    assert by.loc["informed", "lds"] > 0.5 and by.loc["informed", "low"] > 0.4
    assert np.isnan(by.loc["language-amounts", "lds"])  # nothing beyond the amounts
    assert abs(by.loc["random", "lds"]) < 0.15
    assert 0 < by.loc["informed", "fraction_of_ceiling"]
    assert by.loc[lds.CEILING_MEAN, "lds"] > 0.5


def test_paired_partialled_differences_match_a_plain_per_example_computation():
    """diff is the mean over test examples of (method's Spearman - reference's) after the
    cut indicators are regressed out, computed here by lstsq and scipy, one example at a
    time; an informed method beats noise with an interval above 0 in every seed."""
    from scipy import stats

    train, test, cuts, kept, informed, outputs = _partialled_case()
    noisy = informed + np.random.default_rng(3).normal(0, 3.0, informed.shape)
    scores = {"informed": informed, "noisy": noisy,
              lds.RANDOM: lds.random_scores(len(test), len(train))}  # fmt: skip
    table = partialled_lds.partialled_differences(
        partialled_lds.per_example(scores, kept, outputs, cuts), test["language"].to_numpy(),
        reference="informed", n_resamples=2000,
    )  # fmt: skip
    z = np.column_stack([np.ones(len(cuts)), cuts])

    def partialled(y):
        return y - z @ np.linalg.lstsq(z, y, rcond=None)[0]

    outcome = partialled(outputs["margin"].mean(axis=1))
    expected = {}
    for name in ("noisy", lds.RANDOM):
        mine = partialled(kept.astype(float) @ scores[name].T)
        ref = partialled(kept.astype(float) @ informed.T)
        rho = stats.spearmanr
        per_example = [
            rho(mine[:, i], outcome[:, i])[0] - rho(ref[:, i], outcome[:, i])[0]
            for i in range(len(test))
        ]
        expected[name] = np.mean(per_example)
    rows = table[(table["target"] == "margin") & (table["test_language"] == lds.ALL)]
    by = rows.set_index("method")
    assert "informed" not in by.index  # the reference is not paired with itself
    for name, value in expected.items():
        assert by.loc[name, "diff"] == pytest.approx(value, abs=1e-9)
        assert by.loc[name, "high"] < 0 and by.loc[name, "p_holm"] < 0.05
        assert by.loc[name, "seeds_agreeing"] == by.loc[name, "n_seeds"] == 3
        assert by.loc[name, "seed_low"] <= by.loc[name, "seed_high"] < 0
    assert by.loc[lds.RANDOM, "diff"] < by.loc["noisy", "diff"]
    families = table.groupby(["target", "test_language"])["method"].apply(set)
    assert all(f == {"noisy", lds.RANDOM} for f in families)  # Holm over these two


def test_a_tie_break_left_after_partialling_is_flat_and_moves_no_other_interval():
    """A score that is a function of the language amounts plus a tie-break jitter (as
    label-only's is on label-stratified cuts) keeps under 1e-7 of its reach after
    partialling: it gets NaN, not a Spearman of the jitter, and no paired row. Scoring it or
    not leaves every other method's interval as it was (the draws are shared)."""
    train, test, cuts, kept, informed, outputs = _partialled_case()
    language = train["language"].to_numpy()
    jitter = np.random.default_rng(5).uniform(0, 1e-7, (len(test), len(train)))
    # 0.5 a row for every row: the zero-shot test language's prediction is the rows kept
    own = np.stack([(language == t).astype(float) for t in test["language"]])
    amounts = own + 0.5 + jitter
    random = lds.random_scores(len(test), len(train))
    languages = test["language"].to_numpy()
    with_jitter = partialled_lds.per_example(
        {"informed": informed, "amounts": amounts, lds.RANDOM: random}, kept, outputs, cuts
    )
    without = partialled_lds.per_example({"informed": informed, lds.RANDOM: random}, kept,
                                         outputs, cuts)  # fmt: skip
    table = partialled_lds.partialled_lds(with_jitter, languages).set_index(
        ["method", "target", "test_language"]
    )
    assert table.loc[("amounts", "loss", lds.ALL), "n_test"] == 0
    assert np.isnan(table.loc[("amounts", "loss", lds.ALL), "lds"])
    alone = partialled_lds.partialled_lds(without, languages).set_index(
        ["method", "target", "test_language"]
    )
    shared = alone.index
    pd.testing.assert_frame_equal(table.loc[shared], alone.loc[shared])
    paired = partialled_lds.partialled_differences(with_jitter, languages, reference="informed")
    assert "amounts" not in set(paired["method"])


def test_tied_ranks_are_rankdata_of_the_exact_values_despite_rounding_noise():
    from scipy.stats import rankdata

    exact = np.array([[0.5, 2.0], [-0.5, 2.0], [0.5, 1.0], [-0.5, 1.0], [1.5, 0.0]])
    noisy = exact + np.random.default_rng(0).normal(0, 1e-15, exact.shape)
    ranks = partialled_lds._tied_ranks(noisy, np.full(2, 1e-9))
    np.testing.assert_array_equal(ranks, rankdata(exact, axis=0))


def test_the_partialled_lds_of_a_quarter_design_does_not_follow_rounding_noise():
    """The 2^(5-2) design leaves 2 residual dimensions spanned by +-1 contrasts, so each
    example's 8 partialled values come in equal pairs; scores changed in their last bits
    (as another BLAS build changes a product) must give the same LDS, bit for bit."""
    rng = np.random.default_rng(11)
    cuts = design.cut_matrix("quarter", 5)
    n_train, n_test = 60, 12
    kept = rng.random((len(cuts), n_train)) < 0.7
    scores = rng.normal(size=(n_test, n_train))
    outputs = {t: rng.normal(size=(len(cuts), 3, n_test)) for t in ("loss", "margin")}
    bumped = scores * (1 + rng.normal(0, 1e-14, scores.shape))
    left = partialled_lds.per_example({"m": scores}, kept, outputs, cuts)
    right = partialled_lds.per_example({"m": bumped}, kept, outputs, cuts)
    for target in ("loss", "margin"):
        np.testing.assert_array_equal(left.pooled[target]["m"], right.pooled[target]["m"])
    residual = partialled_lds._residual_maker(cuts) @ lds.predicted_outputs(scores, kept)
    assert len(np.unique(np.round(residual[:, 0], 9))) == 4  # the ties this guards against
