"""The sentences the report opens with, and the share matrix with its intervals, from the
analyze step's own tables (pure: frames in, text out).

Presentation only (provenance.PRESENTATION): no number here feeds a logged table.
"""

from __future__ import annotations

import math

import pandas as pd

from xlinfluence.analysis.bootstrap import CI_HIGH, CI_LOW, high_column, low_column
from xlinfluence.analysis.null import EXCESS, NULL_SHARE
from xlinfluence.analysis.paired import TRANSLATION_EXCESS
from xlinfluence.analysis.shares import SELF_SHARE, SHARE, ZERO_SHOT
from xlinfluence.analysis.topk import (
    CHECKPOINT,
    KIND,
    PROPONENT,
    TEST_LANGUAGE,
    TRAIN_LANGUAGE,
)
from xlinfluence.artifacts import TOTAL

#: The sentence every report keeps, whatever its numbers (docs/findings.md, section 2).
CAVEAT = (
    "These shares describe which training examples' gradients align with a test "
    "example's; docs/findings.md (section 2) found that no attribution's language pattern "
    "agreed with retraining beyond chance, so they are not evidence of which languages the "
    "model learnt from: -P experiment=language-datamodel measures that."
)
_LISTED = 6  # test languages named one by one in the epoch sentence; more: the extremes


