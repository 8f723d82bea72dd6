"""Figures for the language-share analysis. Each function returns a Figure; the caller
saves or logs it.

Figures are built as ``matplotlib.figure.Figure`` objects, not through pyplot: nothing is
shown, no display or global backend is needed (saving uses Agg), and figures are freed
when dropped instead of piling up in pyplot's registry.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import PercentFormatter

from xlinfluence.analysis.bootstrap import CI_HIGH, CI_LOW, high_column, low_column
from xlinfluence.analysis.shares import CROSS_SHARE, SELF_SHARE, SHARE
from xlinfluence.analysis.topk import CHECKPOINT, KIND, PROPONENT, TEST_LANGUAGE, TRAIN_LANGUAGE
from xlinfluence.analysis.translation import CONTROL_SHARE, N_EXAMPLES, TRANSLATION_SHARE
from xlinfluence.artifacts import TOTAL
from xlinfluence.errors import ConfigError


def share_heatmap(matrix: pd.DataFrame, title: str) -> Figure:
    """Heatmap of a test language x training language share matrix, cells annotated in %.

    Own-language cells (same label on both axes) are outlined, so the diagonal reads
    even when training and test languages differ or come in different orders.
    """
    values = matrix.to_numpy(dtype=float)  # (n_test_langs, n_train_langs)
    n_rows, n_cols = values.shape
    fig = Figure(figsize=(1.0 + 0.8 * n_cols + 1.2, 1.2 + 0.6 * n_rows + 0.6))
    ax = fig.subplots()
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            label = "–" if np.isnan(v) else _percent(v)
            color = "white" if not np.isnan(v) and v > 0.55 else "black"
            ax.text(j, i, label, ha="center", va="center", color=color, fontsize=9)
            if str(matrix.index[i]) == str(matrix.columns[j]):
                ax.add_patch(
                    Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", lw=1.5)
                )
    ax.set_xticks(range(n_cols), [str(c) for c in matrix.columns])
    ax.set_yticks(range(n_rows), [str(r) for r in matrix.index])
    ax.set_xlabel("training language")
    ax.set_ylabel("test language")
    ax.set_title(title)
    colorbar = fig.colorbar(image, ax=ax, format=PercentFormatter(xmax=1.0))
    colorbar.set_label("share of top-k")
    fig.tight_layout()
    return fig


def self_share_curve(
    self_shares: pd.DataFrame,
    kind: str = PROPONENT,
    column: str = SELF_SHARE,
    title: str | None = None,
    bands: bool = True,
) -> Figure:
    """Own-language share (or ``column="cross_share"``) per test language over checkpoints.

    One line per test language, x = checkpoints in table order with ``"total"`` left out
    (it is a sum over checkpoints, not a point in training). Languages whose value is
    undefined at every checkpoint (zero-shot languages for self_share) get no line; the
    figure notes them instead. When the table has ``<column>_ci_low`` and
    ``<column>_ci_high`` (``bootstrap.self_share_intervals``) and ``bands`` is true, each
    line gets a shaded confidence band.
    """
    if column not in (SELF_SHARE, CROSS_SHARE):
        raise ConfigError(f"column={column!r} must be {SELF_SHARE!r} or {CROSS_SHARE!r}.")
    rows = self_shares[(self_shares[KIND] == kind) & (self_shares[CHECKPOINT] != TOTAL)]
    if rows.empty:
        raise ConfigError(
            f"no per-checkpoint rows for kind={kind!r} (only {TOTAL!r}?); a curve needs "
            "the scores of the individual checkpoints."
        )
    checkpoints = list(pd.unique(rows[CHECKPOINT]))
    curves = rows.pivot(index=CHECKPOINT, columns=TEST_LANGUAGE, values=column)
    curves = curves.loc[checkpoints, pd.unique(rows[TEST_LANGUAGE])]  # (n_ckpt, n_langs)
    low, high = low_column(column), high_column(column)
    with_bands = bands and low in rows and high in rows
    if with_bands:
        lows = rows.pivot(index=CHECKPOINT, columns=TEST_LANGUAGE, values=low)
        highs = rows.pivot(index=CHECKPOINT, columns=TEST_LANGUAGE, values=high)
        lows, highs = lows.loc[checkpoints, curves.columns], highs.loc[checkpoints, curves.columns]

    fig = Figure(figsize=(max(6.5, 2.5 + 0.9 * len(checkpoints)), 4.2))
    ax = fig.subplots()
    x = np.arange(len(checkpoints))
    skipped = []
    for language in curves.columns:
        y = curves[language].to_numpy(dtype=float)
        if np.isnan(y).all():
            skipped.append(str(language))
            continue
        (line,) = ax.plot(x, y, marker="o", label=str(language))
        if with_bands:
            ax.fill_between(
                x,
                lows[language].to_numpy(dtype=float),
                highs[language].to_numpy(dtype=float),
                color=line.get_color(),
                alpha=0.15,
                linewidth=0,
            )
    ax.set_xticks(x, [str(c) for c in checkpoints])
    ax.margins(x=0.08)
    ax.set_ylim(-0.02, 1.04)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_xlabel("checkpoint")
    what = "own-language" if column == SELF_SHARE else "cross-lingual"
    ax.set_ylabel(f"{what} share of top-k {kind}s")
    band_note = " (shaded: bootstrap CI)" if with_bands else ""
    ax.set_title(title or f"{what.capitalize()} share over fine-tuning{band_note}")
    ax.grid(alpha=0.3)
    if ax.get_lines():
        ax.legend(title="test language", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    if skipped:
        ax.annotate(
            f"not shown (zero-shot, undefined): {', '.join(skipped)}",
            xy=(0.0, -0.2),
            xycoords="axes fraction",
            fontsize=8,
            color="dimgray",
        )
    fig.tight_layout()
    return fig


def translation_share_bars(
    aggregated: pd.DataFrame, checkpoint: str = TOTAL, title: str | None = None
) -> Figure:
    """Bar per test language: fraction of cross-lingual proponents that are translations of
    its own-language proponents (reinforcing); the rest are complementary. With the
    within-label shuffled control in the table, a black mark shows it (with its interval):
    the share to expect if TracIn picked same-label examples without singling out
    translations."""
    rows = aggregated[aggregated[CHECKPOINT] == checkpoint]
    if rows.empty:
        raise ConfigError(
            f"no translation shares for checkpoint={checkpoint!r}; available "
            f"{list(pd.unique(aggregated[CHECKPOINT]))}."
        )
    languages = [str(lang) for lang in rows[TEST_LANGUAGE]]
    values = rows[TRANSLATION_SHARE].to_numpy(dtype=float)
    # constrained layout keeps the outside legend and the axis labels inside the image
    fig = Figure(figsize=(max(6.5, 4.0 + 0.8 * len(languages)), 4.0), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(languages))
    bars = ax.bar(x, np.nan_to_num(values), color="tab:blue", label="reinforcing")
    ax.bar(
        x,
        np.where(np.isnan(values), 0.0, 1.0 - values),
        bottom=np.nan_to_num(values),
        color="tab:orange",
        alpha=0.6,
        label="complementary",
    )
    spans = [None] * len(values)  # each bar's control mark, low to high
    if CONTROL_SHARE in rows:
        control = rows[CONTROL_SHARE].to_numpy(dtype=float)
        low, high = low_column(CONTROL_SHARE), high_column(CONTROL_SHARE)
        yerr = None
        if low in rows and high in rows:
            yerr = np.nan_to_num(
                np.vstack(
                    [control - rows[low].to_numpy(float), rows[high].to_numpy(float) - control]
                )
            )
        ax.errorbar(
            x, control, yerr=yerr, fmt="_", color="black", markersize=22, capsize=3,
            label="within-label shuffled control",
        )  # fmt: skip
        below, above = (
            (control, control) if yerr is None else (control - yerr[0], control + yerr[1])
        )
        spans = list(zip(below, above, strict=True))
    for bar, v, n, span in zip(bars, values, rows[N_EXAMPLES], spans, strict=True):
        if np.isnan(v):
            label, y, inside = "n/a", 0.5, False
        else:
            label, top = f"{_percent(v)}\nn={n}", _label_top(v, span)
            inside = top - _LABEL_HEIGHT >= 0.01  # else above the bar, in black
            y = top if inside else v + 0.02
        ax.text(
            bar.get_x() + bar.get_width() / 2, y, label, ha="center",
            va="top" if inside else "bottom", fontsize=8, color="white" if inside else "black",
        )  # fmt: skip
    ax.set_xticks(x, languages)
    ax.set_ylim(0.0, 1.0)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_xlabel("test language (n = test examples with cross-lingual proponents)")
    ax.set_ylabel("share of cross-lingual proponents")
    ax.set_title(title or f"Translations of own-language proponents ({checkpoint})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


#: Height of a two-line 8-pt label on the 0-1 axis of a 4-inch-high figure.
_LABEL_HEIGHT = 0.09


def _label_top(share: float, span: tuple[float, float] | None) -> float:
    """Where a bar's label starts (its top): just under the bar's top, or, where the
    control's mark lies there, under the mark, so neither hides the other."""
    top = share - 0.02
    if span is not None and not np.isnan(span[0]):
        low, high = span
        if low - 0.01 < top and high + 0.01 > top - _LABEL_HEIGHT:
            top = low - 0.02
    return top


