"""Experiment comparisons: tables and figures from per-setting analysis tables."""

from __future__ import annotations

import io

import pandas as pd
import torch

from xlinfluence.analysis import compare
from xlinfluence.analysis.bootstrap import share_intervals
from xlinfluence.analysis.shares import example_shares, language_shares, self_shares
from xlinfluence.analysis.topk import topk_table


def _frames(seed: int, train_languages: tuple[str, ...] = ("en", "de")):
    """A random score matrix over train and en/de test examples."""
    train_langs = [lang for lang in train_languages for _ in range(12 // len(train_languages))]
    test_langs = ["en", "en", "de", "de"]
    train = pd.DataFrame({"id": [f"t{i}" for i in range(12)], "language": train_langs})
    test = pd.DataFrame({"id": [f"q{i}" for i in range(len(test_langs))], "language": test_langs})
    scores = {"total": torch.randn(len(test), 12, generator=torch.Generator().manual_seed(seed))}
    table = topk_table(scores, train, test, 4)
    per_example = example_shares(table, train_languages=list(train_languages))
    shares = share_intervals(
        language_shares(table, train_languages=list(train_languages)), per_example
    )
    return shares, self_shares(shares), per_example


def test_seeds_pools_and_draws():
    per_example = {f"seed-{s}": _frames(s)[2] for s in (1, 2, 3)}
    table = compare.seeds(per_example)
    assert table["test_language"].tolist() == ["en", "de"]
    assert (table["n_seeds"] == 3).all()
    assert (
        (table["ci_low"] <= table["self_share"]) & (table["self_share"] <= table["ci_high"])
    ).all()
    compare.seeds_figure(table).savefig(io.BytesIO(), format="png")


def test_zero_shot_lines_up_seen_and_heldout_sources():
    shares = {"all-seen": _frames(1)[0], "heldout-de": _frames(2, train_languages=["en"])[0]}
    accuracy = {"all-seen": {"de": 0.8}, "heldout-de": {"de": 0.5}}
    table = compare.zero_shot(shares, {"all-seen": "", "heldout-de": "de"}, accuracy)
    assert table["test_language"].tolist() == ["de", "de"]
    assert table["train_language"].tolist() == ["en", "de"]
    seen = shares["all-seen"].query("checkpoint == 'total' and kind == 'proponent'")
    seen = seen[seen["test_language"] == "de"].set_index("train_language")
    assert table["seen_share"].tolist() == seen.loc[["en", "de"], "share"].tolist()
    # held out: all of de's top-k comes from en, none from de (it has no training data)
    assert table["unseen_share"].tolist() == [1.0, 0.0]
    assert table.loc[1, ["unseen_ci_low", "unseen_ci_high"]].tolist() == [0.0, 0.0]
    assert (table["seen_ci_low"] <= table["seen_share"]).all()
    assert (table["seen_share"] <= table["seen_ci_high"]).all()
    assert table[["seen_accuracy", "unseen_accuracy"]].iloc[0].tolist() == [0.8, 0.5]
    compare.zero_shot_figure(table).savefig(io.BytesIO(), format="png")


def test_imbalance_tracks_the_first_language_share():
    shares = {"ratio-1": _frames(1)[0], "ratio-4": _frames(2)[0]}
    mass = {
        name: pd.DataFrame(
            {"train_language": ["en", "de", "en", "de"], "n_train_examples": [n, 6, n, 6]}
        )
        for name, n in (("ratio-1", 6), ("ratio-4", 24))
    }
    table = compare.imbalance(shares, {"ratio-1": 1.0, "ratio-4": 4.0}, "en", mass)
    assert table.set_index("ratio")["data_share"].to_dict() == {1.0: 0.5, 4.0: 0.8}
    assert (table["enrichment"] == table["share"] / table["data_share"]).all()
    assert set(table["ratio"]) == {1.0, 4.0}
    assert set(table["test_language"]) == {"en", "de"}
    assert table["share"].between(0, 1).all()
    assert ((table["ci_low"] <= table["share"]) & (table["share"] <= table["ci_high"])).all()
    compare.imbalance_figure(table).savefig(io.BytesIO(), format="png")
