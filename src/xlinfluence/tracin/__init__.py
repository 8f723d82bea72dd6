"""Exact TracIn (Pruthi et al. 2020): per-layer contractions from hooked captures.

`checkpoint_scores` gives one checkpoint's unweighted gradient inner products;
`reference_scores` is the plain per-example autograd check it is tested against.
"""

from xlinfluence.tracin.engine import checkpoint_scores
from xlinfluence.tracin.hooks import UnsupportedModuleError, select_modules
from xlinfluence.tracin.reference import reference_scores

__all__ = ["UnsupportedModuleError", "checkpoint_scores", "reference_scores", "select_modules"]
