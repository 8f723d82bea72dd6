"""Two-level designs over the training languages: which languages each composition cuts.

The language datamodel (experiments/language_datamodel.py) retrains on compositions in which
each training language is either whole or cut to a fraction. A full factorial over k
languages has 2^k compositions; a regular fraction 2^(k-p) keeps the main effects
estimable and orthogonal with far fewer runs: the first k-p languages take every
combination of levels and each of the p others follows a generator, the product of some
of the first ones in +-1 coding (Box, Hunter & Hunter, ch. 6):

    half     2^(k-1): the last language = the product of all the others (resolution k:
             V for five languages, so main effects are free of two-factor interactions)
    quarter  2^(k-2): the last two = the products of the base languages but the last,
             and but the first (resolution III for five: main effects aliased with some
             two-factor interactions; the confirmation setting's smaller design)

Every design holds the composition that cuts nothing (all +1), which the pilot shares.
A composition is named by the set of languages it cuts, so the same composition in two
designs (or in the pilot) is the same retraining.
"""

from __future__ import annotations

import itertools

import numpy as np

from xlinfluence.errors import ConfigError

DESIGNS = ("auto", "full", "half", "quarter")
#: auto: the full factorial up to this many languages (16 compositions), else half.
AUTO_FULL_UP_TO = 4


def resolve(design: str, k: int) -> str:
    """The design a name means for k training languages (auto resolved), checked."""
    if design not in DESIGNS:
        raise ConfigError(f"design={design!r}; choose one of {', '.join(DESIGNS)}.")
    if k < 2:
        raise ConfigError(
            f"the language datamodel needs at least 2 training languages, got {k}; add one."
        )
    chosen = design if design != "auto" else ("full" if k <= AUTO_FULL_UP_TO else "half")
    least = {"full": 2, "half": 3, "quarter": 5}[chosen]
    if k < least:
        raise ConfigError(
            f"design={design!r} needs at least {least} training languages for its main "
            f"effects to be estimable, got {k}; use design=full."
        )
    return chosen


def cut_matrix(design: str, k: int) -> np.ndarray:
    """(compositions, k) booleans, True where the composition cuts that language; the
    composition that cuts nothing first, the rest in standard order."""
    chosen = resolve(design, k)
    p = {"full": 0, "half": 1, "quarter": 2}[chosen]
    base = np.array(list(itertools.product([1, -1], repeat=k - p)), dtype=int)
    columns = [base[:, j] for j in range(k - p)]
    if p >= 1:
        columns.append(np.prod(base if p == 1 else base[:, :-1], axis=1))
    if p == 2:
        columns.append(np.prod(base[:, 1:], axis=1))
    levels = np.stack(columns, axis=1)
    return levels == -1


def check_orthogonal(cuts: np.ndarray) -> None:
    """Main effects must be balanced and mutually orthogonal (a design's contract)."""
    coded = np.where(cuts, -1, 1)
    gram = coded.T @ coded
    if not np.array_equal(gram, len(cuts) * np.eye(cuts.shape[1], dtype=int)):
        raise AssertionError(f"design is not orthogonal: {gram}")
