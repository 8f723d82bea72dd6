"""Holm's step-down correction: a table of many cells tested at once keeps its error rate."""

from __future__ import annotations

import numpy as np


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (same order as given): the family-wise error rate is at most
    the level at which an adjusted p is read, whatever the dependence between the tests.
    A NaN p (nothing was tested) stays NaN and is not counted in the family."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out
