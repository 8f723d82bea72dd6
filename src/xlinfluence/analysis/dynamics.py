"""Does reliance on other languages change over fine-tuning? The paired epoch difference.

"Own share at the last epoch minus the first" is a difference of two means over the same
test examples, so its interval comes from the per-example differences (paired), not from
setting the two epochs' intervals side by side. Each test language's row carries a
two-sided bootstrap p, Holm-adjusted over the test languages.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xlinfluence.analysis.bootstrap import _own_cross
from xlinfluence.analysis.holm import holm
from xlinfluence.analysis.paired import paired_mean_test
from xlinfluence.analysis.shares import SELF_SHARE
from xlinfluence.analysis.topk import CHECKPOINT, KIND, PROPONENT, TEST_INDEX, TEST_LANGUAGE

CHANGE = "self_share_change"


def self_share_change(
    per_example: pd.DataFrame,
    first: str,
    last: str,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per test language (proponents): own share at `last` minus at `first`, with a 95%
    interval and p from resampling test examples (paired), Holm over the languages.
    Zero-shot languages (no own share) are left out."""
    own = _own_cross(per_example)
    own = own[own[KIND] == PROPONENT]
    wide = own.pivot_table(index=[TEST_LANGUAGE, TEST_INDEX], columns=CHECKPOINT,
                           values=SELF_SHARE, sort=False)  # fmt: skip
    rng = np.random.default_rng(seed)
    rows = []
    for language in pd.unique(own[TEST_LANGUAGE]):
        if language not in wide.index.get_level_values(0):
            continue
        part = wide.loc[language]
        result = paired_mean_test(
            (part[last] - part[first]).to_numpy(dtype=float), n_resamples=n_resamples, rng=rng
        )
        if not result["n"]:
            continue
        rows.append(
            {
                TEST_LANGUAGE: language,
                "first": first,
                "last": last,
                f"{SELF_SHARE}_first": float(part[first].mean()),
                f"{SELF_SHARE}_last": float(part[last].mean()),
                CHANGE: result["mean"],
                "ci_low": result["ci_low"],
                "ci_high": result["ci_high"],
                "p": result["p"],
                "n_test": result["n"],
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        table["p_holm"] = holm(table["p"].to_numpy())
    return table
