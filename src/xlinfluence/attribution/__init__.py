"""Attribution methods: how much each training example is credited with each test
example's prediction.

The registry below is the one list of methods: the `method` parameter's choices and help,
the influence step and the experiments read it. Each method is a module here that defines
its `Method` (attribution/method.py: the interface) and the scorer behind it; the exact
per-layer TracIn engine they share is tracin/, the step's chunked scoring loop
attribution/scoring.py. Adding a method: its module, one line below, its tests, and its
line in docs/guide.md.
"""

from __future__ import annotations

from xlinfluence.attribution import (
    ekfac,
    label_only,
    metagradient,
    representation,
    token_overlap,
    tracin,
)
from xlinfluence.attribution.method import Method, ReplayMethod

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        tracin.DOT,
        tracin.COSINE,
        representation.METHOD,
        ekfac.METHOD,
        metagradient.METHOD,
        label_only.METHOD,
        token_overlap.METHOD,
    )
}

__all__ = ["METHODS", "Method", "ReplayMethod"]
