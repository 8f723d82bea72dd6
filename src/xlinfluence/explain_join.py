"""The join behind `xlinfluence explain` and the analyze step's report: manifests, ranked
training rows (from score matrices or a top-k table) and predictions made readable.

Pure functions of frames: they read no run. The field definitions (`translation_of`
included) are explain.py's module doc.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xlinfluence import artifacts
from xlinfluence.analysis import topk as topk_columns
from xlinfluence.data import schema

PROPONENTS = "proponents"
OPPONENTS = "opponents"
KIND_OF = {PROPONENTS: "proponent", OPPONENTS: "opponent"}  # the topk table's `kind` values

Ranked = dict[str, tuple[list[int], list[float]]]  # {"proponents"/"opponents": (rows, scores)}


def join(
    train: pd.DataFrame, test: pd.DataFrame, row: int, ranked: Ranked, prediction: int | None
) -> dict:
    """{"test": {...}, "proponents": [...], "opponents": [...]}: test row `row` of the test
    manifest with its prediction, and each ranked training row of the train manifest with
    its score and `translation_of` (module doc)."""
    example_test = test.iloc[row]
    language = example_test[schema.LANGUAGE]
    own = {}  # pair_id -> id of the strongest own-language proponent with it
    for i in ranked[PROPONENTS][0]:
        example = train.iloc[i]
        pair = example[schema.PAIR_ID]
        if example[schema.LANGUAGE] == language and not pd.isna(pair):
            own.setdefault(pair, example[schema.ID])
    out = {
        "test": {
            "id": example_test[schema.ID],
            "text": example_test[schema.TEXT],
            "language": language,
            "label": int(example_test[schema.LABEL]),
            "prediction": prediction,
        }
    }
    for key, (indices, scores) in ranked.items():
        rows = []
        for i, score in zip(indices, scores, strict=True):
            example = train.iloc[i]
            pair = example[schema.PAIR_ID]
            cross = example[schema.LANGUAGE] != language
            rows.append(
                {
                    "id": example[schema.ID],
                    "text": example[schema.TEXT],
                    "language": example[schema.LANGUAGE],
                    "label": int(example[schema.LABEL]),
                    "score": float(score),
                    "translation_of": own.get(pair) if cross and not pd.isna(pair) else None,
                }
            )
        out[key] = rows
    return out


def ranked_from_topk(rows: pd.DataFrame, top: int) -> Ranked:
    """One test example's rows of a top-k table (one checkpoint) as ranked training rows:
    rank < `top`, strongest first."""
    c = topk_columns
    out = {}
    for key, kind in KIND_OF.items():
        kept = rows[(rows[c.KIND] == kind) & (rows[c.RANK] < top)].sort_values(c.RANK)
        out[key] = (kept[c.TRAIN_INDEX].astype(int).tolist(), kept[c.SCORE].tolist())
    return out


def strongest_rows(sums: list[tuple[int, float]], cases: int) -> list[int]:
    """The `cases` test rows of (row, summed top proponent score) with the largest sums,
    largest first (ties: manifest order)."""
    return [row for _, row in sorted((-float(total), row) for row, total in sums)[:cases]]


def examples_from_topk(
    train: pd.DataFrame,
    test: pd.DataFrame,
    topk: pd.DataFrame,
    *,
    checkpoint: str = artifacts.TOTAL,
    top: int = 5,
    cases: int = 3,
    predictions: pd.Series | None = None,
) -> dict[str, list[dict]]:
    """Per test language (test order): its `cases` strongest test examples (largest summed
    top-`top` proponent score at `checkpoint`, as `explain --language`), each joined with
    its top-`top` proponents and opponents from the top-k table; `predictions` is the
    predicted class per test row (the model of `checkpoint`), or None."""
    c = topk_columns
    mine = topk[topk[c.CHECKPOINT] == checkpoint]
    strong = mine[(mine[c.KIND] == KIND_OF[PROPONENTS]) & (mine[c.RANK] < top)]
    sums = (  # summed in rank order, as explain sums its ranked scores
        strong.sort_values(c.RANK, kind="stable")
        .groupby(c.TEST_INDEX)[c.SCORE]
        .agg(lambda scores: sum(scores.tolist()))
    )
    languages = test[schema.LANGUAGE].to_numpy()
    out = {}
    for language in pd.unique(languages):
        rows = [int(i) for i in np.flatnonzero(languages == language) if i in sums.index]
        chosen = strongest_rows([(row, sums[row]) for row in rows], cases)
        out[str(language)] = [
            join(train, test, row, ranked_from_topk(mine[mine[c.TEST_INDEX] == row], top),
                 None if predictions is None else int(predictions.iloc[row]))
            for row in chosen
        ]  # fmt: skip
    return out


def text_pairs(*frames: pd.DataFrame) -> dict[str, str]:
    """Second text fields by id (pair tasks) of the given manifests."""
    joined = pd.concat(frames)
    if schema.TEXT_PAIR not in joined:
        return {}
    kept = joined[joined[schema.TEXT_PAIR].notna()]
    return dict(zip(kept[schema.ID], kept[schema.TEXT_PAIR].astype(str), strict=True))
