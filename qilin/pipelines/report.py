"""The HTML report of a run: each executed notebook through nbconvert, and an index page.

``runs/<run_id>/index.html`` lists the run's status, parameters, data, headline results and
every step (status, time, executed notebook page, tear sheets); ``runs/<run_id>/report/
<step>.html`` is the step's notebook with its outputs, images embedded. Pages load nothing
from the network.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from qilin.atomic import write_text_atomic
from qilin.reports.html import Page

TEAR_SHEETS = ("tear_sheet.html", "factor_tear_sheet.html")


def notebook_html(notebook: Path) -> str:
    """An executed notebook as a self-contained HTML page (no scripts from the network)."""
    import logging

    import nbformat
    from nbconvert import HTMLExporter

    logging.getLogger("traitlets").setLevel(logging.ERROR)  # "alternative text is missing"
    exporter = HTMLExporter(template_name="lab", embed_images=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    exporter.mathjax_url = ""
    exporter.require_js_url = ""
    exporter.widget_renderer_url = ""
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4))
    return body


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def write_report(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write ``report/<step>.html`` for each executed step and ``index.html``; return it."""
    report_dir = run_dir / "report"
    report_dir.mkdir(exist_ok=True)
    page = Page(f"qilin run {manifest['run_id']}")
    status = manifest["status"]
    page.raw(f"<p>pipeline <b>{html.escape(manifest['pipeline']['name'])}</b>: status "
             f"<b class='{'ok' if status == 'ok' else 'failed'}'>{html.escape(status)}</b> in "
             f"{manifest.get('duration_s') or 0:.1f}s; started {manifest['started']}; "
             f"git {html.escape(str(manifest.get('git_commit'))[:12])}; cluster "
             f"{html.escape(str(manifest.get('cluster', {}).get('mode')))}</p>")
    data = manifest.get("data") or {}
    if data:
        page.paragraph(f"data: {data.get('source')}, {data.get('n_dates')} dates x "
                       f"{data.get('n_symbols')} symbols, {data.get('first_date')} to "
                       f"{data.get('last_date')}, fingerprint "
                       f"{str(data.get('data_fingerprint'))[:16]}", "note")
    page.heading("Steps")
    rows = []
    for name, entry in manifest["steps"].items():
        folder = run_dir / name
        links = []
        executed = folder / Path(entry["notebook"]).name
        if executed.is_file():
            try:
                write_text_atomic(report_dir / f"{name}.html", notebook_html(executed))
                links.append(f"<a href='report/{name}.html'>notebook</a>")
            except Exception as exc:  # a broken notebook must not hide the run's report
                links.append(f"notebook not rendered ({html.escape(type(exc).__name__)})")
        links += [f"<a href='{name}/{sheet}'>{sheet.replace('_', ' ')[:-5]}</a>"
                  for sheet in TEAR_SHEETS if (folder / sheet).is_file()]
        err = entry.get("error") or {}
        note = f"{err.get('ename', '')}: {err.get('evalue', '')}".strip(": ") if err else ""
        if entry.get("reused_from"):
            note = f"reused from {entry['reused_from']}"
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
            html.escape(name), html.escape(Path(entry["notebook"]).name),
            f"<span class='{'ok' if entry['status'] in ('ok', 'cached') else 'failed'}'>"
            f"{html.escape(entry['status'])}</span>",
            f"{entry.get('duration_s') or 0:.1f}s", " · ".join(links),
            html.escape(note.splitlines()[0] if note else ""))) + "</tr>")
    page.raw("<table><tr><th>step</th><th>notebook</th><th>status</th><th>time</th>"
             "<th>pages</th><th>note</th></tr>" + "".join(rows) + "</table>")
    results = [(step, k, _format_value(v)) for step, res in manifest.get("results", {}).items()
               for k, v in res.items() if k != "data_fingerprint"]
    if results:
        page.heading("Headline results")
        page.table(pd.DataFrame(results, columns=["step", "result", "value"]), index=False)
    page.heading("Parameters")
    params = [(step, k, _format_value(v)) for step, values in manifest["parameters"].items()
              for k, v in values.items()]
    page.table(pd.DataFrame(params, columns=["step", "parameter", "value"]), index=False)
    page.heading("Versions")
    page.table(pd.DataFrame(list(manifest["versions"].items()), columns=["package", "version"]),
               index=False)
    page.paragraph("Everything above is in manifest.json next to this page.", "note")
    return page.write(run_dir / "index.html")
