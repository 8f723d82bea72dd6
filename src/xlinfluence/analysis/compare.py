"""Comparisons across the settings of an experiment (zero-shot, imbalance, seeds).

Each setting is one full pipeline whose analyze run produced a `self_shares` table and a
`shares` table (see shares.py). These functions line the settings up so one table and one
figure answer the experiment's question.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from xlinfluence.analysis.bootstrap import pooled_self_share_intervals
from xlinfluence.artifacts import TOTAL

SETTING = "setting"


def zero_shot(self_shares: dict[str, pd.DataFrame], heldout: dict[str, str]) -> pd.DataFrame:
    """Cross-lingual share of each language's top-k proponents when unseen vs seen.

    `self_shares` maps setting name -> its self_shares table; `heldout` maps setting name
    -> the language held out there ("" for the baseline where every language is seen).
    Columns: test_language, seen_cross_share, seen_self_share, unseen_cross_share
    (1 by construction: an unseen language has no own-language training data), and
    unseen_top_train_language, the training language with the largest share when unseen.
    """
    baseline = next(name for name, lang in heldout.items() if not lang)
    seen = _total_proponents(self_shares[baseline]).set_index("test_language")
    rows = []
    for name, lang in heldout.items():
        if not lang:
            continue
        unseen = _total_proponents(self_shares[name]).set_index("test_language")
        rows.append(
            {
                "test_language": lang,
                "heldout_setting": name,
                "seen_self_share": seen.loc[lang, "self_share"],
                "seen_cross_share": seen.loc[lang, "cross_share"],
                "unseen_cross_share": unseen.loc[lang, "cross_share"],
            }
        )
    return pd.DataFrame(rows)


def imbalance(
    shares: dict[str, pd.DataFrame], ratios: dict[str, float], language: str
) -> pd.DataFrame:
    """How the over-represented language's share of each test language's top-k moves.

    `shares` maps setting -> its shares table, `ratios` setting -> how many times more
    examples `language` had than each other language. Columns: setting, ratio,
    test_language, share (of `language` in that test language's top-k proponents).
    """
    rows = []
    for name, ratio in ratios.items():
        frame = shares[name]
        mine = frame[
            (frame["checkpoint"] == TOTAL)
            & (frame["kind"] == "proponent")
            & (frame["train_language"] == language)
        ]
        for row in mine.itertuples(index=False):
            rows.append(
                {SETTING: name, "ratio": ratio, "test_language": row.test_language,
                 "share": row.share}
            )  # fmt: skip
    return pd.DataFrame(rows).sort_values(["test_language", "ratio"]).reset_index(drop=True)


def seeds(per_example_shares: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Own-language share per test language pooled over seeds, with a hierarchical bootstrap
    interval (resample seeds, then test examples within each seed; see bootstrap.py).

    `per_example_shares` maps setting -> its `example_shares` table. Columns:
    test_language, n_seeds, n_test, self_share, ci_low, ci_high.
    """
    pooled = pooled_self_share_intervals(list(per_example_shares.values()))
    total = _total_proponents(pooled)
    return total.rename(columns={"self_share_ci_low": "ci_low", "self_share_ci_high": "ci_high"})[
        ["test_language", "n_seeds", "n_test", "self_share", "ci_low", "ci_high"]
    ].reset_index(drop=True)


def comparison_figure(table: pd.DataFrame, experiment: str) -> Figure:
    """One bar chart per experiment, readable without the table."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if experiment == "zero-shot":
        x = np.arange(len(table))
        ax.bar(x - 0.2, table["seen_cross_share"], 0.4, label="seen in fine-tuning")
        ax.bar(x + 0.2, table["unseen_cross_share"], 0.4, label="held out (zero-shot)")
        ax.set_xticks(x, table["test_language"])
        ax.set_ylabel("cross-lingual share of top-k proponents")
        ax.set_title("Cross-lingual reliance, seen vs zero-shot")
    elif experiment == "imbalance":
        for lang, group in table.groupby("test_language", sort=False):
            ax.plot(group["ratio"], group["share"], marker="o", label=lang)
        ax.set_xlabel("over-representation ratio")
        ax.set_ylabel("share of the over-represented language")
        ax.set_title("Share of the over-represented language in top-k proponents")
    else:
        x = np.arange(len(table))
        mean = table["self_share"]
        err = np.vstack([mean - table["ci_low"], table["ci_high"] - mean])
        ax.bar(x, mean, yerr=np.nan_to_num(err), capsize=4)
        ax.set_xticks(x, table["test_language"])
        ax.set_ylabel("own-language share of top-k proponents")
        ax.set_title("Own-language share pooled over seeds (95% hierarchical bootstrap CI)")
    ax.set_ylim(0, 1)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def _total_proponents(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["checkpoint"] == TOTAL) & (frame["kind"] == "proponent")]
