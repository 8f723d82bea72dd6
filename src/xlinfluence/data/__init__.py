"""Train and test examples for a multilingual fine-tuning experiment.

load_splits is the one entry point: it picks the source (built-in CLDR corpus, a hub task,
or user files), and selects per-language train and test sets deterministically for a seed,
parallel across languages where the source is (see select.py).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xlinfluence.config import DATASETS
from xlinfluence.data import schema
from xlinfluence.data.select import Pools, select
from xlinfluence.errors import DataError


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


def _pools(
    dataset: str, languages: list[str], data_path: str, column_map: Mapping[str, str] | None
) -> Pools:
    if dataset == "cldr":
        if data_path or column_map:
            raise DataError(
                "cldr is built in: it takes no data_path or column_map. Use dataset='local' "
                "for your own files."
            )
        from xlinfluence.data import cldr

        return cldr.load(languages)
    if dataset == "local":
        from xlinfluence.data import local

        return local.load(languages, data_path=data_path, column_map=column_map)
    if dataset == "sib200":
        from xlinfluence.data import sib200

        return sib200.load(languages, data_path=data_path, column_map=column_map)
    from xlinfluence.data import hub  # imports `datasets`, which is slow: only when needed

    return hub.load(dataset, languages, data_path=data_path, column_map=column_map)


def available_languages(dataset: str, data_path: str = "") -> set[str] | None:
    """The languages a source has, where that is known without reading its examples."""
    folders = (
        {p.name for p in Path(data_path).iterdir() if p.is_dir()}
        if data_path and Path(data_path).is_dir()
        else None
    )
    if dataset == "cldr":
        import babel.localedata

        return set(babel.localedata.locale_identifiers())
    if dataset == "sib200":
        from xlinfluence.data.sib200 import SHORT_CODES

        if folders is None:
            return None
        return folders | {short for short, code in SHORT_CODES.items() if code in folders}
    if dataset in ("xnli", "paws-x", "marc"):
        from xlinfluence.data.hub import TASKS

        return folders if data_path else set(TASKS[dataset].languages)
    return None  # local files: known once read


def source_of(dataset: str, data_path: str = "") -> str:
    """Where a dataset's examples come from, as a URL or path (recorded with the manifests)."""
    if data_path:
        return str(Path(data_path).resolve())
    if dataset == "cldr":
        return "https://cldr.unicode.org"
    if dataset == "sib200":
        from xlinfluence.data.sib200 import HUB_NAME
    else:
        from xlinfluence.data.hub import TASKS

        HUB_NAME = TASKS[dataset].hub_name  # noqa: N806
    return f"https://huggingface.co/datasets/{HUB_NAME}"


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
    pools = _pools(dataset, test_langs, data_path, column_map)
    train, test = select(
        pools,
        train_languages=train_langs,
        test_languages=test_langs,
        train_counts=counts,
        test_per_language=test_per_language,
        seed=seed,
        where=dataset if dataset != "local" else f"local ({data_path})",
        train_content=train_content,
    )
    return Splits(train=train, test=test, label_names=list(pools.label_names))


def splits_of(config) -> Splits:
    """The selection a TrainConfig (or MainConfig) names: what its run tests on and trains
    on before any removal. The train step, run reuse (the data digest) and study import
    (re-reading a bundle's texts) all select through here."""
    from xlinfluence.config import train_counts
    from xlinfluence.data.params import parse_column_map, parse_languages

    return load_splits(
        dataset=config.dataset,
        data_path=config.data_path,
        column_map=parse_column_map(config.column_map),
        languages=parse_languages(config.languages),
        train_counts=train_counts(config),
        test_per_language=config.test_per_language,
        heldout_language=config.heldout_language.strip() or None,
        seed=config.seed,
        train_content=config.train_content,
    )


__all__ = ["DATASETS", "Splits", "available_languages", "load_splits", "source_of", "splits_of"]
