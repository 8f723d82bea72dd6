"""The planted-structure dataset, and the influence analysis recovering what was planted."""

from __future__ import annotations

import pandas as pd
import pytest

from xlinfluence import modeling
from xlinfluence.data import schema
from xlinfluence.data.planted import ISOLATED, LANGUAGES, SOURCE, TRANSLATION, planted_splits
from xlinfluence.errors import ConfigError

SETTING = dict(n_train_per_language=64, n_test_per_language=8)


def _by_language(frame: pd.DataFrame, lang: str) -> pd.DataFrame:
    return frame[frame[schema.LANGUAGE] == lang].reset_index(drop=True)


def test_schema_counts_and_determinism():
    splits = planted_splits(**SETTING, seed=5)
    for frame, n in ((splits.train, 64), (splits.test, 8)):
        assert list(frame.columns) == list(schema.COLUMNS)
        pd.testing.assert_frame_equal(frame, schema.validate(frame, where="test"))
        assert frame[schema.LANGUAGE].value_counts().to_dict() == dict.fromkeys(LANGUAGES, n)
        assert list(pd.unique(frame[schema.LANGUAGE])) == list(LANGUAGES)
    again = planted_splits(**SETTING, seed=5)
    pd.testing.assert_frame_equal(splits.train, again.train)
    pd.testing.assert_frame_equal(splits.test, again.test)
    assert not splits.train.equals(planted_splits(**SETTING, seed=6).train)


def test_translation_is_a_word_by_word_bijection_with_shared_pair_ids():
    splits = planted_splits(**SETTING, seed=1)
    mapping: dict[str, str] = {}
    for frame in (splits.train, splits.test):
        src, tra = _by_language(frame, SOURCE), _by_language(frame, TRANSLATION)
        assert src[schema.PAIR_ID].tolist() == tra[schema.PAIR_ID].tolist()
        assert src[schema.LABEL].tolist() == tra[schema.LABEL].tolist()
        for a, b in zip(src[schema.TEXT], tra[schema.TEXT], strict=True):
            assert len(a) == len(b)  # one character per word
            for x, y in zip(a, b, strict=True):
                assert mapping.setdefault(x, y) == y  # a function ...
    assert len(set(mapping.values())) == len(mapping)  # ... and one-to-one
    train_pairs = set(splits.train[schema.PAIR_ID].dropna())
    assert train_pairs.isdisjoint(set(splits.test[schema.PAIR_ID].dropna()))
    for frame in (splits.train, splits.test):
        assert _by_language(frame, ISOLATED)[schema.PAIR_ID].isna().all()
        assert not frame.duplicated([schema.LANGUAGE, schema.TEXT]).any()


def test_languages_share_no_token_and_iso_no_label():
    splits = planted_splits(**SETTING, seed=2)
    tokenizer = modeling.train_tokenizer(splits.train[schema.TEXT].tolist())
    special = set(tokenizer.all_special_ids)
    tokens, labels = {}, {}
    for lang in LANGUAGES:
        rows = _by_language(pd.concat([splits.train, splits.test]), lang)
        tokens[lang] = {
            t for text in rows[schema.TEXT] for t in tokenizer(text)["input_ids"]
        } - special
        labels[lang] = set(rows[schema.LABEL])
    for a, b in ((SOURCE, TRANSLATION), (SOURCE, ISOLATED), (TRANSLATION, ISOLATED)):
        assert tokens[a].isdisjoint(tokens[b]), (a, b)
    assert labels[SOURCE] == labels[TRANSLATION] == {0, 1, 2}
    assert labels[ISOLATED] == {3, 4, 5}
    assert splits.label_names == [f"group-{g}" for g in range(3)] + [
        f"iso-group-{g}" for g in range(3)
    ]
    # a translation is tokenised like its original: same piece lengths, same positions
    src, tra = _by_language(splits.train, SOURCE), _by_language(splits.train, TRANSLATION)
    for a, b in zip(src[schema.TEXT], tra[schema.TEXT], strict=True):
        assert [len(p) for p in tokenizer.tokenize(a)] == [len(p) for p in tokenizer.tokenize(b)]


def test_shared_labels_option():
    splits = planted_splits(8, 2, seed=0, isolated_labels=False)
    assert set(_by_language(splits.train, ISOLATED)[schema.LABEL]) <= {0, 1, 2}
    assert splits.label_names == ["group-0", "group-1", "group-2"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_train_per_language=0), "n_train_per_language=0"),
        (dict(n_labels=1), "n_labels=1"),
        (dict(min_words=5, max_words=4), "max_words=4"),
        (dict(n_fillers=2000), "exceeds 1000"),
        (dict(n_fillers=1, min_words=1, max_words=1, n_articles=1), "distinct sentences"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    args = {**SETTING, **kwargs}
    with pytest.raises(ConfigError, match=message):
        planted_splits(**args)
