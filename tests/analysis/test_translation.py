import math

import pandas as pd
import pytest

from xlinfluence.analysis.translation import (
    translation_share,
    translation_share_per_example,
)

from .cases import make_train


def test_per_example_translation_share(table, train):
    per = translation_share_per_example(table, train)
    assert list(per.columns) == [
        "checkpoint",
        "test_index",
        "test_id",
        "test_language",
        "n_own_proponents",
        "n_cross_proponents",
        "n_reinforcing",
        "translation_share",
    ]
    first = per[per["checkpoint"] == "epoch-1"].set_index("test_index")
    # test 0 (de): own de p0, p1; cross en p0, fr p0 -> both translations
    assert first.loc[0, ["n_own_proponents", "n_cross_proponents", "n_reinforcing"]].tolist() == [
        2,
        2,
        2,
    ]
    assert first.loc[0, "translation_share"] == 1.0
    # test 1 (de): own de p2; cross en p1, en p2, en p3 -> 1 of 3
    assert first.loc[1, "translation_share"] == pytest.approx(1 / 3)
    # test 2 (en): all own-language -> no cross-lingual proponents -> NaN
    assert first.loc[2, "n_cross_proponents"] == 0
    assert math.isnan(first.loc[2, "translation_share"])
    # test 3 (en): own en p0; cross fr p1, fr p2 (complementary), de p0 (reinforcing)
    assert first.loc[3, "translation_share"] == pytest.approx(1 / 3)
    # test 4 (sw, zero-shot): no own-language proponent, so nothing can be reinforcing
    assert first.loc[4, "n_own_proponents"] == 0 and first.loc[4, "translation_share"] == 0.0


def test_aggregated_translation_share(table, train):
    agg = translation_share(table, train)
    assert list(agg.columns) == [
        "checkpoint",
        "test_language",
        "translation_share",
        "n_examples",
        "n_cross_proponents",
        "n_reinforcing",
    ]
    assert list(pd.unique(agg["checkpoint"])) == ["epoch-1", "epoch-2", "total"]
    first = agg[agg["checkpoint"] == "epoch-1"].set_index("test_language")
    assert list(first.index) == ["de", "en", "sw"]
    assert first.loc["de", "translation_share"] == pytest.approx((1 + 1 / 3) / 2)
    assert first.loc["de", ["n_examples", "n_cross_proponents", "n_reinforcing"]].tolist() == [
        2,
        5,
        3,
    ]
    assert first.loc["en", "translation_share"] == pytest.approx(1 / 3)  # NaN skipped
    assert first.loc["en", "n_examples"] == 1
    late = agg[agg["checkpoint"] == "epoch-2"].set_index("test_language")
    assert math.isnan(late.loc["de", "translation_share"]) and late.loc["de", "n_examples"] == 0


def test_no_pair_ids_gives_nan(table):
    agg = translation_share(table, make_train(pair_ids=False))
    assert agg["translation_share"].isna().all()
    assert (agg["n_examples"] == 0).all()


def test_translation_influence_counts_translations_with_positive_scores():
    """2 train languages, parallel by pair_id; the test example is in 'de'."""
    import torch

    from xlinfluence.analysis.topk import topk_table
    from xlinfluence.analysis.translation import translation_influence

    train = pd.DataFrame({
        "id": ["e0", "e1", "e2", "d0", "d1", "d2"],
        "language": ["en", "en", "en", "de", "de", "de"],
        "label": 0, "pair_id": ["p0", "p1", None, "p0", "p1", "p2"],
        "text": "x", "text_pair": None,
    })  # fmt: skip
    test = pd.DataFrame({"id": ["t"], "language": ["de"], "label": 0, "pair_id": ["q"],
                         "text": "x", "text_pair": None})  # fmt: skip
    # top-3 proponents: e0, e1, e2 (all English). e0's German translation d0 helps (+),
    # e1's translation d1 hurts (-), e2 has no translation.
    scores = {"total": torch.tensor([[9.0, 8.0, 7.0, 0.5, -0.5, 0.1]])}
    table = topk_table(scores, train, test, 3)
    out = translation_influence(table, train, scores)
    assert out.loc[0, "n_cross_with_translation"] == 2
    assert out.loc[0, "translation_influential_share"] == 0.5