def share_bars(
    shares_with_ci: pd.DataFrame,
    checkpoint: str = TOTAL,
    kind: str = PROPONENT,
    title: str | None = None,
) -> Figure:
    """Grouped bars: per test language, one bar per training language's share of top-k.

    Error bars span ``ci_low`` to ``ci_high`` (``bootstrap.share_intervals``) when the
    table has them; without them the bars are drawn alone. Own-language bars are outlined.
    """
    rows = shares_with_ci[
        (shares_with_ci[CHECKPOINT] == checkpoint) & (shares_with_ci[KIND] == kind)
    ]
    if rows.empty:
        raise ConfigError(
            f"no shares for checkpoint={checkpoint!r}, kind={kind!r}; available checkpoints "
            f"{list(pd.unique(shares_with_ci[CHECKPOINT]))}, kinds "
            f"{list(pd.unique(shares_with_ci[KIND]))}."
        )
    test_languages = list(pd.unique(rows[TEST_LANGUAGE]))
    train_languages = list(pd.unique(rows[TRAIN_LANGUAGE]))
    with_ci = CI_LOW in rows and CI_HIGH in rows
    n_groups, n_bars = len(test_languages), len(train_languages)
    width = 0.8 / n_bars
    fig = Figure(figsize=(max(6.5, 2.5 + 0.35 * n_groups * n_bars), 4.2))
    ax = fig.subplots()
    x = np.arange(n_groups)
    handles = []  # plain swatches: a bar's own-language outline is no part of its colour
    for b, train_language in enumerate(train_languages):
        mine = rows[rows[TRAIN_LANGUAGE] == train_language].set_index(TEST_LANGUAGE)
        mine = mine.reindex(test_languages)  # (n_groups, ...)
        values = mine[SHARE].to_numpy(dtype=float)
        offset = x - 0.4 + width * (b + 0.5)
        yerr = None
        if with_ci:
            below = values - mine[CI_LOW].to_numpy(dtype=float)
            above = mine[CI_HIGH].to_numpy(dtype=float) - values
            yerr = np.nan_to_num(np.clip(np.stack([below, above]), 0.0, None))  # (2, n_groups)
        own = [str(t) == str(train_language) for t in test_languages]
        container = ax.bar(
            offset,
            np.nan_to_num(values),
            width,
            yerr=yerr,
            capsize=2,
            error_kw={"elinewidth": 0.8, "ecolor": "black"},
            label=str(train_language),
        )
        handles.append(Rectangle((0, 0), 1, 1, facecolor=container.patches[0].get_facecolor()))
        for patch, is_own in zip(container.patches, own, strict=True):
            if is_own:
                patch.set_edgecolor("black")
                patch.set_linewidth(1.2)
    ax.set_xticks(x, [str(t) for t in test_languages])
    ax.set_ylim(0.0, 1.0)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_xlabel("test language (outlined: own-language bar)")
    ax.set_ylabel(f"share of top-k {kind}s")
    ci_note = ", bars: bootstrap CI" if with_ci else ""
    ax.set_title(title or f"Share of top-k {kind}s by training language ({checkpoint}{ci_note})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        handles,
        [str(lang) for lang in train_languages],
        title="training language",
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
    )
    fig.tight_layout()
    return fig


