"""HTML building blocks of ``report.html`` shared by the report and the experiments' sections."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..engine.ablation import ARROW

__all__ = ["DISPLAY_ARROW", "Figures", "arrow", "easy_note", "esc", "figure", "kv", "missing", "num", "pval", "table"]


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any, fmt) -> str:
    """``fmt(x)`` for a number, "–" for NaN, the escaped text for anything else."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return esc(value)
    return "–" if math.isnan(x) else fmt(x)


def num(value: Any, digits: int = 3) -> str:
    return _number(value, lambda x: f"{x:.{digits}f}")


def pval(value: Any) -> str:
    return _number(value, lambda x: "0" if x == 0 else f"{x:.3f}" if x >= 0.001 else f"{x:.1e}")


#: How the spec arrow :data:`matchsig.engine.ablation.ARROW` (``<-``, ASCII: what specs, files and the
#: command line use) is displayed in figures and pages (``&larr;`` in HTML).
DISPLAY_ARROW = "\u2190"


def arrow(text: str) -> str:
    """``text`` escaped for HTML with every spec arrow displayed as :data:`DISPLAY_ARROW`."""
    return esc(text).replace(esc(ARROW), "&larr;")


def missing(what: str, experiment: str) -> str:
    return f'<p class="missing">Not run: {esc(what)} is missing from this run folder (experiment <code>{esc(experiment)}</code> was not run, or not finished).</p>'


def table(frame: pd.DataFrame, formats: dict[str, Any] | None = None, classes: str = "data") -> str:
    formats = formats or {}
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for c in frame.columns:
            fmt = formats.get(c)
            value = row[c]
            text = fmt(value) if fmt else esc(value)
            cells.append(f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def kv(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def json_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"<code>{esc(json.dumps(value))}</code>"
    if value is None:
        return "<code>null</code>"
    return esc(value)


class Figures(dict):
    """{file name: path} of the drawn figures, with ``errors`` {file name: why it could not be drawn}."""

    errors: dict[str, str] = {}


def figure(figures: dict[str, Path], name: str, caption: str) -> str:
    """An embedded PNG (base64 data URI) with its caption, or why it could not be drawn ("" when absent)."""
    path = figures.get(name)
    errors = getattr(figures, "errors", {})
    if name in errors:
        return f'<p class="missing">{esc(name)} could not be drawn: {esc(errors[name])}</p>'
    if path is None or not Path(path).is_file():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def easy_note(run) -> str:
    """Where the contrast pool's easy negatives come from (with the summary's warning, if any)."""
    contrast = (run.summary.get("pools") or {}).get("contrast") or {}
    sources = contrast.get("easy_negatives_from") or {}
    if not sources:
        return ""
    items = "".join(f"<li><code>{esc(k)}</code>: {esc(v.get('description', v.get('source', '?')))}</li>" for k, v in sources.items())
    warning = contrast.get("easy_negatives_warning")
    cls = "note" if warning else "muted"
    text = f"<b>Warning.</b> {esc(warning)}." if warning else ""
    return f'<div class="{cls}"><b>Easy negatives (grade &minus;1) were drawn from:</b><ul>{items}</ul>{text}</div>'
