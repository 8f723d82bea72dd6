"""Experiment comparisons: tables and figures from per-setting analysis tables."""

from __future__ import annotations

import io

import pandas as pd
import torch

from xlinfluence.analysis import compare
from xlinfluence.analysis.shares import example_shares, language_shares, self_shares
from xlinfluence.analysis.topk import topk_table


def _frames(seed: int, heldout: str | None = None):
    """A random score matrix over en/de train and en/de/(heldout) test examples."""
    train_langs = ["en"] * 6 + ["de"] * 6
    test_langs = ["en", "en", "de", "de"] + ([heldout] * 2 if heldout else [])
    train = pd.DataFrame({"id": [f"t{i}" for i in range(12)], "language": train_langs})
    test = pd.DataFrame({"id": [f"q{i}" for i in range(len(test_langs))], "language": test_langs})
    scores = {"total": torch.randn(len(test), 12, generator=torch.Generator().manual_seed(seed))}
    table = topk_table(scores, train, test, 4)
    shares = language_shares(table, train_languages=["en", "de"])
    return shares, self_shares(shares), example_shares(table, train_languages=["en", "de"])


def test_seeds_pools_and_draws():
    per_example = {f"seed-{s}": _frames(s)[2] for s in (1, 2, 3)}
    table = compare.seeds(per_example)
    assert table["test_language"].tolist() == ["en", "de"]
    assert (table["n_seeds"] == 3).all()
    assert (
        (table["ci_low"] <= table["self_share"]) & (table["self_share"] <= table["ci_high"])
    ).all()
    compare.comparison_figure(table, "seeds").savefig(io.BytesIO(), format="png")


def test_zero_shot_unseen_is_all_cross_lingual():
    own = {"all-seen": _frames(1)[1], "heldout-de": _frames(2)[1]}
    table = compare.zero_shot(own, {"all-seen": "", "heldout-de": "de"})
    assert table["test_language"].tolist() == ["de"]
    assert table["unseen_cross_share"].between(0, 1).all()
    compare.comparison_figure(table, "zero-shot").savefig(io.BytesIO(), format="png")


def test_imbalance_tracks_the_first_language_share():
    shares = {"ratio-1": _frames(1)[0], "ratio-4": _frames(2)[0]}
    table = compare.imbalance(shares, {"ratio-1": 1.0, "ratio-4": 4.0}, "en")
    assert set(table["ratio"]) == {1.0, 4.0}
    assert set(table["test_language"]) == {"en", "de"}
    assert table["share"].between(0, 1).all()
    compare.comparison_figure(table, "imbalance").savefig(io.BytesIO(), format="png")
