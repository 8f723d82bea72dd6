"""Hub tasks on small saved-to-disk copies of the same shape (no network)."""

import datasets
import pytest

from xlinfluence.data import hub, load_splits
from xlinfluence.errors import DataError


def save(root, lang, splits):
    datasets.DatasetDict(
        {name: datasets.Dataset.from_dict(cols) for name, cols in splits.items()}
    ).save_to_disk(str(root / lang))


def xnli_split(lang, n, split):
    return {
        "premise": [f"{lang} {split} premise {i}" for i in range(n)],
        "hypothesis": [f"{lang} {split} hypothesis {i}" for i in range(n)],
        "label": [i % 3 for i in range(n)],
    }


@pytest.fixture(scope="module")
def xnli_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("xnli")
    for lang in ("en", "de", "fr"):
        save(
            root,
            lang,
            {
                "train": xnli_split(lang, 40, "train"),
                "validation": xnli_split(lang, 8, "validation"),
                "test": xnli_split(lang, 12, "test"),
            },
        )
    return str(root)


def test_xnli_copy_is_parallel_by_row(xnli_path):
    splits = load_splits(
        dataset="xnli",
        data_path=xnli_path,
        languages=["en", "de"],
        heldout_language="fr",
        train_counts={"en": 20, "de": 10},
        test_per_language=5,
        seed=0,
    )
    train, test = splits.train, splits.test
    assert splits.label_names == ["entailment", "neutral", "contradiction"]
    assert train.pair_id.str.startswith("xnli:train:").all()
    assert test.pair_id.str.startswith("xnli:test:").all()
    by_lang = [test.loc[test.language == lang, "pair_id"].tolist() for lang in ("en", "de", "fr")]
    assert by_lang[0] == by_lang[1] == by_lang[2]
    # the same row is the same example in every language
    row = test.iloc[0]
    assert row.text == f"en test premise {row.pair_id.rsplit(':', 1)[1]}"
    assert row.text_pair.startswith("en test hypothesis")
    assert "fr" not in set(train.language)
    de = train.loc[train.language == "de", "pair_id"].tolist()
    assert de == train.loc[train.language == "en", "pair_id"].tolist()[:10]
    assert train.id.iloc[0].startswith("xnli-en-train-")


def test_unknown_language_lists_saved_folders(xnli_path):
    with pytest.raises(DataError, match=r"unknown language\(s\) \['sw'\].*Available: de, en, fr"):
        load_splits(
            dataset="xnli",
            data_path=xnli_path,
            languages=["en", "sw"],
            train_counts={"en": 5, "sw": 5},
            test_per_language=2,
        )


def test_missing_column_after_mapping(xnli_path):
    with pytest.raises(DataError, match=r"\{'text': 'sentence'\}.*not found.*column_map"):
        load_splits(
            dataset="xnli",
            data_path=xnli_path,
            column_map={"text": "sentence"},
            languages=["en"],
            train_counts={"en": 5},
            test_per_language=2,
        )


def test_pawsx_falls_back_to_validation(tmp_path):
    for lang in ("en", "ja"):
        split = {
            "id": list(range(10)),
            "sentence1": [f"{lang} a{i}" for i in range(10)],
            "sentence2": [f"{lang} b{i}" for i in range(10)],
            "label": [i % 2 for i in range(10)],
        }
        save(tmp_path, lang, {"train": split, "validation": split})
    splits = load_splits(
        dataset="paws-x",
        data_path=str(tmp_path),
        languages=["en", "ja"],
        train_counts={"en": 4, "ja": 4},
        test_per_language=3,
    )
    assert splits.test.pair_id.str.startswith("paws-x:validation:").all()
    assert splits.label_names == ["not paraphrase", "paraphrase"]


def marc_split(lang, n):
    return {
        "id": [f"{lang}_{i:07d}" for i in range(n)],
        "text": [f"{lang} review {i}" for i in range(n)],
        "label": [i % 5 for i in range(n)],
        "label_text": [str(i % 5) for i in range(n)],
    }


def test_marc_copy_is_not_parallel(tmp_path):
    for lang in ("en", "de"):
        save(tmp_path, lang, {"train": marc_split(lang, 30), "test": marc_split(lang, 10)})
    splits = load_splits(
        dataset="marc",
        data_path=str(tmp_path),
        languages=["en", "de"],
        train_counts={"en": 20, "de": 5},
        test_per_language=4,
        seed=1,
    )
    assert splits.train.pair_id.isna().all() and splits.test.pair_id.isna().all()
    assert splits.test.language.value_counts().to_dict() == {"en": 4, "de": 4}
    assert splits.train.id.str.match(r"marc-(en|de)-train-(en|de)_\d{7}$").all()
    assert len(splits.label_names) == 5


def test_original_marc_columns_with_stars(tmp_path):
    split = {
        "review_id": [f"r{i}" for i in range(12)],
        "review_body": [f"body {i}" for i in range(12)],
        "stars": [1 + i % 5 for i in range(12)],
    }
    save(tmp_path, "fr", {"train": split, "test": split})
    splits = load_splits(
        dataset="marc",
        data_path=str(tmp_path),
        languages=["fr"],
        column_map={"text": "review_body", "label": "stars", "id": "review_id"},
        train_counts={"fr": 6},
        test_per_language=3,
    )
    assert set(splits.train.label) <= {0, 1, 2, 3, 4}
    assert splits.train.id.str.startswith("marc-fr-train-r").all()


def test_hub_is_asked_by_config_without_remote_code(monkeypatch):
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        lang = args[1]
        return datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_dict(xnli_split(lang, 10, "train")),
                "test": datasets.Dataset.from_dict(xnli_split(lang, 5, "test")),
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub.load("xnli", ["en", "de"])
    assert calls == [(("facebook/xnli", "en"), {}), (("facebook/xnli", "de"), {})]


def test_hub_failure_says_how_to_work_offline(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"could not load 'facebook/xnli' config 'en'.*data_path"):
        hub.load("xnli", ["en"])


def test_unknown_hub_language_lists_task_languages():
    with pytest.raises(DataError, match=r"\['xx'\].*Available: ar, bg, de"):
        hub.load("xnli", ["xx"])
