import math

import numpy as np
import pandas as pd
import pytest
import torch

from xlinfluence.analysis.shares import (
    example_shares,
    language_shares,
    self_shares,
    share_matrix,
)
from xlinfluence.analysis.topk import topk_table
from xlinfluence.errors import ConfigError, DataError

from .cases import TRAIN_LANGS

SHARE_COLUMNS = [
    "checkpoint",
    "kind",
    "test_language",
    "train_language",
    "share",
    "count",
    "n_test",
]


@pytest.fixture
def shares(table):
    return language_shares(table, TRAIN_LANGS)


def test_language_shares_columns_and_completeness(shares):
    assert list(shares.columns) == SHARE_COLUMNS
    # 3 checkpoints x 2 kinds x 3 test languages x 4 training languages, zeros included
    assert len(shares) == 3 * 2 * 3 * 4
    assert list(pd.unique(shares["checkpoint"])) == ["epoch-1", "epoch-2", "total"]
    assert list(pd.unique(shares["kind"])) == ["proponent", "opponent"]
    assert list(pd.unique(shares["test_language"])) == ["de", "en", "sw"]  # test order
    assert list(pd.unique(shares["train_language"])) == TRAIN_LANGS  # train order
    sums = shares.groupby(["checkpoint", "kind", "test_language"])["share"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0)


def test_proponent_share_matrix_exact(shares):
    matrix = share_matrix(shares, "epoch-1", "proponent")
    expected = pd.DataFrame(
        [
            [0.5, 0.375, 0.125, 0.0],  # de: (en .25+.75, de .5+.25, fr .25+0) / 2
            [0.625, 0.125, 0.25, 0.0],  # en: (1+.25, 0+.25, 0+.5) / 2
            [0.5, 0.25, 0.25, 0.0],
        ],  # sw: one example
        index=pd.Index(["de", "en", "sw"], name="test_language"),
        columns=pd.Index(TRAIN_LANGS, name="train_language"),
    )
    pd.testing.assert_frame_equal(matrix, expected, check_dtype=False)


def test_counts_and_n_test(shares):
    rows = shares[(shares["checkpoint"] == "epoch-1") & (shares["kind"] == "proponent")]
    counts = rows.set_index(["test_language", "train_language"])["count"]
    assert counts["de"].tolist() == [4, 3, 1, 0]
    assert counts["en"].tolist() == [5, 1, 2, 0]
    assert rows.groupby("test_language", sort=False)["n_test"].first().tolist() == [2, 2, 1]


def test_opponent_matrix_has_zero_columns(shares):
    matrix = share_matrix(shares, "total", "opponent")
    assert matrix["fr"].tolist() == [0.5] * 3 and matrix["en"].tolist() == [0.5] * 3
    assert matrix["de"].tolist() == [0.0] * 3 and matrix["it"].tolist() == [0.0] * 3


def test_without_train_languages_only_seen_languages_in_train_order(table):
    shares = language_shares(table)
    assert list(pd.unique(shares["train_language"])) == ["en", "de", "fr"]


def test_unknown_training_language_is_an_error(table):
    with pytest.raises(DataError, match="not in train_languages"):
        language_shares(table, ["en", "de"])


def test_share_matrix_unknown_checkpoint(shares):
    with pytest.raises(ConfigError, match="epoch-9"):
        share_matrix(shares, "epoch-9", "proponent")


def test_example_shares_rows(table):
    per = example_shares(table, TRAIN_LANGS)
    assert list(per.columns) == [
        "checkpoint",
        "kind",
        "test_index",
        "test_id",
        "test_language",
        *TRAIN_LANGS,
    ]
    np.testing.assert_allclose(per[TRAIN_LANGS].sum(axis=1), 1.0)
    row = per[(per["checkpoint"] == "epoch-1") & (per["kind"] == "proponent")].iloc[1]
    assert row["test_index"] == 1 and row[TRAIN_LANGS].tolist() == [0.75, 0.25, 0.0, 0.0]


def test_self_shares(shares):
    out = self_shares(shares)
    assert list(out.columns) == [
        "checkpoint",
        "kind",
        "test_language",
        "self_share",
        "cross_share",
        "zero_shot",
    ]
    assert len(out) == 3 * 2 * 3
    pro = out[(out["checkpoint"] == "epoch-1") & (out["kind"] == "proponent")]
    pro = pro.set_index("test_language")
    assert pro.loc["de", "self_share"] == 0.375 and pro.loc["de", "cross_share"] == 0.625
    assert pro.loc["en", "self_share"] == 0.625 and pro.loc["en", "cross_share"] == 0.375
    assert math.isnan(pro.loc["sw", "self_share"]) and pro.loc["sw", "cross_share"] == 1.0
    assert pro["zero_shot"].tolist() == [False, False, True]
    late = out[(out["checkpoint"] == "epoch-2") & (out["kind"] == "proponent")]
    assert late["self_share"].tolist()[:2] == [1.0, 1.0]
    assert late["cross_share"].tolist() == [0.0, 0.0, 1.0]


def test_shares_match_a_per_example_loop():
    """Random scores: the vectorised shares equal a plain loop over test examples."""
    gen = torch.Generator().manual_seed(0)
    langs = ["a", "b", "c", "d"]
    n_train, n_test, k = 60, 24, 7
    train_lang = [langs[i % 4] for i in range(n_train)][::-1]
    test_lang = [langs[(3 * j) % 4] for j in range(n_test)]
    train = pd.DataFrame({"id": [f"t{i}" for i in range(n_train)], "language": train_lang})
    test = pd.DataFrame({"id": [f"s{j}" for j in range(n_test)], "language": test_lang})
    scores = torch.randn(n_test, n_train, generator=gen)
    shares = language_shares(topk_table({"c": scores}, train, test, k), langs)
    for kind, largest in (("proponent", True), ("opponent", False)):
        idx = torch.topk(scores, k, dim=1, largest=largest).indices
        for test_language in langs:
            rows = [j for j in range(n_test) if test_lang[j] == test_language]
            for train_language in langs:
                fractions = [
                    sum(train_lang[i] == train_language for i in idx[j].tolist()) / k for j in rows
                ]
                got = shares[
                    (shares["kind"] == kind)
                    & (shares["test_language"] == test_language)
                    & (shares["train_language"] == train_language)
                ]
                assert got["share"].item() == pytest.approx(sum(fractions) / len(rows))
                assert got["count"].item() == round(sum(fractions) * k)
