"""Which training rows a ground-truth retraining keeps: random subsets and language removals.

A retraining is named by a spec the train step reads (its `remove` parameter), so every
retraining is an ordinary, reusable train run and the kept rows follow from the spec, the
training manifest and the data seed alone:

    subset:<alpha>:<draw>          keep a random fraction alpha of every training language
                                   (stratified by language; draw seeds the choice)
    subset:<alpha>:<draw>:pairs    keep or drop whole translation groups (pair_id), a
                                   fraction alpha of the groups (rows without a pair_id
                                   are their own group)
    subset:<alpha>:<draw>:labels   keep a fraction alpha of every (language, label) cell,
                                   so every subset keeps the label proportions and a score
                                   that counts same-label rows predicts nothing
    language:<X>                   drop every training row of language X
    fraction:<f>:<X>+<Y>:<draw>    keep a fraction f of each named language (label-
                                   stratified within it; draw seeds the choice) and every
                                   row of the others: a composition of the language
                                   datamodel (experiments/language_datamodel.py)

Subsets are the linear datamodeling score's (LDS) random training sets (Ilyas et al. 2022,
Park et al. 2023); language removals are the leave-one-language-out ground truth of "test
language L relies on training language X".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from xlinfluence.checks import SELECTION
from xlinfluence.data import schema
from xlinfluence.errors import ConfigError, DataError

SUBSET, LANGUAGE, FRACTION = "subset", "language", "fraction"
BY = ("rows", "pairs", "labels")  # how a subset is drawn
FORM = (
    "subset:<alpha in (0,1)>:<draw>[:pairs|:labels], language:<train lang> or "
    "fraction:<f in (0,1)>:<lang>[+<lang>...]:<draw>"
)
_SPEC = re.compile(SELECTION)


@dataclass(frozen=True)
class Selection:
    """A subset (alpha, draw, drawn by rows, pairs or labels), a language removal
    (language), or a cut of the languages in `cut` to a fraction alpha (draw)."""

    kind: str
    alpha: float = 1.0
    draw: int = 0
    by: str = "rows"
    language: str = ""
    cut: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Selection:
        match = _SPEC.fullmatch(text)
        if not match:
            raise ConfigError(f"remove={text!r}: not a selection; give {FORM}")
        if match["language"]:
            return cls(LANGUAGE, language=match["language"])
        if match["cut"]:
            cut = tuple(match["cut"].split("+"))
            if len(set(cut)) < len(cut):
                raise ConfigError(f"remove={text!r}: a language is cut twice; name each once.")
            alpha = _fraction(text, match["fraction"])
            return cls(FRACTION, alpha=alpha, draw=int(match["cut_draw"]), cut=cut)
        by = (match["by"] or ":rows").removeprefix(":")
        return cls(SUBSET, alpha=_fraction(text, match["alpha"]), draw=int(match["subset_draw"]),
                   by=by)  # fmt: skip

    @property
    def pairs(self) -> bool:
        return self.by == "pairs"

    @property
    def spec(self) -> str:
        if self.kind == LANGUAGE:
            return f"{LANGUAGE}:{self.language}"
        alpha = format(self.alpha, ".6f").rstrip("0")
        if self.kind == FRACTION:
            return f"{FRACTION}:{alpha}:{'+'.join(self.cut)}:{self.draw}"
        return f"{SUBSET}:{alpha}:{self.draw}" + ("" if self.by == "rows" else f":{self.by}")

    def label(self) -> str:
        """Short text for run names."""
        if self.kind == LANGUAGE:
            return f"without {self.language}"
        if self.kind == FRACTION:
            return f"{'+'.join(self.cut)} at {self.alpha:g} #{self.draw}"
        return f"subset {self.alpha:g} #{self.draw}" + (
            "" if self.by == "rows" else f" by {self.by}"
        )


def _fraction(text: str, value: str) -> float:
    alpha = float(value)
    if not 0 < alpha < 1:
        raise ConfigError(f"remove={text!r}: the fraction must lie strictly between 0 and 1.")
    return alpha


def is_selection(spec: str) -> bool:
    return bool(_SPEC.fullmatch(spec))


def kept_mask(selection: Selection, train: pd.DataFrame, seed: int) -> np.ndarray:
    """Boolean mask over the rows of `train`: True where the retraining keeps the row."""
    language = train[schema.LANGUAGE].to_numpy()
    if selection.kind == LANGUAGE:
        dropped = language == selection.language
        if not dropped.any():
            raise DataError(
                f"remove={selection.spec!r}: no training rows of {selection.language!r}; the "
                f"training languages are {sorted(set(language))}."
            )
        if dropped.all():
            raise DataError(f"remove={selection.spec!r} would leave no training data.")
        return ~dropped
    if selection.kind == FRACTION:
        return _kept_fraction(selection, train, seed)
    rng = np.random.default_rng([seed, selection.draw, BY.index(selection.by)])
    if selection.pairs:
        return _kept_groups(train, selection.alpha, rng)
    cells = language
    if selection.by == "labels":
        cells = np.array([f"{a}\0{b}" for a, b in zip(language, train[schema.LABEL])])
    keep = np.zeros(len(train), dtype=bool)
    for value in pd.unique(cells):
        rows = np.flatnonzero(cells == value)
        n = int(round(selection.alpha * len(rows)))
        keep[rng.choice(rows, size=max(1, n), replace=False)] = True
    return keep


def _kept_fraction(selection: Selection, train: pd.DataFrame, seed: int) -> np.ndarray:
    """Every row but a label-stratified fraction of each cut language: in each (language,
    label) cell the kept count is the fraction of the cell rounded, with the remainders
    given out by largest remainder so the language keeps round(alpha * its rows) in all
    (at least one row per language). Label proportions so stay as close to the full set's
    as whole rows allow, and a cut changes how much of the language is seen, not which
    topics."""
    language = train[schema.LANGUAGE].to_numpy()
    labels = train[schema.LABEL].to_numpy()
    unknown = [lang for lang in selection.cut if not (language == lang).any()]
    if unknown:
        raise DataError(
            f"remove={selection.spec!r}: no training rows of {unknown}; the training "
            f"languages are {sorted(set(language))}."
        )
    keep = np.ones(len(train), dtype=bool)
    for lang in selection.cut:
        rng = np.random.default_rng([seed, selection.draw, 3, _language_key(lang)])
        mine = np.flatnonzero(language == lang)
        cells = sorted(set(labels[mine]))
        sizes = np.array([(labels[mine] == c).sum() for c in cells])
        total = max(1, int(round(selection.alpha * len(mine))))
        quota = selection.alpha * sizes
        counts = np.floor(quota).astype(int)
        short = total - counts.sum()
        if short > 0:  # largest remainders first, ties to the larger cell
            order = np.lexsort((-sizes, -(quota - counts)))
            counts[order[:short]] += 1
        keep[mine] = False
        for cell, count in zip(cells, counts, strict=True):
            rows = mine[labels[mine] == cell]
            keep[rng.choice(rows, size=int(count), replace=False)] = True
    return keep


def _language_key(language: str) -> int:
    """A stable integer per language code (numpy seeds take integers, not text)."""
    return int.from_bytes(language.encode()[:16].ljust(16, b"\0"), "big")


def _kept_groups(train: pd.DataFrame, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Whole translation groups: a fraction alpha of the distinct groups, every row of each."""
    pair = train[schema.PAIR_ID]
    groups = pair.where(pair.notna(), "row:" + train[schema.ID].astype(str)).to_numpy()
    distinct = np.array(sorted(set(groups)))
    n = max(1, int(round(alpha * len(distinct))))
    chosen = rng.choice(distinct, size=n, replace=False)
    return np.isin(groups, chosen)


def kept_masks(
    selections: list[Selection], train: pd.DataFrame, seed: int
) -> np.ndarray:  # (M, n_train)
    """Every selection's mask as one matrix, rows in the order given."""
    return np.stack([kept_mask(s, train, seed) for s in selections])
