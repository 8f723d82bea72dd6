"""User files in three formats, with a column map and string labels."""

import json

import pandas as pd
import pytest

from xlinfluence.data import load_splits
from xlinfluence.data.local import encode_labels
from xlinfluence.errors import DataError

LANGS = ["en", "de", "sw"]
SENTIMENT = ["neg", "pos", "neutral"]


def user_frame(n=20, langs=LANGS):
    """Parallel examples in the user's own column names."""
    return pd.DataFrame(
        [
            {
                "uid": f"{lang}{i:03d}",
                "lang": lang,
                "sentiment": SENTIMENT[i % 3],
                "group": f"g{i}",
                "sentence": f"{lang} sentence {i}",
            }
            for lang in langs
            for i in range(n)
        ]
    )


COLUMN_MAP = {
    "id": "uid",
    "language": "lang",
    "label": "sentiment",
    "pair_id": "group",
    "text": "sentence",
}


def write(frame, path):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, engine="pyarrow")
    return path


def load(path, **kw):
    args = dict(
        dataset="local",
        data_path=str(path),
        column_map=COLUMN_MAP,
        languages=["en", "de"],
        heldout_language="sw",
        train_counts={"en": 10, "de": 5},
        test_per_language=4,
    )
    args.update(kw)
    return load_splits(**args)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_single_file_with_column_map_and_string_labels(tmp_path, suffix):
    splits = load(write(user_frame(), tmp_path / f"data{suffix}"))
    assert splits.label_names == ["neg", "neutral", "pos"]  # sorted strings
    train, test = splits.train, splits.test
    assert train.language.value_counts().to_dict() == {"en": 10, "de": 5}
    assert list(test.language.unique()) == ["en", "de", "sw"]
    assert not set(train.pair_id) & set(test.pair_id)
    first = test.iloc[0]
    assert splits.label_names[first.label] == SENTIMENT[int(first.pair_id[1:]) % 3]
    assert first.id.startswith("en")


def test_same_selection_whatever_the_format(tmp_path):
    a = load(write(user_frame(), tmp_path / "data.jsonl"))
    b = load(write(user_frame(), tmp_path / "data.parquet"))
    pd.testing.assert_frame_equal(a.train, b.train)
    pd.testing.assert_frame_equal(a.test, b.test)


def test_folder_with_train_and_test_and_integer_labels(tmp_path):
    frame = user_frame().assign(
        sentiment=lambda f: f.sentiment.map({"neg": 0, "neutral": 1, "pos": 2})
    )
    write(frame.assign(group=lambda f: "train-" + f.group), tmp_path / "train.csv")
    write(frame.assign(group=lambda f: "test-" + f.group), tmp_path / "test.csv")
    splits = load(tmp_path)
    assert splits.label_names == ["0", "1", "2"]
    assert splits.train.pair_id.str.startswith("train-").all()
    assert splits.test.pair_id.str.startswith("test-").all()


def test_no_pair_id_splits_by_id_and_generates_ids(tmp_path):
    frame = user_frame().drop(columns=["group", "uid"])
    path = write(frame, tmp_path / "plain.csv")
    splits = load(path, column_map={"language": "lang", "label": "sentiment", "text": "sentence"})
    assert splits.train.pair_id.isna().all()
    assert splits.train.id.str.match(r"plain-\d+$").all()
    assert not set(splits.train.id) & set(splits.test.id)


def test_missing_column_after_mapping(tmp_path):
    path = write(user_frame(), tmp_path / "data.jsonl")
    with pytest.raises(DataError, match=r"missing column\(s\) \['text'\].*column_map"):
        load(path, column_map={k: v for k, v in COLUMN_MAP.items() if k != "text"})
    with pytest.raises(DataError, match=r"\{'text': 'body'\}.*file does not have"):
        load(path, column_map={**COLUMN_MAP, "text": "body"})


def test_unknown_language_lists_file_languages(tmp_path):
    path = write(user_frame(), tmp_path / "data.parquet")
    with pytest.raises(DataError, match=r"unknown language\(s\) \['fr'\]. Available: de, en, sw"):
        load(path, heldout_language="fr")


def test_bad_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"use one of \.jsonl, \.csv, \.parquet"):
        load(write(user_frame(), tmp_path / "data.parquet").rename(tmp_path / "data.pkl"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match=r"exactly one of train\.jsonl"):
        load(tmp_path / "folder")


def test_encode_labels():
    codes, names = encode_labels(pd.Series(["b", "a", "b"]), where="x")
    assert codes.tolist() == [1, 0, 1] and names == ["a", "b"]
    codes, names = encode_labels(pd.Series(["2", "0"]), where="x")  # CSV digits
    assert codes.tolist() == [2, 0] and names == ["0", "1", "2"]
    with pytest.raises(DataError, match="non-negative integers"):
        encode_labels(pd.Series([0.5, 1.0]), where="x")
    with pytest.raises(DataError, match="1 example"):
        encode_labels(pd.Series(["a", None]), where="x")
