"""Train and test examples for a multilingual fine-tuning experiment.

load_splits is the one entry point: it reads the dataset's pools through its `Source`
(`DATASETS`, the registry below: one module per dataset, source.py the interface) and
selects per-language train and test sets deterministically for a seed, parallel across
languages where the source is (see select.py).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xlinfluence.data import cldr, hub, local, schema, sib200
from xlinfluence.data.select import select
from xlinfluence.data.source import Source
from xlinfluence.errors import DataError

#: Every dataset the `dataset` parameter takes, in the order its help lists them.
DATASETS: dict[str, Source] = {
    source.name: source for source in (cldr.SOURCE, sib200.SOURCE, *hub.SOURCES, local.SOURCE)
}


@dataclass(frozen=True)
class Splits:
    """Selected examples; row order is the order used everywhere downstream."""

    train: pd.DataFrame  # schema-valid, by language (given order), then shuffled pair order
    test: pd.DataFrame
    label_names: list[str]  # label index -> name


def _languages(
    languages: Sequence[str], heldout_language: str | None
) -> tuple[list[str], list[str]]:
    """(train languages, test languages): the held-out language is tested, never trained on."""
    languages = list(languages)
    if not languages:
        raise DataError("empty selection: no languages given; name at least one, e.g. 'en,de'.")
    twice = sorted({lang for lang in languages if languages.count(lang) > 1})
    if twice:
        raise DataError(f"language(s) {twice} listed more than once; list each language once.")
    train = [lang for lang in languages if lang != heldout_language]
    test = languages + (
        [heldout_language] if heldout_language and heldout_language not in languages else []
    )
    if not train:
        raise DataError(
            f"empty selection: every language is held out ({heldout_language!r}); "
            "add at least one training language."
        )
    return train, test


def _counts(
    train_counts: Mapping[str, int], train: list[str], heldout: str | None
) -> dict[str, int]:
    """Per-language training counts; a count for the held-out language is ignored, so the
    same counts serve the seen and the zero-shot run."""
    missing = [lang for lang in train if lang not in train_counts]
    extra = [lang for lang in train_counts if lang not in train and lang != heldout]
    if missing or extra:
        raise DataError(
            "train_counts: "
            + (f"no count for training language(s) {missing}; " if missing else "")
            + (f"count(s) for {extra}, which are not training languages; " if extra else "")
            + f"give one count for each of {train}."
        )
    counts = {lang: train_counts[lang] for lang in train}  # numpy ints welcome
    for lang, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise DataError(
                f"empty selection: train_counts[{lang!r}] is {n!r}; ask for at least 1 example "
                "(to leave a language out of training, make it the heldout_language)."
            )
    return counts


def available_languages(dataset: str, data_path: str = "") -> set[str] | None:
    """The languages a source has, where that is known without reading its examples."""
    return DATASETS[dataset].languages(data_path)


def source_of(dataset: str, data_path: str = "") -> str:
    """Where a dataset's examples come from, as a URL or path (recorded with the manifests)."""
    return str(Path(data_path).resolve()) if data_path else DATASETS[dataset].origin


def load_splits(
    *,
    dataset: str,
    data_path: str = "",
    column_map: dict[str, str] | None = None,
    languages: Sequence[str],
    train_counts: Mapping[str, int],
    test_per_language: int,
    heldout_language: str | None = None,
    seed: int = 0,
    train_content: str = "parallel",
) -> Splits:
    """Train and test examples of `languages` (plus the zero-shot `heldout_language`).

    dataset: "cldr" (built in), "sib200" (hub, or the SIB-200 repository's layout under
    data_path), "xnli", "paws-x", "marc" (hub, or saved copies under data_path), or
    "local" (data_path is a file or a folder with train and test files).
    train_counts: examples per training language; test_per_language: per test language.
    train_content: "parallel" (translations of the same sentences where the source has
    them) or "disjoint" (each language its own sentences, label-stratified; select.py).
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    train_langs, test_langs = _languages(languages, heldout_language or None)
    counts = _counts(train_counts, train_langs, heldout_language)
    n_test = test_per_language
    if isinstance(n_test, bool) or not isinstance(n_test, numbers.Integral) or n_test < 1:
        raise DataError(
            f"empty selection: test_per_language is {test_per_language!r}; ask for at least 1."
        )
    unknown = sorted(set(column_map or {}) - set(schema.COLUMNS))
    if unknown:
        raise DataError(
            f"column_map keys {unknown} are not schema columns; use {list(schema.COLUMNS)}."
        )
    source = DATASETS[dataset]
    if refused := source.refusal(data_path, column_map):
        name, value, why, fix = refused
        raise DataError(f"{name}={value!r}: {why}; {fix}.")
    pools = source.pools(test_langs, data_path, column_map)
    train, test = select(
        pools,
        train_languages=train_langs,
        test_languages=test_langs,
        train_counts=counts,
        test_per_language=test_per_language,
        seed=seed,
        where=f"{dataset} ({data_path})" if source.needs_data_path else dataset,
        train_content=train_content,
    )
    return Splits(train=train, test=test, label_names=list(pools.label_names))


def splits_of(config) -> Splits:
    """The selection a TrainConfig (or MainConfig) names: what its run tests on and trains
    on before any removal. The train step, run reuse (the data digest) and study import
    (re-reading a bundle's texts) all select through here."""
    return load_splits(
        dataset=config.dataset,
        data_path=config.data_path,
        column_map=config.columns,
        languages=config.language_codes,
        train_counts=config.train_counts,
        test_per_language=config.test_per_language,
        heldout_language=config.heldout or None,
        seed=config.seed,
        train_content=config.train_content,
    )


__all__ = ["DATASETS", "Splits", "available_languages", "load_splits", "source_of", "splits_of"]
