"""One self-contained HTML page per analysis that leads with the answer.

Top to bottom: sentences from the run's own numbers (report_summary.py), the share matrix
of the summed checkpoint with its intervals, the own-language curves over fine-tuning,
each test language's strongest test examples with their top proponents' texts (the join
of `xlinfluence explain`, explain_join.py), then, folded in `<details>`, the per-checkpoint
heatmaps, the other figures, every table and the run's parameters and lineage.

Figures are embedded as base64 PNGs and the style is inline, so the file opens anywhere
(an artifact viewer, an e-mail) with nothing beside it and no script.
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

import pandas as pd
from matplotlib.figure import Figure

from xlinfluence.analysis.null import NULL_SHARE
from xlinfluence.analysis.plots import share_heatmap
from xlinfluence.analysis.report_summary import (
    CAVEAT,
    interval_matrix,
    number,
    summary_sentences,
)
from xlinfluence.analysis.shares import SHARE, share_matrix
from xlinfluence.analysis.topk import PROPONENT, RANK
from xlinfluence.artifacts import ANALYSIS, TOTAL
from xlinfluence.explain_join import PROPONENTS, examples_from_topk, text_pairs

if TYPE_CHECKING:
    from xlinfluence.explain import ReportExamples

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em auto; max-width: 1150px; color: #222;
       padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.45em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin: 1.2em 0 0.4em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin: 1em 0 0.4em; }
.meta { color: #666; font-size: 0.8em; margin: 0 0 0.8em; }
.lead { background: #f6f8fb; border-left: 4px solid #4a78b5; padding: 0.5em 1em; }
.lead ul { margin: 0.3em 0; padding-left: 1.2em; } .lead li { margin: 0.25em 0; }
.lead .caveat { color: #7a3b00; margin: 0.5em 0 0.2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
table.matrix { font-size: 0.95em; } table.matrix td { white-space: nowrap; padding: 5px 10px; }
table.matrix td.own { outline: 2px solid #333; outline-offset: -2px; font-weight: 600; }
table.matrix small { color: #666; font-weight: normal; display: block; line-height: 1.1; }
.heatmap img { max-height: 300px; } .curves img { max-height: 320px; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; } img { max-width: 100%; }
.figures img { max-width: 540px; } figure { margin: 0; }
.case { border: 1px solid #e3e3e3; border-radius: 4px; padding: 0.4em 0.8em; margin: 0.6em 0; }
.case .test { font-size: 1.02em; margin: 0.2em 0 0.4em; }
.case table { width: 100%; } .case .text { text-align: left; width: 70%; }
.same { color: #1a7f37; font-weight: 600; }
.note { color: #666; font-size: 0.85em; margin: 0.3em 0; }
details { margin: 0.4em 0; } summary { cursor: pointer; font-weight: 600; }
code { background: #f4f4f4; padding: 1px 4px; } .scroll { overflow-x: auto; max-width: 100%; }
"""
#: The analyze tables shown whole; the per-example ones are cut (their files hold them all).
PER_EXAMPLE_ROWS = 200