def _percent(value: float) -> str:
    """Whole percent, rounding halves up (f"{0.125:.0%}" would give the banker's "12%")."""
    return f"{int(np.floor(100 * value + 0.5))}%"


def language_truth_figure(tables: dict[str, pd.DataFrame]) -> Figure:
    """beta (loss) as a heatmap with the premium per row, and the agreement per method."""
    truth = tables["language_truth_all"]
    loss = truth[truth["target"] == "loss"].pivot(
        index="test_language", columns="train_language", values="beta"
    )
    agree = tables["language_agreement"]
    agree = agree[
        (agree["target"] == "loss") & (agree["prediction"] == "summed")
        & (agree["centring"] == "double")
    ]  # fmt: skip
    agree = agree.sort_values("agreement")
    fig = Figure(figsize=(11, 0.5 * max(len(loss), len(agree)) + 2))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.2]})
    image = left.imshow(loss.to_numpy(), cmap="RdBu_r",
                        vmin=-np.nanmax(np.abs(loss.to_numpy())),
                        vmax=np.nanmax(np.abs(loss.to_numpy())))  # fmt: skip
    left.set_xticks(range(loss.shape[1]), loss.columns)
    left.set_yticks(range(loss.shape[0]), loss.index)
    for (i, j), value in np.ndenumerate(loss.to_numpy()):
        left.text(j, i, f"{value:+.3f}", ha="center", va="center", fontsize=8)
    left.set_xlabel("training language X cut")
    left.set_ylabel("test language L")
    left.set_title("beta: L's loss increase when X is cut")
    fig.colorbar(image, ax=left, shrink=0.8)
    y = np.arange(len(agree))
    right.errorbar(
        agree["agreement"],
        y,
        fmt="o",
        capsize=3,
        xerr=[agree["agreement"] - agree["low"], agree["high"] - agree["agreement"]],
    )
    right.set_yticks(y, agree["method"])
    right.axvline(0, color="grey", lw=0.8)
    right.set_xlabel(
        "agreement with beta (double-centred r); 95% over beta's uncertainty,\n"
        "for random the range of its draws"
    )
    fig.tight_layout()
    return fig
