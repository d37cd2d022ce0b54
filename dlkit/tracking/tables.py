"""Print a table as a Rich table, CSV, JSON or Markdown."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

FORMATS = ("table", "csv", "json", "markdown")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def render(header: list[str], rows: list[list[Any]], fmt: str = "table", title: str | None = None,
           highlight: int | None = None, mark_best: bool = False) -> str | None:
    """CSV/JSON/Markdown text to print, or None after printing a Rich table.

    highlight: the best row, shown bold green in a Rich table; with mark_best, CSV, JSON and Markdown get a
    `best` column saying which row it is (true/false; `yes` in Markdown).
    """
    if mark_best and fmt != "table":
        marks = {"csv": ("true", "false"), "markdown": ("yes", "")}.get(fmt, (True, False))
        header = [*header, "best"]
        rows = [[*row, marks[0] if number == highlight else marks[1]] for number, row in enumerate(rows)]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return out.getvalue()
    if fmt == "json":
        return json.dumps([dict(zip(header, row)) for row in rows], indent=2, default=str)
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_cell(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |"
                  for row in rows]
        return "\n".join(lines)
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # values are text, not Rich markup: `tags=[sweep1]` must keep its brackets
    table = Table(title=escape(title) if title else None, header_style="bold")
    for column in header:
        table.add_column(escape(column), overflow="fold")
    for number, row in enumerate(rows):
        table.add_row(*(escape(_cell(v)) for v in row), style="bold green" if number == highlight else None)
    console = Console()
    Console(width=max(console.width, 140) if not console.is_terminal else None).print(table)
    return None
