"""Leave-one-language-out tables: paired effects, Holm, and agreement with attributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xlinfluence.analysis import ablation


def _frames(loss: np.ndarray, correct: np.ndarray) -> list[pd.DataFrame]:
    return [pd.DataFrame({"loss": lo, "correct": co}) for lo, co in zip(loss, correct, strict=True)]


def _case(seed=0, n_seeds=3, per_language=30):
    """Test languages a, b, c; training languages a, b, c; removing X raises L's loss by
    EFFECT[L][X] plus seed and example noise."""
    effect = {"a": {"a": 1.0, "b": 0.4, "c": 0.0},
              "b": {"a": 0.3, "b": 1.2, "c": 0.1},
              "c": {"a": 0.0, "b": 0.05, "c": 0.8}}  # fmt: skip
    rng = np.random.default_rng(seed)
    languages = np.repeat(["a", "b", "c"], per_language)
    base_loss = rng.random((n_seeds, len(languages)))
    base = _frames(base_loss, np.ones_like(base_loss))
    removed = {}
    for x in ("a", "b", "c"):
        shift = np.array([effect[lang][x] for lang in languages])
        noise = 0.05 * rng.standard_normal((n_seeds, len(languages)))
        loss = base_loss + shift + noise
        removed[x] = _frames(loss, (loss < 1.0).astype(float))
    return effect, languages, base, removed


def test_effects_are_paired_changes_with_intervals_and_holm():
    effect, languages, base, removed = _case()
    loss = ablation.deltas(base, removed, "loss")
    accuracy = ablation.deltas(base, removed, "correct")
    table = ablation.effect_table(loss, accuracy, languages, n_resamples=2000)
    assert len(table) == 9
    for row in table.itertuples():
        assert abs(row.delta_loss - effect[row.test_language][row.train_language]) < 0.05
        assert row.ci_low <= row.delta_loss <= row.ci_high
        assert row.p_holm >= row.p
        assert row.is_own == (row.test_language == row.train_language)
    big = table[(table["test_language"] == "a") & (table["train_language"] == "b")].iloc[0]
    assert big["p_holm"] < 0.01  # 0.4 with noise 0.05: clearly not zero


def test_agreement_is_one_for_the_exact_effects_and_low_for_noise():
    effect, languages, base, removed = _case()
    loss = ablation.deltas(base, removed, "loss")
    train_languages = ["a", "b", "c"]
    exact = np.array([[effect[lang][x] for x in train_languages] for lang in languages])
    reversed_ = -exact
    table = ablation.agreement(
        loss, {"exact": exact, "reversed": reversed_}, train_languages, languages,
        n_resamples=200,
    ).set_index("prediction")  # fmt: skip
    assert table.loc["exact", "spearman"] > 0.9
    assert table.loc["reversed", "spearman"] < -0.9
    assert table.loc["exact", "n_cells"] == 6  # off-diagonal only
    assert table.loc["exact", "ci_low"] <= table.loc["exact", "spearman"]


def test_attribution_cells_sum_scores_per_language_and_count_top_k():
    train = pd.DataFrame({"language": ["a", "a", "b", "b"]})
    test = pd.DataFrame({"language": ["a", "b"]})
    scores = np.array([[1.0, 2.0, 3.0, -1.0], [0.0, 0.0, 5.0, 4.0]])
    summed, share, order = ablation.attribution_cells(scores, train, test, top_k=2)
    assert order == ["a", "b"]
    np.testing.assert_allclose(summed, [[3.0, 2.0], [0.0, 9.0]])
    np.testing.assert_allclose(share, [[0.5, 0.5], [0.0, 1.0]])


def test_own_language_excess_is_paired_and_finds_only_the_planted_own_reliance():
    from xlinfluence.analysis.ablation import own_language_excess

    rng = np.random.default_rng(0)
    languages = np.array(["en"] * 30 + ["de"] * 30)
    # every removal raises every loss by ~0.3 with large shared noise per (seed, example);
    # removing en costs en's examples 0.2 more; de's own removal is like the others
    shared = rng.normal(0.3, 0.5, (3, 60))
    loss = {x: shared + rng.normal(0, 0.01, (3, 60)) for x in ("en", "de", "fr")}
    loss["en"][:, :30] += 0.2
    table = own_language_excess(loss, languages, n_resamples=4000).set_index("test_language")
    en, de = table.loc["en"], table.loc["de"]
    assert en["own_minus_others"] == pytest.approx(
        np.mean(loss["en"][:, :30] - (loss["de"][:, :30] + loss["fr"][:, :30]) / 2)
    )
    assert en["ci_low"] > 0.15 and en["p_holm"] < 0.01  # the shared noise cancels: paired
    assert de["ci_low"] < 0 < de["ci_high"]
    two_seeds = own_language_excess({x: v[:2] for x, v in loss.items()}, languages)
    assert two_seeds["p"].isna().all() and two_seeds["p_holm"].isna().all()
