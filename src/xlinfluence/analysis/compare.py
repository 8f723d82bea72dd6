"""Comparisons across the settings of an experiment (zero-shot, imbalance, seeds).

Each setting is one full pipeline whose analyze run logged `shares` (with bootstrap
intervals) and `example_shares` tables (see shares.py, bootstrap.py). These functions line
the settings up so one table and one figure answer the experiment's question.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from xlinfluence.analysis.bootstrap import pooled_self_share_intervals
from xlinfluence.analysis.shares import SHARE
from xlinfluence.artifacts import TOTAL

SETTING = "setting"


def zero_shot(
    shares: dict[str, pd.DataFrame],
    heldout: dict[str, str],
    accuracy: dict[str, dict[str, float]] | None = None,
) -> pd.DataFrame:
    """Where a language's top-k proponents come from when it is held out vs when it is seen.

    `shares` maps setting name -> its shares table; `heldout` maps setting name -> the
    language held out there ("" for the baseline where every language is seen);
    `accuracy` (optional) setting -> test language -> accuracy. One row per (held-out
    language, training language), summed-score proponents: the training language's share
    of the held-out language's top-k with its bootstrap interval, in the all-seen setting
    (`seen_*`) and when held out (`unseen_*`; the held-out language's own row is 0 there:
    it has no training data). With `accuracy`: the held-out language's test accuracy in
    both settings.
    """
    baseline = next(name for name, lang in heldout.items() if not lang)
    values = [SHARE, "ci_low", "ci_high"]
    seen = _total_proponents(shares[baseline])
    frames = []
    for name, lang in heldout.items():
        if not lang:
            continue
        seen_rows = _of_test_language(seen, lang)
        unseen_rows = _of_test_language(_total_proponents(shares[name]), lang)
        frame = (
            seen_rows[values]
            .add_prefix("seen_")
            .join(unseen_rows[values].add_prefix("unseen_"), how="outer")
            .fillna({f"unseen_{v}": 0.0 for v in values})
        )
        frame = frame.loc[list(dict.fromkeys([*seen_rows.index, *frame.index]))].reset_index()
        frame.insert(0, "test_language", lang)
        frame.insert(1, "heldout_setting", name)
        if accuracy is not None:
            frame["seen_accuracy"] = accuracy[baseline].get(lang, np.nan)
            frame["unseen_accuracy"] = accuracy[name].get(lang, np.nan)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def imbalance(
    shares: dict[str, pd.DataFrame],
    ratios: dict[str, float],
    language: str,
    mass: dict[str, pd.DataFrame],
) -> pd.DataFrame:
    """How the over-represented language's share of each test language's top-k moves.

    `shares` maps setting -> its shares table, `ratios` setting -> how many times more
    examples `language` had than each other language, `mass` setting -> its influence_mass
    table (for the training-set counts). Columns: setting, ratio, test_language, share (of
    `language` in that test language's top-k proponents, summed score), ci_low, ci_high
    (its bootstrap interval), data_share (`language`'s fraction of the training examples:
    the share a top-k blind to language would give it), enrichment (share / data_share).
    """
    frames = []
    for name, ratio in ratios.items():
        frame = _total_proponents(shares[name])
        frame = frame[frame["train_language"] == language]
        frame = frame[["test_language", SHARE, "ci_low", "ci_high"]].assign(
            **{SETTING: name, "ratio": ratio, "data_share": _data_share(mass[name], language)}
        )
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table["enrichment"] = table[SHARE] / table["data_share"]
    columns = [SETTING, "ratio", "test_language", SHARE, "ci_low", "ci_high", "data_share",
               "enrichment"]  # fmt: skip
    return (
        table[columns].sort_values(["test_language", "ratio"], kind="stable").reset_index(drop=True)
    )


def _data_share(mass: pd.DataFrame, language: str) -> float:
    """`language`'s fraction of the training examples, from an influence_mass table."""
    counts = mass.drop_duplicates("train_language").set_index("train_language")
    return float(counts.loc[language, "n_train_examples"] / counts["n_train_examples"].sum())


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


def imbalance_figure(table: pd.DataFrame) -> Figure:
    """The over-represented language's share per test language against the ratio, beside
    its share of the data; error bars are the table's bootstrap intervals."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for lang, group in table.groupby("test_language", sort=False):
        ax.errorbar(
            group["ratio"], group[SHARE], yerr=_yerr(group, SHARE), marker="o", capsize=3,
            label=lang,
        )  # fmt: skip
    data = table.drop_duplicates("ratio").sort_values("ratio")
    ax.plot(data["ratio"], data["data_share"], "k--", label="its share of the data")
    ax.set_xscale("log", base=2)
    ax.set_xticks(
        sorted(table["ratio"].unique()), [f"{r:g}" for r in sorted(table["ratio"].unique())]
    )
    ax.set_xlabel("over-representation ratio of the first language")
    ax.set_ylabel("its share of the top-k proponents")
    ax.set_title("Share of the over-represented language, per test language (95% CI)")
    ax.legend(fontsize=8, title="test language")
    return _finish(fig, ax)


def seeds_figure(table: pd.DataFrame) -> Figure:
    """Own-language share per test language pooled over seeds, with its interval."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    x = np.arange(len(table))
    ax.bar(x, table["self_share"], yerr=_yerr(table, "self_share"), capsize=4)
    ax.set_xticks(x, table["test_language"])
    ax.set_ylabel("own-language share of top-k proponents")
    ax.set_title("Own-language share pooled over seeds (95% hierarchical bootstrap CI)")
    return _finish(fig, ax)


def _finish(fig: Figure, ax) -> Figure:
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def zero_shot_figure(table: pd.DataFrame) -> Figure:
    """One panel per held-out language: its top-k by training language, seen vs held out."""
    languages = list(dict.fromkeys(table["test_language"]))
    fig = Figure(figsize=(2.6 * len(languages) + 0.8, 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(languages), sharey=True))
    for ax, lang in zip(axes, languages, strict=True):
        rows = table[table["test_language"] == lang]
        x = np.arange(len(rows))
        for offset, prefix, label in ((-0.2, "seen", "seen in fine-tuning"),
                                      (0.2, "unseen", "held out (zero-shot)")):  # fmt: skip
            ax.bar(
                x + offset, rows[f"{prefix}_share"], 0.4, label=label, capsize=2,
                yerr=_yerr(rows, f"{prefix}_share", f"{prefix}_ci_low", f"{prefix}_ci_high"),
            )  # fmt: skip
        ax.set_xticks(x, rows["train_language"])
        title = f"test: {lang}"
        if "seen_accuracy" in rows:
            acc = rows.iloc[0]
            title += f"\nacc {acc['seen_accuracy']:.2f} \u2192 {acc['unseen_accuracy']:.2f}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training language", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("share of top-k proponents")
    top = table[["seen_ci_high", "unseen_ci_high", "seen_share", "unseen_share"]].max().max()
    axes[0].set_ylim(0, min(1.0, 1.25 * top) if top > 0 else 1.0)
    axes[-1].legend(fontsize=7)
    fig.suptitle("Where each language's top-k proponents come from, seen vs held out (95% CI)")
    fig.tight_layout()
    return fig


def _yerr(frame: pd.DataFrame, value: str, low: str = "ci_low", high: str = "ci_high"):
    """Asymmetric error bars (2, n) from an interval's columns; NaN draws none."""
    err = np.vstack([frame[value] - frame[low], frame[high] - frame[value]])
    return np.nan_to_num(err).clip(min=0)


def _of_test_language(frame: pd.DataFrame, language: str) -> pd.DataFrame:
    return frame[frame["test_language"] == language].set_index("train_language")


def _total_proponents(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["checkpoint"] == TOTAL) & (frame["kind"] == "proponent")]
