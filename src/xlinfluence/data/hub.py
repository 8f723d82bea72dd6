"""XNLI, PAWS-X and MARC through `datasets`, from the hub or from a saved copy on disk.

One config per language; the train pool comes from the "train" split and the test pool
from "test" (or "validation" where a copy has no test split). XNLI and PAWS-X splits are
row-aligned translations across languages, so pair_id = f"{task}:{split}:{row}" links a
row to its translations. MARC reviews are not translations: pair_id is null.

MARC copies and their columns (override with column_map):
- mteb/AmazonReviewsClassification (default; parquet, no script): text, label 0-4.
- mteb/amazon_reviews_multi: id, text, label 0-4, label_text. It ships a loading script,
  which this project never runs (no trust_remote_code); save a copy with save_to_disk and
  pass data_path instead.
- the original amazon_reviews_multi: review_id, review_title, review_body, stars 1-5;
  use column_map "text=review_body,label=stars,id=review_id": a label column named
  "stars" is shifted to 0-4.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from xlinfluence.data import schema
from xlinfluence.data.select import Pools, check_languages
from xlinfluence.data.source import Source, folders
from xlinfluence.errors import DataError

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True)
class HubTask:
    """Where a task lives and how its columns map onto the schema."""

    hub_name: str
    languages: tuple[str, ...]
    columns: Mapping[str, str]  # schema name -> dataset column
    label_names: tuple[str, ...]
    parallel: bool
    optional: Mapping[str, str] = field(default_factory=dict)  # used when present


TASKS: dict[str, HubTask] = {
    "xnli": HubTask(
        hub_name="facebook/xnli",
        languages=tuple("ar bg de el en es fr hi ru sw th tr ur vi zh".split()),
        columns={schema.TEXT: "premise", schema.TEXT_PAIR: "hypothesis", schema.LABEL: "label"},
        label_names=("entailment", "neutral", "contradiction"),
        parallel=True,
    ),
    "paws-x": HubTask(
        hub_name="google-research-datasets/paws-x",
        languages=tuple("de en es fr ja ko zh".split()),
        columns={schema.TEXT: "sentence1", schema.TEXT_PAIR: "sentence2", schema.LABEL: "label"},
        label_names=("not paraphrase", "paraphrase"),
        parallel=True,
    ),
    "marc": HubTask(
        hub_name="mteb/AmazonReviewsClassification",
        languages=tuple("de en es fr ja zh".split()),
        columns={schema.TEXT: "text", schema.LABEL: "label"},
        label_names=("1 star", "2 stars", "3 stars", "4 stars", "5 stars"),
        parallel=False,
        optional={schema.ID: "id"},
    ),
}

_TEST_SPLITS = ("test", "validation")


def _open(task: str, spec: HubTask, lang: str, data_path: str) -> datasets.DatasetDict:
    import datasets  # seconds to import: only when a hub task is read, not with the registry

    if data_path:
        path = Path(data_path) / lang
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as err:
            raise DataError(
                f"{task}: no saved copy for {lang!r} at {path} ({err}). Save one with "
                f"load_dataset({spec.hub_name!r}, {lang!r}).save_to_disk('{path}')."
            ) from err
        if not isinstance(loaded, datasets.DatasetDict):
            raise DataError(
                f"{task}: {path} holds a single Dataset; save the whole DatasetDict "
                "(splits train and test or validation) with save_to_disk."
            )
        return loaded
    try:
        return datasets.load_dataset(spec.hub_name, lang)
    except Exception as err:  # network, cache and hub errors all end here
        raise DataError(
            f"{task}: could not load {spec.hub_name!r} config {lang!r} ({type(err).__name__}: "
            f"{err}). Without hub access, save a copy with save_to_disk on a connected "
            "machine and pass its folder as data_path (one sub-folder per language)."
        ) from err


def _frame(
    task: str,
    spec: HubTask,
    lang: str,
    split: str,
    ds: datasets.Dataset,
    columns: Mapping[str, str],
) -> pd.DataFrame:
    where = f"{task} {lang} {split}"
    missing = {k: v for k, v in columns.items() if v not in ds.column_names}
    if missing:
        raise DataError(
            f"{where}: column(s) {missing} (schema name: dataset column) not found; the dataset "
            f"has {ds.column_names}. Fix with column_map, e.g. 'text=<column>'."
        )
    raw = ds.select_columns(sorted(set(columns.values()))).to_pandas()
    frame = pd.DataFrame({name: raw[col] for name, col in columns.items()})
    rows = pd.RangeIndex(len(frame)).astype(str)
    if schema.ID in frame:
        frame[schema.ID] = f"{task}-{lang}-{split}-" + frame[schema.ID].astype(str)
    else:
        frame[schema.ID] = f"{task}-{lang}-{split}-" + rows
    frame[schema.PAIR_ID] = f"{task}:{split}:" + rows if spec.parallel else None
    frame[schema.LANGUAGE] = lang
    if not pd.api.types.is_integer_dtype(frame[schema.LABEL]):
        raise DataError(
            f"{where}: label column {columns[schema.LABEL]!r} holds {frame[schema.LABEL].dtype}, "
            "not integer class indices. Map an integer label column with column_map."
        )
    if columns[schema.LABEL] == "stars":  # original MARC: 1-5 stars -> 0-4
        frame[schema.LABEL] = frame[schema.LABEL] - 1
    frame = frame[frame[schema.LABEL] >= 0]  # hub convention: -1 marks an unlabelled row
    bad = frame[schema.LABEL] >= len(spec.label_names)
    if bad.any():
        raise DataError(
            f"{where}: label {int(frame.loc[bad, schema.LABEL].iloc[0])} is outside 0.."
            f"{len(spec.label_names) - 1} ({', '.join(spec.label_names)}). Map the right "
            "column with column_map 'label=<column>'."
        )
    return schema.validate(frame, where=where)


def load(
    task: str,
    languages: Sequence[str],
    *,
    data_path: str = "",
    column_map: Mapping[str, str] | None = None,
) -> Pools:
    """Train and test pools of `languages` for one hub task."""
    spec = TASKS[task]
    settable = {schema.ID, schema.LABEL, schema.TEXT, schema.TEXT_PAIR}
    fixed = sorted(set(column_map or {}) - settable)
    if fixed:
        raise DataError(
            f"{task}: column_map cannot set {fixed} for a hub task (language is the config, "
            f"pair_id the row); map only {sorted(settable)}."
        )
    if data_path:
        root = Path(data_path)
        if not root.is_dir():
            raise DataError(
                f"{task}: data_path {data_path!r} is not a folder; it should hold one "
                "save_to_disk folder per language."
            )
        available = [p.name for p in root.iterdir() if p.is_dir()]
    else:
        available = list(spec.languages)
    check_languages(languages, available, where=f"{task} ({data_path or spec.hub_name})")
    trains, tests = [], []
    for lang in languages:
        splits = _open(task, spec, lang, data_path)
        names = list(splits.keys())
        test_split = next((s for s in _TEST_SPLITS if s in splits), None)
        if "train" not in splits or test_split is None:
            raise DataError(
                f"{task} {lang}: splits {names}; need 'train' and 'test' (or 'validation')."
            )
        for split, out in (("train", trains), (test_split, tests)):
            ds = splits[split]
            columns = dict(spec.columns)
            columns.update({k: v for k, v in spec.optional.items() if v in ds.column_names})
            columns.update(column_map or {})
            out.append(_frame(task, spec, lang, split, ds, columns))
    return Pools(pd.concat(trains), pd.concat(tests), list(spec.label_names))


def _languages(task: str, data_path: str) -> set[str] | None:
    """A saved copy's language folders, else the task's languages on the hub."""
    return folders(data_path) if data_path else set(TASKS[task].languages)


SOURCES = tuple(
    Source(
        task,
        functools.partial(load, task),
        origin=f"https://huggingface.co/datasets/{spec.hub_name}",
        languages=functools.partial(_languages, task),
    )
    for task, spec in TASKS.items()
)
