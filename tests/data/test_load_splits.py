"""The public entry point on the built-in corpus: experiment shapes and input errors."""

import pandas as pd
import pytest

from xlinfluence.data import load_splits, schema
from xlinfluence.errors import DataError

LANGS = ["en", "de", "fr", "ru"]


def load(**kw):
    args = dict(
        dataset="cldr",
        languages=LANGS,
        train_counts={lang: 50 for lang in LANGS},
        test_per_language=10,
        seed=0,
    )
    args.update(kw)
    return load_splits(**args)


def test_schema_and_order():
    splits = load()
    for frame in (splits.train, splits.test):
        pd.testing.assert_frame_equal(frame, schema.validate(frame, where="x"))
        assert list(frame.language.unique()) == LANGS
    assert len(splits.label_names) == 5


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b, c = load(seed=7), load(seed=7), load(seed=8)
    pd.testing.assert_frame_equal(a.train, b.train)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert set(a.test.pair_id) != set(c.test.pair_id)
    assert set(a.train.pair_id) != set(c.train.pair_id)


def test_parallel_test_sets_disjoint_from_train():
    splits = load()
    test = splits.test
    per_lang = [test.loc[test.language == lang, "pair_id"].tolist() for lang in LANGS]
    assert all(p == per_lang[0] for p in per_lang)
    assert not set(splits.train.pair_id) & set(test.pair_id)


def test_heldout_language_is_tested_never_trained():
    splits = load(
        languages=["en", "de", "fr"],
        heldout_language="ru",
        train_counts={"en": 50, "de": 50, "fr": 50, "ru": 50},
    )  # ru's count ignored
    assert "ru" not in set(splits.train.language)
    assert list(splits.test.language.unique()) == ["en", "de", "fr", "ru"]
    # listed and held out: same sets of languages
    same = load(heldout_language="ru", train_counts={"en": 50, "de": 50, "fr": 50})
    assert "ru" not in set(same.train.language)
    pd.testing.assert_frame_equal(same.test, splits.test)


def test_imbalance_counts_honoured_and_parallel():
    splits = load(train_counts={"en": 200, "de": 40, "fr": 40, "ru": 20})
    train = splits.train
    assert train.language.value_counts().to_dict() == {"en": 200, "de": 40, "fr": 40, "ru": 20}
    en = train.loc[train.language == "en", "pair_id"].tolist()
    assert train.loc[train.language == "ru", "pair_id"].tolist() == en[:20]


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"dataset": "imdb"}, r"unknown dataset 'imdb'; choose one of cldr, sib200, xnli"),
        (
            {"languages": ["en", "qq"], "train_counts": {"en": 5, "qq": 5}},
            r"unknown language 'qq'.*Available:",
        ),
        (
            {"train_counts": {lang: 10**6 for lang in LANGS}},
            r"only \d+ training example\(s\) in 'en'.*Lower train_counts\['en'\] to at most \d+",
        ),
        ({"test_per_language": 10**6}, r"only \d+ pair_id\(s\).*Lower test_per_language"),
        (
            {"languages": ["en"], "heldout_language": "en"},
            r"empty selection: every language is held out",
        ),
        ({"languages": []}, r"empty selection: no languages"),
        ({"test_per_language": 0}, r"empty selection: test_per_language is 0"),
        (
            {"train_counts": {"en": 0, "de": 1, "fr": 1, "ru": 1}},
            r"empty selection: train_counts\['en'\] is 0",
        ),
        ({"train_counts": {"en": 5}}, r"no count for training language\(s\) \['de', 'fr', 'ru'\]"),
        (
            {"train_counts": {"en": 5, "de": 5, "fr": 5, "ru": 5, "sw": 5}},
            r"\['sw'\], which are not training",
        ),
        ({"languages": ["en", "de", "en"]}, r"\['en'\] listed more than once"),
        ({"column_map": {"txt": "a"}}, r"column_map keys \['txt'\] are not schema columns"),
        ({"data_path": "x.csv"}, r"cldr is built in"),
    ],
)
def test_errors_name_the_problem_and_the_fix(kwargs, pattern):
    with pytest.raises(DataError, match=pattern):
        load(**kwargs)
