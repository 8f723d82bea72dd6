"""Choosing train and test examples from a loader's pools, the same way for every source.

Loaders hand over schema-valid pools: either one pool (split here into test and train by
pair_id, or by id where there is no pair_id) or a train pool and a test pool. Selection is
deterministic for a seed and does not depend on the pools' row order.

Parallel sources (translations share a pair_id) get parallel test sets: the same pair_ids
in every test language that shares pair_ids with another, so a test example's translations
are scored too (reinforcing vs complementary influence). A language whose pair_ids no
other language holds is sampled on its own (partially parallel data). Training sets are
made as parallel as possible: pair_ids present in every training language come first, in
one shuffled order, so a language with a smaller count takes a prefix of a larger one's.
With train_content="disjoint" they are the opposite: each training language takes keys no
other training language has, label-stratified within the language, so every language
brings content of its own and removing one removes something the others cannot replace
(the language datamodel's ground truth needs that; on parallel sets it is flat by design).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from xlinfluence.data import schema
from xlinfluence.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pools:
    """What a loader returns: candidate examples and the names of the label indices.

    test is None when the source is one pool; the test set is then carved out of `train`
    and its pair_ids (or ids) are kept out of training.
    """

    train: pd.DataFrame
    test: pd.DataFrame | None
    label_names: list[str]


def check_languages(requested: Sequence[str], available: Sequence[str], *, where: str) -> None:
    """Raise if a requested language is not in the source, listing what is."""
    unknown = [lang for lang in requested if lang not in set(available)]
    if unknown:
        raise DataError(
            f"{where}: unknown language(s) {unknown}. Available: {', '.join(sorted(available))}. "
            "Choose languages from that list."
        )


def rank(keys: Sequence[str], seed: int) -> np.ndarray:
    """A seeded pseudo-random rank per key (keyed BLAKE2b, stable across runs and machines).

    Hashing each key, rather than permuting a list, makes a key's place independent of
    which other keys are in the pool, so adding a language or a row moves little.
    """
    salt = str(seed).encode()
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8, key=salt).digest(), "big")
            for k in keys
        ),
        dtype=np.uint64,
        count=len(keys),
    )


class _Candidates:
    """Row positions of a pool in some languages, with their keys (pair_id, else id).

    Works on arrays, not frames: an XNLI train pool has 392k rows per language, and only
    the chosen rows are ever copied.
    """

    def __init__(self, frame: pd.DataFrame, languages: Sequence[str], drop: np.ndarray | None):
        language = frame[schema.LANGUAGE].to_numpy(dtype=object)
        has_pair = frame[schema.PAIR_ID].notna().to_numpy()
        key = np.where(
            has_pair,
            frame[schema.PAIR_ID].to_numpy(dtype=object),
            frame[schema.ID].to_numpy(dtype=object),
        )
        keep = np.isin(language, list(languages))
        if drop is not None:
            keep &= ~drop
        # A language holds each pair_id once; a duplicate would make a test set unparallel.
        keep &= ~pd.DataFrame({"l": language, "k": key}).duplicated().to_numpy()
        self.rows = np.flatnonzero(keep)
        self.language = language[keep]
        self.key = key[keep]
        self.paired = has_pair[keep]  # key is a pair_id (else the example's own id)

    def of(self, lang: str) -> np.ndarray:
        return self.language == lang


def _order(keys: np.ndarray, seed: int, coverage: np.ndarray | None = None) -> np.ndarray:
    """Position of each distinct key in the seeded shuffled order, per element of `keys`.

    With coverage (per distinct key, in factorize order), keys shared by more languages
    come first, each group in the shuffled order.
    """
    codes, uniques = pd.factorize(keys)
    ranks = rank([str(u) for u in uniques], seed)
    primary = np.zeros(len(uniques)) if coverage is None else -coverage
    order = np.lexsort((uniques.astype(str), ranks, primary))
    position = np.empty(len(uniques), dtype=np.int64)
    position[order] = np.arange(len(uniques))
    return position[codes]


def _take(
    cand: _Candidates,
    languages: Sequence[str],
    position: np.ndarray,
    counts: Mapping[str, int],
    too_few: Callable[[str, int], None],
) -> np.ndarray:
    """Pool rows: per language (given order), the first counts[lang] by position."""
    chosen = []
    for lang in languages:
        mine = cand.of(lang)
        if mine.sum() < counts[lang]:
            too_few(lang, int(mine.sum()))
        first = np.argsort(position[mine], kind="stable")[: counts[lang]]
        chosen.append(cand.rows[mine][first])
    return np.concatenate(chosen)


def _select_test(
    pool: pd.DataFrame, languages: Sequence[str], per_language: int, seed: int, where: str
) -> np.ndarray:
    cand = _Candidates(pool, languages, None)
    counts = {lang: per_language for lang in languages}

    def too_few(lang: str, have: int) -> None:
        raise DataError(
            f"{where}: only {have} test example(s) in {lang!r}, but "
            f"test_per_language={per_language}. Lower test_per_language to at most {have}."
        )

    parallel = _parallel_languages(cand, languages)
    position = _order(cand.key, seed)  # languages without translations: their own sample
    if parallel:
        # The same pair_ids in every parallel test language.
        shared = set.intersection(*(set(cand.key[cand.of(lang)]) for lang in parallel))
        if len(shared) < per_language:
            raise DataError(
                f"{where}: only {len(shared)} pair_id(s) have an example in every parallel "
                f"test language {parallel}, but test_per_language={per_language}. Lower "
                f"test_per_language to at most {len(shared)}, or drop the language with the "
                "fewest examples. (If your data is not parallel, leave pair_id empty.)"
            )
        in_parallel = np.isin(cand.language, parallel)
        in_shared = np.fromiter((k in shared for k in cand.key), dtype=bool, count=len(cand.key))
        position[in_parallel] = np.iinfo(np.int64).max
        position[in_parallel & in_shared] = _order(cand.key[in_parallel & in_shared], seed)
    return _take(cand, languages, position, counts, too_few)


def _parallel_languages(cand: _Candidates, languages: Sequence[str]) -> list[str]:
    """Test languages holding a pair_id that another test language also holds.

    Only they get parallel test sets; a language whose pair_ids no other language shares
    (or that has none) is sampled on its own, so partially parallel data works.
    """
    paired = cand.paired
    frame = pd.DataFrame({"language": cand.language[paired], "key": cand.key[paired]})
    per_key = frame.groupby("key")["language"].transform("nunique")
    linked = set(frame.loc[per_key > 1, "language"])
    parallel = [lang for lang in languages if lang in linked]
    alone = [lang for lang in languages if lang not in linked]
    if parallel and alone:
        log.info("test languages %s share no pair_id with the others: sampled on their own", alone)
    return parallel


def _select_train(
    pool: pd.DataFrame,
    drop: np.ndarray,
    languages: Sequence[str],
    counts: Mapping[str, int],
    seed: int,
    where: str,
    reserved: int,
) -> np.ndarray:
    cand = _Candidates(pool, languages, drop)
    # Keys shared by more training languages come first: parallel training sets.
    codes, _ = pd.factorize(cand.key)
    coverage = np.bincount(codes)  # rows per key = languages per key (deduplicated)

    def too_few(lang: str, have: int) -> None:
        held = f" once {reserved} test pair_id(s)/id(s) are set aside" if reserved else ""
        raise DataError(
            f"{where}: only {have} training example(s) in {lang!r}{held}, but "
            f"train_counts[{lang!r}]={counts[lang]}. Lower train_counts[{lang!r}] to at "
            f"most {have}."
        )

    return _take(cand, languages, _order(cand.key, seed, coverage), counts, too_few)


def _select_disjoint(
    pool: pd.DataFrame,
    drop: np.ndarray,
    languages: Sequence[str],
    counts: Mapping[str, int],
    seed: int,
    where: str,
) -> np.ndarray:
    """Pool rows: per language (given order), counts[lang] rows whose keys no earlier
    language took, label-stratified: each label gets the language's count times its share
    of the language's candidates (largest remainder), filled in the seeded key order."""
    cand = _Candidates(pool, languages, drop)
    labels = pool[schema.LABEL].to_numpy()[cand.rows]
    position = _order(cand.key, seed)
    used: set = set()
    chosen = []
    for lang in languages:
        mine = np.flatnonzero(cand.of(lang))
        values, sizes = np.unique(labels[mine], return_counts=True)
        quota = counts[lang] * sizes / sizes.sum()
        wanted = np.floor(quota).astype(int)
        short = counts[lang] - wanted.sum()
        wanted[np.lexsort((-sizes, -(quota - wanted)))[:short]] += 1
        for value, n in zip(values, wanted, strict=True):
            rows = mine[labels[mine] == value]
            free = rows[[k not in used for k in cand.key[rows]]]
            if len(free) < n:
                raise DataError(
                    f"{where}: train_content=disjoint needs {n} {lang!r} training example(s) "
                    f"of label {value!r} that no earlier training language has, but only "
                    f"{len(free)} are left. Lower train_per_language (the languages share "
                    f"one pool of {len(set(cand.key))} sentences), or use "
                    "train_content=parallel."
                )
            picked = free[np.argsort(position[free], kind="stable")[:n]]
            used.update(cand.key[picked])
            chosen.append(picked)
    rows = np.concatenate(chosen)
    # order within a language: the seeded key order, as for parallel sets
    language_of = cand.language[rows]
    order = np.lexsort((position[rows], [list(languages).index(x) for x in language_of]))
    return cand.rows[rows[order]]


