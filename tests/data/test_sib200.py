"""SIB-200 in the layout of its repository: the real data beside the checkout, and bad folders."""

from __future__ import annotations

import pytest

from xlinfluence.data import load_splits
from xlinfluence.data.sib200 import CATEGORIES
from xlinfluence.errors import DataError

from ..conftest import shared_data


def _load(root, languages, **kwargs):
    return load_splits(
        dataset="sib200",
        data_path=str(root),
        languages=languages,
        train_counts=dict.fromkeys(languages, 30),
        test_per_language=kwargs.pop("test_per_language", 10),
        seed=3,
        **kwargs,
    )


def test_real_sib200_is_parallel_and_labelled():
    root = shared_data("sib200", "data", "annotated")
    splits = _load(root, ["en", "de", "ru", "zh", "hi"])
    assert splits.label_names == list(CATEGORIES)
    test = splits.test
    by_lang = test.groupby("language")["pair_id"].apply(list)
    assert all(ids == by_lang["en"] for ids in by_lang)  # the same sentences in every language
    assert test.loc[test.language == "zh", "text"].str.contains(r"[\u4e00-\u9fff]").all()
    assert splits.train.label.between(0, len(CATEGORIES) - 1).all()
    assert not set(splits.train.pair_id) & set(test.pair_id)


def test_flores_and_short_codes_name_the_same_data():
    root = shared_data("sib200", "data", "annotated")
    short = _load(root, ["en", "ru"])
    flores = _load(root, ["eng_Latn", "rus_Cyrl"])
    assert short.test.text.tolist() == flores.test.text.tolist()
    assert set(flores.test.language) == {"eng_Latn", "rus_Cyrl"}


def test_zero_shot_language_is_tested_not_trained():
    root = shared_data("sib200", "data", "annotated")
    splits = _load(root, ["en", "de", "sw"], heldout_language="sw")
    assert "sw" not in set(splits.train.language) and "sw" in set(splits.test.language)


def _folder(tmp_path, lang="eng_Latn", header="index_id\tcategory\ttext", row="1\ttravel\tHi."):
    folder = tmp_path / lang
    folder.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text(f"{header}\n{row}\n")
    return tmp_path


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda p: p / "absent", r"data_path .* is not a folder"),
        (lambda p: _folder(p, lang="deu_Latn"), r"unknown language\(s\) \['en'\]"),
        (
            lambda p: _folder(p, header="id\tlabel\ttext"),
            r"missing column\(s\) \['index_id', 'category'\]",
        ),
        (lambda p: _folder(p, row="1\tcooking\tHi."), r"unknown categor.*'cooking'"),
    ],
)
def test_bad_folders_are_named(tmp_path, make, pattern):
    with pytest.raises(DataError, match=pattern):
        _load(make(tmp_path), ["en"], test_per_language=1)