def render(
    *,
    title: str,
    lineage: dict[str, str],
    params: dict[str, str],
    figures: dict[str, Figure],
    tables: dict[str, pd.DataFrame],
    examples: ReportExamples | None = None,
    top_k: int | None = None,
    cases: int = 3,
    top: int = 5,
) -> str:
    """The report as an HTML string. `tables` and `figures` are the analyze step's, by the
    names it logs them under (shares, self_shares, translation_excess, ...;
    heatmap_<kind>_<checkpoint>, self_share, ...); `examples` feeds the examples section
    (`cases` test examples per test language, `top` proponents each)."""
    heading = html.escape(title)
    figures = dict(figures)
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{heading}</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<style>{_STYLE}</style></head><body><h1>{heading}</h1>",
        _meta(lineage, params),
    ]
    shares, own = tables.get("shares"), tables.get("self_shares")
    if shares is not None and own is not None:
        sentences = summary_sentences(shares, own, tables.get("translation_excess"), top_k=top_k)
        items = "".join(f"<li>{html.escape(s)}</li>" for s in sentences if s != CAVEAT)
        parts.append(
            f"<section class='lead' id='summary'><ul>{items}</ul>"
            f"<p class='caveat'>{html.escape(CAVEAT)}</p></section>"
        )
        parts.append(_matrix_section(shares, top_k))
    if "self_share" in figures:
        parts.append(
            "<h2 id='epochs'>Own-language shares over fine-tuning</h2>"
            "<p class='note'>Each test language's share of its own language among its "
            "proponents at every checkpoint, with its 95% bootstrap band.</p>"
            + f"<div class='curves'>{_figure('self_share', figures.pop('self_share'))}</div>"
        )
    if examples is not None:
        parts.append(_examples_section(examples, lineage.get("analyze run", ""), cases, top))
    parts.append("<h2 id='more'>Everything else</h2>")
    heatmaps = {k: f for k, f in figures.items() if k.startswith("heatmap_")}
    if heatmaps:
        parts.append(_details("Heatmaps per checkpoint", _figures(heatmaps)))
    others = {k: f for k, f in figures.items() if k not in heatmaps}
    if others:
        parts.append(_details("Other figures", _figures(others)))
    parts.append(_tables(tables))
    parts.append(_details("Parameters and lineage", _pairs(lineage) + _pairs(params)))
    parts.append("</body></html>")
    return "\n".join(parts)


# -- sections ---------------------------------------------------------------------------


def _meta(lineage: dict[str, str], params: dict[str, str]) -> str:
    shown = [f"{k} {v}" for k, v in lineage.items() if k.endswith("run") and v]
    shown += [f"{k}={params[k]}" for k in ("top_k",) if k in params]
    if "languages" in params:
        shown.append(f"training languages {params['languages']}")
    return f"<p class='meta'>{html.escape(' · '.join(shown))}</p>"


def _matrix_section(shares: pd.DataFrame, top_k: int | None) -> str:
    slots = f"top-{top_k}" if top_k else "top-k"
    cells = interval_matrix(shares, TOTAL, PROPONENT)
    values = share_matrix(shares, TOTAL, PROPONENT)
    null = None
    if NULL_SHARE in shares:
        null = share_matrix(shares.drop(columns=SHARE).rename(columns={NULL_SHARE: SHARE}),
                            TOTAL, PROPONENT)  # fmt: skip
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cells.columns)
    rows = []
    for test_language in cells.index:
        row = [f"<th>{html.escape(str(test_language))}</th>"]
        for train_language in cells.columns:
            share = float(values.at[test_language, train_language])
            shade = f"background: rgba(74, 120, 181, {0.55 * share:.3f})"
            own = " class='own'" if test_language == train_language else ""
            below = ""
            if null is not None:
                below = f"<small>null {number(float(null.at[test_language, train_language]))}"
                below += "</small>"
            text = html.escape(str(cells.at[test_language, train_language]))
            row.append(f"<td{own} style='{shade}'>{text}{below}</td>")
        rows.append(f"<tr>{''.join(row)}</tr>")
    table = (
        f"<table class='matrix' id='matrix'><tr><th>test \\ train</th>{head}</tr>"
        f"{''.join(rows)}</table>"
    )
    note = (
        f"<p class='note'>Row: test language; cell: the mean share of its test examples' {slots} "
        "proponents from that training language, its 95% bootstrap interval over test "
        "examples, and below it the share of a language-blind attribution (null). Own language "
        "outlined.</p>"
    )
    heatmap = share_heatmap(values, f"top-{top_k or 'k'} proponents, total")
    return (
        f"<h2 id='shares'>Where the proponents come from (total)</h2>{note}"
        f"<div class='row'><div class='scroll'>{table}</div>"
        f"<div class='heatmap'>{_figure('share heatmap, total', heatmap)}</div></div>"
    )


