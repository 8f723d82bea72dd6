"""Which training rows a ground-truth retraining keeps: random subsets and language removals.

A retraining is named by a spec the train step reads (its `remove` parameter), so every
retraining is an ordinary, reusable train run and the kept rows follow from the spec, the
training manifest and the data seed alone:

    subset:<alpha>:<draw>          keep a random fraction alpha of every training language
                                   (stratified by language; draw seeds the choice)
    subset:<alpha>:<draw>:pairs    keep or drop whole translation groups (pair_id), a
                                   fraction alpha of the groups (rows without a pair_id
                                   are their own group)
    language:<X>                   drop every training row of language X

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

SUBSET, LANGUAGE = "subset", "language"
FORM = "subset:<alpha in (0,1)>:<draw>[:pairs] or language:<train lang>"
_SPEC = re.compile(SELECTION)


@dataclass(frozen=True)
class Selection:
    """A subset (alpha, draw, by pairs) or a language removal (language)."""

    kind: str
    alpha: float = 1.0
    draw: int = 0
    pairs: bool = False
    language: str = ""

    @classmethod
    def parse(cls, text: str) -> Selection:
        match = _SPEC.fullmatch(text)
        if not match:
            raise ConfigError(f"remove={text!r}: not a selection; give {FORM}")
        if match["language"]:
            return cls(LANGUAGE, language=match["language"])
        alpha = float(match["alpha"])
        if not 0 < alpha < 1:
            raise ConfigError(f"remove={text!r}: alpha must lie strictly between 0 and 1.")
        return cls(SUBSET, alpha=alpha, draw=int(match["subset_draw"]), pairs=bool(match["pairs"]))

    @property
    def spec(self) -> str:
        if self.kind == LANGUAGE:
            return f"{LANGUAGE}:{self.language}"
        alpha = format(self.alpha, ".6f").rstrip("0")
        return f"{SUBSET}:{alpha}:{self.draw}" + (":pairs" if self.pairs else "")

    def label(self) -> str:
        """Short text for run names."""
        if self.kind == LANGUAGE:
            return f"without {self.language}"
        return f"subset {self.alpha:g} #{self.draw}" + (" by pairs" if self.pairs else "")


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
    rng = np.random.default_rng([seed, selection.draw, 1 if selection.pairs else 0])
    if selection.pairs:
        return _kept_groups(train, selection.alpha, rng)
    keep = np.zeros(len(train), dtype=bool)
    for value in pd.unique(language):
        rows = np.flatnonzero(language == value)
        n = int(round(selection.alpha * len(rows)))
        keep[rng.choice(rows, size=max(1, n), replace=False)] = True
    return keep


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
