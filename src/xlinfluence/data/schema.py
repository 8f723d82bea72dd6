"""The one example schema every loader produces and every later step reads.

A dataset is a pandas DataFrame with these columns; row order is the order used in
every tensor downstream (scores are indexed by row position).
"""

from __future__ import annotations

import pandas as pd

from xlinfluence.errors import DataError

#: Required columns and their meaning.
ID = "id"  # unique string id of the example, stable across runs
LANGUAGE = "language"  # ISO-639 code, e.g. "de"
LABEL = "label"  # integer class index
PAIR_ID = "pair_id"  # links translations of the same content across languages; may be null
TEXT = "text"  # first text field
TEXT_PAIR = "text_pair"  # second text field for pair tasks (NLI, paraphrase); may be null

COLUMNS = (ID, LANGUAGE, LABEL, PAIR_ID, TEXT, TEXT_PAIR)


def validate(frame: pd.DataFrame, *, where: str) -> pd.DataFrame:
    """Check a frame has the schema; return it with canonical dtypes and column order."""
    missing = [c for c in (ID, LANGUAGE, LABEL, TEXT) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {missing}; found {list(frame.columns)}. "
            "Map your columns with column_map, e.g. 'text=premise,text_pair=hypothesis'."
        )
    frame = frame.copy()
    for optional in (PAIR_ID, TEXT_PAIR):
        if optional not in frame.columns:
            frame[optional] = None
    if frame[ID].duplicated().any():
        dup = frame.loc[frame[ID].duplicated(), ID].iloc[0]
        raise DataError(f"{where}: example id {dup!r} occurs more than once; ids must be unique.")
    if frame[TEXT].isna().any():
        raise DataError(f"{where}: {int(frame[TEXT].isna().sum())} example(s) have no text.")
    try:
        labels = frame[LABEL].astype("int64")
    except (TypeError, ValueError) as err:
        raise DataError(f"{where}: label column must hold integer class indices ({err}).") from err
    return pd.DataFrame(
        {
            ID: frame[ID].astype(str),
            LANGUAGE: frame[LANGUAGE].astype(str),
            LABEL: labels,
            PAIR_ID: frame[PAIR_ID].astype("string"),
            TEXT: frame[TEXT].astype(str),
            TEXT_PAIR: frame[TEXT_PAIR].astype("string"),
        }
    ).reset_index(drop=True)