def number(value: float, *, signed: bool = False) -> str:
    """0.31, or +0.03 / −0.03 (a typographic minus) when signed; n/a for NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:+.2f}" if signed else f"{value:.2f}"
    return text.replace("-", "\u2212")


def interval(low: float, high: float, *, signed: bool = False) -> str:
    """[0.25, 0.37]; empty where the interval is undefined (NaN)."""
    if any(v is None or math.isnan(v) for v in (low, high)):
        return ""
    return f"[{number(low, signed=signed)}, {number(high, signed=signed)}]"


def with_interval(value: float, low: float, high: float, *, signed: bool = False) -> str:
    """0.31 [0.25, 0.37]"""
    return " ".join(
        part for part in (number(value, signed=signed), interval(low, high, signed=signed)) if part
    )


def summary_sentences(
    shares: pd.DataFrame,
    own: pd.DataFrame,
    translation: pd.DataFrame | None,
    *,
    top_k: int | None = None,
) -> list[str]:
    """Plain sentences from the run's tables: the strongest and weakest cross-language
    proponent share at `total` beside their language-blind null, the own-language share at
    the first and last checkpoint, the translation share's excess over its control at
    `total`, then CAVEAT.

    shares: `with_null` output; own: `self_share_intervals` output; translation:
    `translation_excess` output (or None / empty where the run has none)."""
    out = _cross_sentences(shares, top_k)
    out.append(_epoch_sentence(own))
    out.append(_translation_sentence(translation))
    out.append(CAVEAT)
    return [s for s in out if s]


def _cross_sentences(shares: pd.DataFrame, top_k: int | None) -> list[str]:
    rows = shares[(shares[CHECKPOINT] == TOTAL) & (shares[KIND] == PROPONENT)]
    cross = rows[rows[TEST_LANGUAGE] != rows[TRAIN_LANGUAGE]].reset_index(drop=True)
    if cross.empty:
        return ["No test language has proponents from another training language at total."]
    slots = f"top-{top_k}" if top_k else "top-k"
    values = cross[SHARE].to_numpy(dtype=float)
    strongest, weakest = cross.iloc[int(values.argmax())], cross.iloc[int(values.argmin())]

    def share(row: pd.Series) -> str:
        return with_interval(row[SHARE], row.get(CI_LOW, math.nan), row.get(CI_HIGH, math.nan))

    def beside(row: pd.Series) -> str:
        if NULL_SHARE not in row or math.isnan(row[NULL_SHARE]):
            return ""
        excess = with_interval(row[EXCESS], row.get(low_column(EXCESS), math.nan),
                               row.get(high_column(EXCESS), math.nan), signed=True)  # fmt: skip
        null = number(row[NULL_SHARE])
        return f", beside {null} from a language-blind attribution (excess {excess})"

    def ties(row: pd.Series) -> str:
        n = int((cross[SHARE].round(2) == round(row[SHARE], 2)).sum()) - 1
        return f"; {n} other pair{'s' if n > 1 else ''} also read {number(row[SHARE])}" if n else ""

    def reliance(row: pd.Series) -> str:
        test, train = row[TEST_LANGUAGE], row[TRAIN_LANGUAGE]
        amount = f"{share(row)} of {test}'s {slots} proponents are {train}"
        return f"{test} on {train}: {amount}{beside(row)}{ties(row)}"

    lead = "At the summed checkpoint (total), the strongest cross-language reliance is"
    if len(cross) == 1:
        return [f"{lead} the only one, {reliance(strongest)}."]
    if values.max() == values.min():
        return [f"All {len(cross)} cross-language shares at total are equal: {reliance(weakest)}."]
    weak = f"{weakest[TEST_LANGUAGE]} on {weakest[TRAIN_LANGUAGE]}: {share(weakest)}"
    weak += beside(weakest) + ties(weakest)
    return [f"{lead} {reliance(strongest)}.", f"The weakest is {weak}."]


def _epoch_sentence(own: pd.DataFrame) -> str:
    rows = own[(own[KIND] == PROPONENT) & (own[CHECKPOINT] != TOTAL)]
    if ZERO_SHOT in rows:
        rows = rows[~rows[ZERO_SHOT].astype(bool)]
    checkpoints = list(pd.unique(rows[CHECKPOINT]))
    if not checkpoints:
        return ""
    if len(checkpoints) == 1:
        return (
            f"The run scored one checkpoint ({checkpoints[0]}), so the report shows no change "
            "of the own-language share over epochs."
        )
    first, last = checkpoints[0], checkpoints[-1]
    wide = rows.pivot_table(index=TEST_LANGUAGE, columns=CHECKPOINT, values=SELF_SHARE,
                            sort=False)[[first, last]].dropna()  # fmt: skip
    if wide.empty:
        return ""
    change = wide[last] - wide[first]
    rose, fell = int((change > 0).sum()), int((change < 0).sum())
    same = len(change) - rose - fell
    counts = [f"rose for {rose} of {len(change)} test languages", f"fell for {fell}"]
    if same:
        counts.append(f"stayed for {same}")

    def move(language: str) -> str:
        before, after = number(wide.at[language, first]), number(wide.at[language, last])
        return f"{language} {before} \u2192 {after}"

    if len(change) <= _LISTED:
        listed = ", ".join(move(language) for language in wide.index)
    else:
        extremes = [change.idxmax(), change.idxmin()]
        listed = f"most {move(extremes[0])}, least {move(extremes[1])}"
    return (
        f"From {first} to {last}, the own-language share of proponents "
        f"{', '.join(counts[:-1])} and {counts[-1]} ({listed}; the paired change with its "
        "interval: table self_share_change)."
    )


def _translation_sentence(translation: pd.DataFrame | None) -> str:
    if translation is None or translation.empty:
        return ""
    rows = translation[translation[CHECKPOINT] == TOTAL].dropna(subset=[TRANSLATION_EXCESS])
    if rows.empty:
        return (
            "No translation share could be set against its control at total (no test example "
            "had a cross-language proponent with a translation link)."
        )
    held = rows["p_holm"] < 0.05 if "p_holm" in rows else pd.Series(False, index=rows.index)
    above = int((held & (rows[CI_LOW] > 0)).sum())
    below = int((held & (rows[CI_HIGH] < 0)).sum())
    ordered = rows.sort_values(TRANSLATION_EXCESS, kind="stable")

    def excess(row: pd.Series) -> str:
        value = with_interval(row[TRANSLATION_EXCESS], row[CI_LOW], row[CI_HIGH], signed=True)
        return f"{row[TEST_LANGUAGE]}'s {value}"

    spread = (
        f"is {excess(ordered.iloc[0])}"
        if len(ordered) == 1
        else f"ranges from {excess(ordered.iloc[0])} to {excess(ordered.iloc[-1])}"
    )
    return (
        "The translation share (cross-language proponents that translate an own-language "
        f"one) minus its within-label shuffled control {spread}: above the control for "
        f"{above} of {len(rows)} test languages, below it for {below} (interval excluding 0, "
        "Holm-adjusted p < 0.05)."
    )


def interval_matrix(shares: pd.DataFrame, checkpoint: str, kind: str) -> pd.DataFrame:
    """Test language x training language (the orders of `share_matrix`), each cell
    "0.31 [0.25, 0.37]"."""
    rows = shares[(shares[CHECKPOINT] == checkpoint) & (shares[KIND] == kind)]
    cells = rows.assign(
        _cell=[
            with_interval(r[SHARE], r.get(CI_LOW, math.nan), r.get(CI_HIGH, math.nan))
            for _, r in rows.iterrows()
        ]
    )
    matrix = cells.pivot(index=TEST_LANGUAGE, columns=TRAIN_LANGUAGE, values="_cell")
    return matrix.loc[pd.unique(rows[TEST_LANGUAGE]), pd.unique(rows[TRAIN_LANGUAGE])]
