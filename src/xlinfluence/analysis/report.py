"""One self-contained HTML page per analysis: figures, tables, parameters and lineage.

Figures are embedded as base64 PNGs, so the file opens anywhere (an artifact viewer, an
e-mail) with nothing beside it.
"""

from __future__ import annotations

import base64
import html
import io

import pandas as pd
from matplotlib.figure import Figure

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; } .figures img { max-width: 520px; }
code { background: #f4f4f4; padding: 1px 4px; }
"""


def render(
    *,
    title: str,
    lineage: dict[str, str],
    params: dict[str, str],
    figures: dict[str, Figure],
    tables: dict[str, pd.DataFrame],
    max_rows: int = 60,
) -> str:
    """The report as an HTML string; tables longer than max_rows are cut (the full ones are
    logged beside it as Parquet and CSV)."""
    heading = html.escape(title)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{heading}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{heading}</h1>"
    ]
    parts.append("<h2>Lineage</h2>" + _pairs(lineage))
    parts.append("<h2>Parameters</h2>" + _pairs(params))
    parts.append("<h2>Figures</h2><div class='figures'>")
    for caption, figure in figures.items():
        parts.append(
            f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,"
            f"{_png(figure)}'><figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("</div>")
    for name, frame in tables.items():
        shown = frame.head(max_rows)
        note = f" (first {max_rows} of {len(frame)} rows)" if len(frame) > max_rows else ""
        parts.append(f"<h2>{html.escape(name)}{note}</h2>")
        parts.append(shown.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="–"))
    parts.append("</body></html>")
    return "\n".join(parts)


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
