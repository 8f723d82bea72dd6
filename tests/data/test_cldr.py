"""The built-in CLDR corpus: real, parallel, five topics, fast."""

import time

import pytest

from xlinfluence.data import cldr
from xlinfluence.errors import DataError

REQUIRED = "en de fr es it nl pt ru pl tr ar hi zh ja ko fi sw vi id el".split()


def test_every_required_language_has_a_shared_pool_with_five_labels():
    pools = cldr.load(REQUIRED)
    frame = pools.train
    assert pools.test is None
    assert pools.label_names == ["territory", "language", "currency", "script", "unit"]
    assert sorted(frame.language.unique()) == sorted(REQUIRED)
    assert set(frame.label) == {0, 1, 2, 3, 4}
    sizes = frame.groupby("language").size()
    assert sizes.nunique() == 1 and sizes.iloc[0] > 500  # same entities in every language


def test_ids_pairs_and_texts():
    frame = cldr.load(["de", "ja"]).train
    row = frame[frame.pair_id == "territory:DE"].set_index("language")
    assert row.loc["de", "text"] == "Deutschland"
    assert row.loc["ja", "id"] == "cldr-ja-territory-DE"
    assert row.loc["ja", "text"] != "Deutschland"
    codes = frame.pair_id.str.split(":", n=1).str[1].str.lower()
    assert not (frame.text.str.lower() == codes).any()
    # a text determines its label: no name twice within a language
    assert not frame.duplicated(["language", "text"]).any()


def test_fast_for_five_languages():
    cldr.names.cache_clear()
    start = time.perf_counter()
    cldr.load(["en", "de", "fr", "ru", "zh"])
    assert time.perf_counter() - start < 1.0


def test_unknown_language_lists_available():
    with pytest.raises(DataError, match=r"unknown language 'xx'.*Available: .*\bde\b"):
        cldr.load(["en", "xx"])
