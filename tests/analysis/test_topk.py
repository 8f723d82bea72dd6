import pandas as pd
import pytest
import torch

from xlinfluence.analysis.topk import TOPK_COLUMNS, top_k, topk_table
from xlinfluence.errors import ArtifactError, ConfigError

from .cases import OPPONENTS, PROPONENTS, K, make_scores


def test_top_k_orders_proponents_and_opponents():
    scores = make_scores(PROPONENTS["epoch-1"], OPPONENTS)
    pro_idx, pro_s, opp_idx, opp_s = top_k(scores, K)
    assert pro_idx.shape == opp_idx.shape == (5, K)
    assert pro_idx.tolist() == PROPONENTS["epoch-1"]
    assert pro_s[0].tolist() == [10.0, 9.0, 8.0, 7.0]
    assert opp_idx.tolist() == [OPPONENTS] * 5
    assert opp_s[0].tolist() == [-10.0, -9.0, -8.0, -7.0]  # most negative first


@pytest.mark.parametrize("k", [0, -3])
def test_top_k_rejects_non_positive_k(k):
    with pytest.raises(ConfigError, match="positive integer"):
        top_k(torch.zeros(2, 5), k)


def test_top_k_rejects_k_above_train_size():
    with pytest.raises(ConfigError, match="top_k=500 exceeds the 320 training examples; lower"):
        top_k(torch.zeros(2, 320), 500)


def test_top_k_rejects_non_matrix():
    with pytest.raises(ArtifactError, match="2-D"):
        top_k(torch.zeros(5), 1)


def test_topk_table_columns_and_order(table, test_frame):
    assert tuple(table.columns) == TOPK_COLUMNS
    assert len(table) == 3 * 5 * 2 * K
    assert list(pd.unique(table["checkpoint"])) == ["epoch-1", "epoch-2", "total"]
    first = table.iloc[: 2 * K]
    assert (first["checkpoint"] == "epoch-1").all() and (first["test_index"] == 0).all()
    assert first["kind"].tolist() == ["proponent"] * K + ["opponent"] * K
    assert first["rank"].tolist() == list(range(K)) * 2
    assert first["train_index"].tolist() == PROPONENTS["epoch-1"][0] + OPPONENTS
    assert first["train_language"].tolist() == ["de", "de", "en", "fr", "fr", "fr", "en", "en"]
    assert first["train_id"].iloc[0] == "train-4"
    assert (first["test_id"] == "test-0").all() and (first["test_language"] == "de").all()
    assert first["score"].tolist() == [10, 9, 8, 7, -10, -9, -8, -7]
    # test_index runs over the test set in order within each checkpoint
    one = table[(table["checkpoint"] == "epoch-2") & (table["kind"] == "proponent")]
    assert one["test_index"].tolist() == [j for j in range(5) for _ in range(K)]
    assert one.groupby("test_index")["test_language"].first().tolist() == list(
        test_frame["language"]
    )


def test_topk_table_roundtrips_parquet(table, tmp_path):
    path = tmp_path / "topk.parquet"
    table.to_parquet(path)
    back = pd.read_parquet(path)
    assert tuple(back.columns) == TOPK_COLUMNS
    assert back["train_index"].tolist() == table["train_index"].tolist()
    assert back["score"].tolist() == table["score"].tolist()


def test_topk_table_rejects_mismatched_shapes(train, test_frame):
    with pytest.raises(ArtifactError, match="different runs"):
        topk_table({"epoch-1": torch.zeros(5, 17)}, train, test_frame, K)


def test_topk_table_rejects_empty(train, test_frame):
    with pytest.raises(ConfigError, match="at least one"):
        topk_table({}, train, test_frame, K)


def test_streaming_topk_equals_topk_of_the_full_matrix():
    from xlinfluence.analysis.topk import StreamingTopK, top_k

    torch.manual_seed(0)
    scores = torch.randn(7, 53)
    stream = StreamingTopK(7, 5)
    rows_a, rows_b = torch.arange(0, 4), torch.arange(4, 7)
    for start in range(0, 53, 10):  # column blocks, rows in two test chunks
        cols = torch.arange(start, min(start + 10, 53))
        stream.update(scores[rows_a][:, cols], rows_a, cols)
        stream.update(scores[rows_b][:, cols], rows_b, cols)
    for got, want in zip(stream.result(), top_k(scores, 5), strict=True):
        assert torch.equal(got, want)


def test_streaming_topk_refuses_k_larger_than_the_columns_seen():
    from xlinfluence.analysis.topk import StreamingTopK

    stream = StreamingTopK(2, 4)
    stream.update(torch.zeros(2, 3), torch.arange(2), torch.arange(3))
    with pytest.raises(ConfigError, match="top_k=4"):
        stream.result()
