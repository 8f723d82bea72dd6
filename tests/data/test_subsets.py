"""Ground-truth retraining selections: random subsets and language removals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xlinfluence.data import subsets
from xlinfluence.errors import ConfigError, DataError


def _train(per_language=20, languages=("en", "de", "fr")):
    rows = []
    for lang in languages:
        for i in range(per_language):
            pair = f"p{i}" if lang != "fr" or i < per_language // 2 else None
            rows.append({"id": f"{lang}-{i}", "language": lang, "label": i % 3, "pair_id": pair})
    return pd.DataFrame(rows)


def test_spec_round_trips_and_refuses_nonsense():
    for text in ("subset:0.5:3", "subset:0.25:0:pairs", "language:de"):
        assert subsets.Selection.parse(text).spec == text
    for bad in ("subset:1.5:0", "subset:0.5", "language:", "subset:.0:1", "tracin:x"):
        with pytest.raises(ConfigError, match="remove="):
            subsets.Selection.parse(bad)


def test_subsets_are_stratified_by_language_and_repeatable():
    train = _train()
    selection = subsets.Selection.parse("subset:0.5:4")
    keep = subsets.kept_mask(selection, train, seed=1)
    assert train[keep].groupby("language").size().tolist() == [10, 10, 10]
    assert np.array_equal(keep, subsets.kept_mask(selection, train, seed=1))
    other = subsets.kept_mask(subsets.Selection.parse("subset:0.5:5"), train, seed=1)
    assert not np.array_equal(keep, other)  # the draw changes the subset


def test_pair_subsets_keep_whole_translation_groups():
    train = _train()
    keep = subsets.kept_mask(subsets.Selection.parse("subset:0.5:0:pairs"), train, seed=0)
    kept = train[keep]
    paired = train[train["pair_id"].notna()]
    for _, group in paired.groupby("pair_id"):
        flags = keep[group.index]
        assert flags.all() or not flags.any()  # a group is kept or dropped whole
    groups = train["pair_id"].fillna("row:" + train["id"]).nunique()
    assert kept["pair_id"].fillna("row:" + kept["id"]).nunique() == round(0.5 * groups)


def test_language_removal_drops_exactly_that_language():
    train = _train()
    keep = subsets.kept_mask(subsets.Selection.parse("language:de"), train, seed=0)
    assert set(train[keep]["language"]) == {"en", "fr"}
    assert (~keep).sum() == 20
    with pytest.raises(DataError, match="no training rows of 'ru'"):
        subsets.kept_mask(subsets.Selection.parse("language:ru"), train, seed=0)
    with pytest.raises(DataError, match="no training data"):
        subsets.kept_mask(subsets.Selection.parse("language:en"), _train(languages=("en",)), 0)


def test_label_subsets_keep_every_languages_label_proportions():
    train = _train(per_language=30)
    selection = subsets.Selection.parse("subset:0.5:2:labels")
    assert selection.spec == "subset:0.5:2:labels" and selection.by == "labels"
    keep = subsets.kept_mask(selection, train, seed=0)
    kept = train[keep].groupby(["language", "label"]).size()
    assert (kept == 5).all()  # half of every (language, label) cell of 10


def test_fractions_cut_the_named_languages_label_stratified_and_leave_the_rest():
    train = _train(per_language=40)
    selection = subsets.Selection.parse("fraction:0.25:en+fr:5")
    assert selection.spec == "fraction:0.25:en+fr:5" and selection.cut == ("en", "fr")
    keep = subsets.kept_mask(selection, train, seed=0)
    kept = train[keep]
    assert kept.groupby("language").size().to_dict() == {"de": 40, "en": 10, "fr": 10}
    # labels 0, 1, 2 hold 14, 13, 13 rows of a language: quotas 3.5, 3.25, 3.25 -> 4, 3, 3
    assert kept[kept["language"] == "en"].groupby("label").size().tolist() == [4, 3, 3]
    assert np.array_equal(keep, subsets.kept_mask(selection, train, seed=0))
    other = subsets.kept_mask(subsets.Selection.parse("fraction:0.25:en+fr:6"), train, seed=0)
    assert not np.array_equal(keep, other)  # a fresh draw per composition
    with pytest.raises(DataError, match=r"\['xx'\]"):
        subsets.kept_mask(subsets.Selection.parse("fraction:0.25:xx:0"), train, seed=0)
    with pytest.raises(ConfigError, match="cut twice"):
        subsets.Selection.parse("fraction:0.5:en+en:0")
