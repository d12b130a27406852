"""Small HTML page builder and number formatting shared by the tear sheets.

Pages are self-contained (inline CSS, no script, images by relative link) so they open from
disk, in a CI browser or behind a file server without network access.

Examples
--------
>>> fmt_pct(0.12345), fmt_bps(0.00042), fmt_num(1234567.891), fmt_pct(float("nan"))
('12.35%', '4.2 bps', '1,234,567.89', '–')
>>> page = Page("Demo")
>>> page.heading("Numbers")
>>> page.table(pd.DataFrame({"x": [0.1]}), formats={"x": fmt_pct})
>>> "<td>10.00%</td>" in page.render()
True
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from qilin.atomic import atomic_path, write_text_atomic

Formatter = Callable[[Any], str]

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;border-bottom:2px solid #335;padding-bottom:.2em}
h2{font-size:1.2em;margin-top:1.8em;color:#335}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccd;padding:3px 8px;text-align:right}
th{background:#eef0f6}td:first-child,th:first-child{text-align:left}
tr.flag td{background:#fde8e8}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.note{color:#555;font-size:.9em}.grid{display:flex;flex-wrap:wrap;gap:1em}
.kpi{border:1px solid #ccd;border-radius:6px;padding:.5em 1em;min-width:8em}
.kpi b{display:block;font-size:1.3em}.ok{color:#176b2c}.failed{color:#b00020}
"""


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def fmt_pct(v: Any, digits: int = 2) -> str:
    """A fraction as a percentage (``0.1 -> '10.00%'``); NaN/None as an en dash."""
    return f"{float(v) * 100:.{digits}f}%" if _finite(v) else "–"


def fmt_bps(v: Any) -> str:
    """A fraction in basis points (``0.0001 -> '1.0 bps'``)."""
    return f"{float(v) * 1e4:.1f} bps" if _finite(v) else "–"


def fmt_num(v: Any, digits: int = 2) -> str:
    """A number with thousands separators."""
    return f"{float(v):,.{digits}f}" if _finite(v) else "–"


def fmt_ratio(v: Any) -> str:
    """A ratio such as Sharpe or beta (two decimals)."""
    return f"{float(v):.2f}" if _finite(v) else "–"


def fmt_ic(v: Any) -> str:
    """An information coefficient (four decimals)."""
    return f"{float(v):.4f}" if _finite(v) else "–"


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def new_figure(nrows: int = 1, ncols: int = 1, sharex: bool = False,
               **kw: Any) -> tuple[Any, Any]:
    """A matplotlib ``Figure`` (Agg, not pyplot: no global state) and its axes array."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    return fig, fig.subplots(nrows, ncols, squeeze=False, sharex=sharex)


class Page:
    """An HTML page assembled from headings, paragraphs, tables and images."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, cls: str = "") -> None:
        attr = f" class='{cls}'" if cls else ""
        self.parts.append(f"<p{attr}>{html.escape(text)}</p>")

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def kpis(self, items: Mapping[str, str]) -> None:
        cells = "".join(f"<div class='kpi'>{html.escape(k)}<b>{html.escape(v)}</b></div>"
                        for k, v in items.items())
        self.parts.append(f"<div class='grid'>{cells}</div>")

    def table(self, df: pd.DataFrame, formats: Mapping[str, Formatter] | None = None,
              default: Formatter | None = None, index: bool = True,
              flag: pd.Series | None = None) -> None:
        """A table; ``formats`` per column, ``default`` for the others, ``flag`` marks rows."""
        formats = formats or {}
        head = ([html.escape(str(df.index.name or ""))] if index else []) + \
            [html.escape(str(c)) for c in df.columns]
        rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
        for i, (key, row) in enumerate(df.iterrows()):
            cells = [html.escape(str(key))] if index else []
            for col, v in row.items():
                f = formats.get(str(col), default)
                cells.append(html.escape(f(v) if f is not None else str(v)))
            cls = " class='flag'" if flag is not None and bool(flag.iloc[i]) else ""
            rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        self.parts.append("<table>" + "".join(rows) + "</table>")

    def image(self, name: str, alt: str) -> None:
        self.parts.append(f"<img src='{html.escape(name)}' alt='{html.escape(alt)}'>")

    def render(self) -> str:
        return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head><body>"
                + "\n".join(self.parts) + "</body></html>\n")

    def write(self, path: str | Path) -> Path:
        return write_text_atomic(path, self.render())
