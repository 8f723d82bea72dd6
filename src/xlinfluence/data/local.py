"""User files: JSONL, CSV or Parquet, with a column mapping onto the schema.

data_path is either one file holding every example (the test set is then carved out by
pair_id, or by id where there is none, see select.py) or a folder with train.<ext> and
test.<ext>. String labels become indices in sorted order; integer labels keep their values.
Files are read with pandas (pyarrow for Parquet); nothing is ever unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from xlinfluence.data import schema
from xlinfluence.data.select import Pools, check_languages
from xlinfluence.data.source import Source
from xlinfluence.errors import DataError

SUFFIXES = (".jsonl", ".csv", ".parquet")


def _read(path: Path) -> pd.DataFrame:
    """The file as a frame; a file that is not what its suffix says names itself (and the
    line, where the reader tells)."""
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    try:
        if path.suffix == ".csv":
            # Everything as text, "" as missing: "NA" is a language code and a valid text.
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        if path.suffix == ".parquet":
            return pd.read_parquet(path, engine="pyarrow")
    except (ValueError, OSError, UnicodeDecodeError) as err:  # pandas' and pyarrow's errors
        said = " ".join(str(err).split())
        raise DataError(f"local: cannot read {path} as {path.suffix[1:]} ({said}).") from err
    raise DataError(f"local: cannot read {path}: use one of {', '.join(SUFFIXES)}.")


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line; the first bad line is named."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"local: {path} is not UTF-8 text ({err}).") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"local: {path} line {number} is not JSON ({err.msg} at column {err.colno}); "
                "each line must be one JSON object."
            ) from err
        if not isinstance(row, dict):
            raise DataError(
                f"local: {path} line {number} holds a JSON {type(row).__name__}, not an "
                'object; each line must be one JSON object such as {"text": ..., ...}.'
            )
        rows.append(row)
    # Values as written: ids such as "007" and string labels stay strings.
    return pd.DataFrame(rows)


def _split_files(folder: Path) -> dict[str, Path]:
    found = {}
    for split in ("train", "test"):
        candidates = [folder / f"{split}{suffix}" for suffix in SUFFIXES]
        existing = [p for p in candidates if p.is_file()]
        if len(existing) != 1:
            raise DataError(
                f"local: {folder} should hold exactly one of "
                f"{', '.join(p.name for p in candidates)}; found {len(existing)}. Or pass a "
                "single file as data_path to have the test set carved out of it."
            )
        found[split] = existing[0]
    return found


def _map_columns(frame: pd.DataFrame, column_map: Mapping[str, str], where: str) -> pd.DataFrame:
    """Schema-named columns taken from the file's columns (unmapped names are used as is)."""
    absent = {k: v for k, v in column_map.items() if v not in frame.columns}
    if absent:
        raise DataError(
            f"{where}: column_map names column(s) {absent} (schema name: file column) that the "
            f"file does not have; its columns are {list(frame.columns)}. Fix column_map."
        )
    out = pd.DataFrame(index=frame.index)
    for name in schema.COLUMNS:
        source = column_map.get(name, name)
        if source in frame.columns:
            out[name] = frame[source]
    if schema.ID not in out:  # a stable id from the file name and row
        out[schema.ID] = f"{Path(where).stem}-" + pd.Series(
            range(len(out)), index=out.index
        ).astype(str)
    return out


def encode_labels(labels: pd.Series, *, where: str) -> tuple[pd.Series, list[str]]:
    """Integer labels (or strings of digits, as CSV gives them) keep their values, named
    by their str; other labels become indices into their sorted distinct values."""
    if labels.isna().any():
        rows = [
            f"{i[0]} row {i[-1] + 1}" if isinstance(i, tuple) else f"row {i + 1}"
            for i in labels.index[labels.isna()][:5]
        ]
        raise DataError(
            f"{where}: {int(labels.isna().sum())} example(s) have no label ({', '.join(rows)}, "
            "counting data rows from 1); give every example a label."
        )
    if pd.api.types.is_bool_dtype(labels):
        numeric = labels.astype("int64")
    elif pd.api.types.is_numeric_dtype(labels):
        numeric = labels
    else:
        numeric = pd.to_numeric(labels, errors="coerce")  # NaN where not a number
    if numeric.notna().all():
        if (numeric % 1 != 0).any() or (numeric < 0).any():
            raise DataError(
                f"{where}: numeric labels must be non-negative integers (class indices); "
                "or write them as strings to have them indexed in sorted order."
            )
        numeric = numeric.astype("int64")
        return numeric, [str(i) for i in range(int(numeric.max()) + 1)]
    names = sorted(labels.astype(str).unique())
    return labels.astype(str).map({n: i for i, n in enumerate(names)}).astype("int64"), names


def load(
    languages: Sequence[str], *, data_path: str, column_map: Mapping[str, str] | None = None
) -> Pools:
    """Pools from a file (one pool) or a folder with train and test files (two pools)."""
    path = Path(data_path)
    if not data_path or not path.exists():
        raise DataError(
            f"local: data_path {data_path!r} does not exist; give a .jsonl/.csv/.parquet file "
            "or a folder with train.<ext> and test.<ext>."
        )
    files = _split_files(path) if path.is_dir() else {"all": path}
    frames = {split: _map_columns(_read(f), column_map or {}, str(f)) for split, f in files.items()}
    for split, frame in frames.items():
        if any(c not in frame for c in (schema.LANGUAGE, schema.LABEL, schema.TEXT)):
            schema.validate(frame, where=str(files[split]))  # raises, naming what is missing
    joint = pd.concat(frames.values(), keys=list(frames))
    labels, label_names = encode_labels(joint[schema.LABEL], where=data_path)
    for split, frame in frames.items():
        frame[schema.LABEL] = labels.loc[split].to_numpy()
        frames[split] = schema.validate(frame, where=str(files[split]))
    available = pd.concat(frames.values())[schema.LANGUAGE].unique()
    check_languages(languages, list(available), where=f"local ({data_path})")
    if "all" in frames:
        return Pools(frames["all"], None, label_names)
    return Pools(frames["train"], frames["test"], label_names)


SOURCE = Source(
    "local",
    load,
    origin="",  # always a data_path
    languages=lambda data_path: None,  # known once its files are read
    needs_data_path=True,
    why="dataset=local reads your files",
    fix="give a .jsonl/.csv/.parquet file or a folder with train and test files",
)
