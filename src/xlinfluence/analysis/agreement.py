"""Do other attributions of the same fine-tuning run give the same language shares?

Compares each method's test-language x training-language share matrix (summed-score
proponents, or one checkpoint's) with a reference method's (dot TracIn over all
parameters, summed over checkpoints):

    spearman_rho        rank correlation of the matrix entries
    topk_overlap        mean over test examples of |top-k(method) & top-k(reference)| / k
    own_disagreements   test languages whose own-language share intervals do not overlap
                        the reference's (a difference larger than the bootstrap noise)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from xlinfluence.analysis.shares import SELF_SHARE, share_matrix
from xlinfluence.analysis.topk import (
    CHECKPOINT,
    KIND,
    PROPONENT,
    TEST_INDEX,
    TEST_LANGUAGE,
    TRAIN_INDEX,
)
from xlinfluence.artifacts import TOTAL

REFERENCE = "dot-all"


def _matrix(shares: pd.DataFrame, checkpoint: str) -> pd.DataFrame:
    return share_matrix(shares, checkpoint, PROPONENT)


def _own(self_shares: pd.DataFrame, checkpoint: str) -> pd.DataFrame:
    rows = self_shares[(self_shares[CHECKPOINT] == checkpoint) & (self_shares[KIND] == PROPONENT)]
    return rows.set_index(TEST_LANGUAGE)[
        [SELF_SHARE, f"{SELF_SHARE}_ci_low", f"{SELF_SHARE}_ci_high"]
    ]


def _topk_sets(topk: pd.DataFrame, checkpoint: str, k: int) -> dict[int, set[int]]:
    rows = topk[(topk[CHECKPOINT] == checkpoint) & (topk[KIND] == PROPONENT) & (topk["rank"] < k)]
    return {int(i): set(g[TRAIN_INDEX]) for i, g in rows.groupby(TEST_INDEX)}


def compare(methods: dict[str, dict], k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(agreement per method, own-language shares per method and test language).

    methods: name -> {"shares", "self_shares", "topk": tables of its analyze/influence
    runs, "checkpoint": which score to read (TOTAL or a checkpoint name)}; must hold
    REFERENCE.
    """
    ref = methods[REFERENCE]
    ref_matrix = _matrix(ref["shares"], ref["checkpoint"])
    ref_own = _own(ref["self_shares"], ref["checkpoint"])
    ref_sets = _topk_sets(ref["topk"], ref["checkpoint"], k)
    agreement, own_rows = [], []
    for name, tables in methods.items():
        matrix = _matrix(tables["shares"], tables["checkpoint"]).reindex_like(ref_matrix)
        own = _own(tables["self_shares"], tables["checkpoint"]).reindex(ref_own.index)
        sets = _topk_sets(tables["topk"], tables["checkpoint"], k)
        overlap = [len(sets.get(i, set()) & s) / k for i, s in ref_sets.items()]
        low, high = f"{SELF_SHARE}_ci_low", f"{SELF_SHARE}_ci_high"
        apart = (own[low] > ref_own[high]) | (own[high] < ref_own[low])
        agreement.append(
            {
                "method": name,
                "spearman_rho": float(
                    spearmanr(matrix.to_numpy().ravel(), ref_matrix.to_numpy().ravel()).statistic
                ),
                "topk_overlap": float(np.mean(overlap)),
                "own_disagreements": int(apart.sum()),
                "languages_apart": ",".join(apart.index[apart]),
            }
        )
        own_rows.append(own.assign(method=name, apart_from_reference=apart).reset_index())
    return pd.DataFrame(agreement), pd.concat(own_rows, ignore_index=True)


def figure(agreement: pd.DataFrame, own: pd.DataFrame) -> Figure:
    """Left: rank correlation and top-k overlap with the reference per method; right: the
    own-language share per method and test language with its interval."""
    fig = Figure(figsize=(12.5, 4.4))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    x = np.arange(len(agreement))
    left.bar(x - 0.2, agreement["spearman_rho"], width=0.4, label="rank correlation of shares")
    left.bar(x + 0.2, agreement["topk_overlap"], width=0.4, label="top-k overlap")
    left.set_xticks(x, agreement["method"], rotation=35, ha="right")
    left.set_ylim(min(0.0, float(agreement["spearman_rho"].min()) - 0.05), 1.05)
    left.set_title(f"Agreement with {REFERENCE}")
    left.legend(fontsize=8)
    methods = list(agreement["method"])
    languages = list(dict.fromkeys(own[TEST_LANGUAGE]))
    width = 0.8 / len(methods)
    for j, name in enumerate(methods):
        rows = own[own["method"] == name].set_index(TEST_LANGUAGE).reindex(languages)
        pos = np.arange(len(languages)) + (j - (len(methods) - 1) / 2) * width
        err = [
            rows[SELF_SHARE] - rows[f"{SELF_SHARE}_ci_low"],
            rows[f"{SELF_SHARE}_ci_high"] - rows[SELF_SHARE],
        ]
        right.bar(pos, rows[SELF_SHARE], width=width, yerr=err, capsize=2, label=name)
    right.set_xticks(np.arange(len(languages)), languages)
    right.set_ylabel("own-language share of top-k")
    right.set_title("Own-language share by method (95% intervals)")
    right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


__all__ = ["REFERENCE", "TOTAL", "compare", "figure"]