def _examples_section(source: ReportExamples, run_id: str, cases: int, top: int) -> str:
    top = min(top, _kept(source.topk))
    found = examples_from_topk(source.train, source.test, source.topk, top=top, cases=cases,
                               predictions=source.predictions)  # fmt: skip
    pairs = text_pairs(source.train, source.test)
    names = source.label_names

    def label(index: int | None) -> str:
        if index is None:
            return "n/a"
        return names[index] if 0 <= index < len(names) else str(index)

    def text(example: dict) -> str:
        second = pairs.get(example["id"])
        joined = example["text"] if second is None else f"{example['text']} | {second}"
        return html.escape(str(joined))

    command = f"xlinfluence explain --run {run_id or '<analyze run>'} --test-id <id>"
    parts = [
        "<h2 id='examples'>Examples: each test language's strongest cases</h2>"
        f"<p class='note'>Per test language, the {cases} test examples whose top-{top} "
        "proponent scores (total) sum highest, each with those proponents: training "
        "examples whose gradients align most with the test example's. Own-language "
        f"proponents in green. <code>{html.escape(command)}</code> adds the opponents.</p>"
    ]
    for language, explanations in found.items():
        body = []
        for explanation in explanations:
            test = explanation["test"]
            verdict = ""
            if test["prediction"] is not None:
                right = test["prediction"] == test["label"]
                verdict = f", predicted {html.escape(label(test['prediction']))} " + (
                    "(correct)" if right else "(wrong)"
                )
            rows = "".join(
                f"<tr><td>{rank}</td><td class='text'>{text(p)}"
                + (
                    f" <span class='note'>(translates {html.escape(p['translation_of'])})</span>"
                    if p["translation_of"]
                    else ""
                )
                + f"</td><td class='{'same' if p['language'] == language else ''}'>"
                f"{html.escape(p['language'])}</td><td>{html.escape(label(p['label']))}</td>"
                f"<td>{p['score']:.3g}</td></tr>"
                for rank, p in enumerate(explanation[PROPONENTS])
            )
            body.append(
                f"<div class='case'><div class='test'><b>{text(test)}</b></div>"
                f"<div class='note'>test {html.escape(str(test['id']))}, label "
                f"{html.escape(label(test['label']))}{verdict}</div>"
                "<table><tr><th>#</th><th class='text'>proponent</th><th>language</th>"
                f"<th>label</th><th>score</th></tr>{rows}</table></div>"
            )
        parts.append(
            f"<details open><summary>test language {html.escape(language)}</summary>"
            f"{''.join(body)}</details>"
        )
    return "\n".join(parts)


def _tables(tables: dict[str, pd.DataFrame]) -> str:
    parts = []
    for name, frame in tables.items():
        cut = ("per_example" in name or name == "example_shares") and len(frame) > PER_EXAMPLE_ROWS
        shown = frame.head(PER_EXAMPLE_ROWS) if cut else frame
        note = f", first {PER_EXAMPLE_ROWS} of {len(frame)} rows" if cut else ""
        body = (
            f"<p class='note'>{ANALYSIS}/{html.escape(name)}.parquet and .csv hold it "
            f"whole; its columns: docs/analysis.md.</p>"
            + "<div class='scroll'>"
            + shown.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="–")
            + "</div>"
        )
        parts.append(_details(f"Table {name} ({len(frame)} rows{note})", body))
    return "\n".join(parts)


# -- pieces -----------------------------------------------------------------------------


def _kept(topk: pd.DataFrame) -> int:
    """Proponents per test example in the top-k table (its k)."""
    return int(topk[RANK].max()) + 1 if len(topk) else 0


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def _figure(caption: str, figure: Figure) -> str:
    return (
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,"
        f"{_png(figure)}'></figure>"
    )


def _figures(figures: dict[str, Figure]) -> str:
    return (
        "<div class='figures'>"
        + "".join(
            f"<figure><img alt='{html.escape(c)}' src='data:image/png;base64,{_png(f)}'>"
            f"<figcaption>{html.escape(c)}</figcaption></figure>"
            for c, f in figures.items()
        )
        + "</div>"
    )


def _pairs(values: dict[str, str]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td><code>{html.escape(str(v))}</code></td></tr>"
        for k, v in values.items()
    )
    return f"<table>{rows}</table>"


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
