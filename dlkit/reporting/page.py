"""The HTML pages: one report (report.html) and several side by side (`runs compare --report`), rendered with Jinja2
from the templates beside this file. Each page carries plotly.js inline, so it opens offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlkit.reporting.content import Report

if TYPE_CHECKING:
    import jinja2
    import plotly.graph_objects as go

TEMPLATES = Path(__file__).parent / "templates"


def _environment() -> jinja2.Environment:
    """Jinja2 over the templates: HTML escaped, an undefined name an error, the `number` and `label` filters."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["number"] = number
    environment.filters["label"] = lambda name: str(name).replace("_", " ")
    return environment


def number(value: Any) -> str:
    """A table cell: floats to four significant decimals, None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def figure_html(figure: go.Figure, name: str) -> str:
    """A plotly figure as a <div> and the script that draws it (plotly.js itself is in the page's head)."""
    import plotly.io

    return plotly.io.to_html(figure, full_html=False, include_plotlyjs=False, div_id=name,
                             config={"displaylogo": False, "responsive": True})


def _write(html: str, target: Path) -> Path:
    """Write atomically: a page is whole or absent."""
    staging = target.with_name(f".{target.name}.tmp")
    staging.write_text(html, encoding="utf-8")
    os.replace(staging, target)
    return target


def write_report(report: Report, plotted: dict[str, go.Figure], target: Path) -> Path:
    """report.html of one Report, its figures (plotly) by chart name."""
    from plotly.offline import get_plotlyjs

    page = _environment().get_template("report.html.j2").render(
        report=report, plotly_js=get_plotlyjs(),
        figures=[(name, figure_html(figure, f"figure-{name}")) for name, figure in plotted.items()])
    return _write(page, target)


def write_comparison(runs: list[dict[str, Any]], metric_names: list[str], class_rows: list[list[Any]],
                     figure_rows: list[tuple[str, list[str | None]]], split: str, target: Path) -> Path:
    """One page of several reports: a row of headline metrics per run, F1 per class and run, and each figure of the
    runs side by side (figure_rows: (name, each run's figure HTML or None))."""
    from plotly.offline import get_plotlyjs

    page = _environment().get_template("compare.html.j2").render(
        runs=runs, metric_names=metric_names, class_rows=class_rows, figure_rows=figure_rows, split=split,
        plotly_js=get_plotlyjs())
    return _write(page, target)
