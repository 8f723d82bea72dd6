"""A hand-built influence result whose top-k composition is known exactly.

Training set (train order en, de, fr, it): 4 en, 4 de, 4 fr examples that are translations
of each other (pair ids p0..p3), 2 "it" examples that are never in anyone's top-k, and
2 more fr and 2 more en without pair id that serve as everyone's opponents.
Test set (test order de, de, en, en, sw): "sw" is absent from training (zero-shot).
Each test example's proponents get scores 10, 9, 8, 7 (rank 0..3), its opponents
-10..-7, everything else a small distinct positive filler, so top-4 is unambiguous.
"""

from __future__ import annotations

import pandas as pd
import torch

K = 4
TRAIN_LANGS = ["en", "de", "fr", "it"]

# train index: en 0-3, de 4-7, fr 8-11 (pair ids p0-p3), it 12-13, en 14-15, fr 16-17
PROPONENTS = {
    "epoch-1": [[4, 5, 0, 8], [6, 1, 2, 3], [0, 1, 2, 3], [0, 9, 10, 4], [0, 4, 8, 1]],
    "epoch-2": [[4, 5, 6, 7], [4, 5, 6, 7], [0, 1, 2, 3], [0, 1, 2, 3], [8, 9, 10, 11]],
}
PROPONENTS["total"] = PROPONENTS["epoch-1"]
OPPONENTS = [16, 17, 14, 15]  # fr, fr, en, en for every test example
N_TRAIN = 18


def make_train(pair_ids: bool = True) -> pd.DataFrame:
    langs = ["en"] * 4 + ["de"] * 4 + ["fr"] * 4 + ["it"] * 2 + ["en"] * 2 + ["fr"] * 2
    pairs = [f"p{i % 4}" for i in range(12)] + ["q0", "q1"] + [None] * 4
    return pd.DataFrame(
        {
            "id": [f"train-{i}" for i in range(N_TRAIN)],
            "language": langs,
            "label": [0] * N_TRAIN,
            "pair_id": pd.Series(pairs if pair_ids else [None] * N_TRAIN, dtype="string"),
            "text": [f"text {i}" for i in range(N_TRAIN)],
            "text_pair": pd.Series([None] * N_TRAIN, dtype="string"),
        }
    )


def make_test() -> pd.DataFrame:
    langs = ["de", "de", "en", "en", "sw"]
    return pd.DataFrame(
        {
            "id": [f"test-{j}" for j in range(5)],
            "language": langs,
            "label": [1] * 5,
            "pair_id": pd.Series([None] * 5, dtype="string"),
            "text": [f"test text {j}" for j in range(5)],
            "text_pair": pd.Series([None] * 5, dtype="string"),
        }
    )


def make_scores(proponents: list[list[int]], opponents: list[int], n_train: int = N_TRAIN):
    n_test = len(proponents)
    scores = 0.001 * torch.arange(1, n_train + 1, dtype=torch.float32).repeat(n_test, 1)
    for j, pro in enumerate(proponents):
        scores[j, pro] = torch.tensor([10.0, 9.0, 8.0, 7.0])
        scores[j, opponents] = torch.tensor([-10.0, -9.0, -8.0, -7.0])
    return scores  # (n_test, n_train)
