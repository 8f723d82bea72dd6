"""The token-overlap baseline against a plain-Python tf-idf cosine over the same token ids."""

from __future__ import annotations

import math
from collections import Counter

import torch

from xlinfluence.attribution.token_overlap import TokenOverlapScorer

PAD = 1


def _batch(rows: list[list[int]], start: int) -> dict[str, torch.Tensor]:
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), PAD)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "index": torch.arange(start, start + len(rows)),
    }


def _reference(test: list[list[int]], train: list[list[int]]) -> list[list[float]]:
    n = len(train)
    df = Counter(piece for row in train for piece in set(row))

    def vector(row: list[int]) -> dict[int, float]:
        weights = {p: c * math.log((1 + n) / (1 + df.get(p, 0))) for p, c in Counter(row).items()}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {p: w / norm for p, w in weights.items()} if norm else {}

    train_vectors = [vector(row) for row in train]
    return [
        [sum(w * other.get(p, 0.0) for p, w in vector(row).items()) for other in train_vectors]
        for row in test
    ]


def test_scores_equal_a_plain_tfidf_cosine_blockwise():
    gen = torch.Generator().manual_seed(0)

    def sentence() -> list[int]:  # <s> ... </s> as 0 ... 2, pieces from 3 to 40
        length = int(torch.randint(2, 12, (1,), generator=gen))
        return [0, *torch.randint(3, 40, (length,), generator=gen).tolist(), 2]

    train = [sentence() for _ in range(23)]
    test = [sentence() for _ in range(7)] + [[0, 2], [0, 99, 99, 5, 2]]  # specials; unseen
    train_batches = [_batch(train[a:b], a) for a, b in ((0, 8), (8, 16), (16, 23))]
    with TokenOverlapScorer(lambda: iter(train_batches), torch.device("cpu")) as scorer:
        cache = scorer.test_cache([_batch(test[:4], 0), _batch(test[4:], 4)], with_self=True)
        scores, self_scores = scorer.train_block(train_batches[1:], cache, with_self=True)
        first, _ = scorer.train_block(train_batches[:1], cache)
    want = torch.tensor(_reference(test, train), dtype=torch.float32)
    torch.testing.assert_close(torch.cat([first, scores]).T, want, rtol=0, atol=1e-6)
    assert want[-2].abs().max() == 0  # specials weigh nothing: in every training example
    assert cache.self_scores.tolist() == [1.0] * 7 + [0.0, 1.0]
    assert self_scores.tolist() == [1.0] * 15
    # a piece no training example has counts in the norm and matches nothing
    assert 0 < want[-1].max() < 1