def select(
    pools: Pools,
    *,
    train_languages: Sequence[str],
    test_languages: Sequence[str],
    train_counts: Mapping[str, int],
    test_per_language: int,
    seed: int,
    where: str,
    train_content: str = "parallel",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) frames, schema-valid, ordered by language then shuffled key order."""
    single = pools.test is None
    test_pool = pools.train if single else pools.test
    test_rows = _select_test(test_pool, test_languages, test_per_language, seed, where)
    test = test_pool.iloc[test_rows]
    # Keep test content out of training: its translations (pair_id) and, when train and
    # test come from one pool, the very rows.
    drop = pools.train[schema.PAIR_ID].isin(set(test[schema.PAIR_ID].dropna())).to_numpy().copy()
    if single:
        drop[test_rows] = True
    reserved = test_per_language if single else 0
    if train_content == "disjoint":
        rows = _select_disjoint(pools.train, drop, train_languages, train_counts, seed, where)
    else:
        rows = _select_train(
            pools.train, drop, train_languages, train_counts, seed, where, reserved
        )
    train = pools.train.iloc[rows]
    if train.empty or test.empty:
        raise DataError(f"{where}: empty selection; ask for at least one example per language.")
    return (
        schema.validate(train, where=f"{where} (train)"),
        schema.validate(test, where=f"{where} (test)"),
    )
