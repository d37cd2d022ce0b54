"""What dlkit shows a person in the terminal: one Rich console, a status line while a run starts, tables (as Rich
tables, CSV, JSON or Markdown), and how much third-party output gets through.

Without --verbose, Python warnings and Lightning's notes ("GPU available: ...", "Restoring states ...") go to the
run's train.log only (records.log_to); with --verbose they reach the terminal as well. Nothing here imports torch.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

console = Console()
_verbose = False
# the loggers of the libraries whose notes dlkit keeps out of the terminal unless asked
THIRD_PARTY = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric", "py.warnings")


def set_verbose(verbose: bool) -> None:
    """--verbose: tracebacks, warnings and every library note on the terminal."""
    global _verbose
    _verbose = verbose


def verbose() -> bool:
    return _verbose


def quiet_third_party() -> None:
    """Let library notes reach the terminal only at WARNING (all of them with --verbose), and warnings only with
    --verbose; both still reach train.log, whose handler records.log_to attaches to the same loggers.

    A handler on the root logger, made before Lightning is imported, keeps Lightning from adding its own; where it
    was imported already, its own handler is turned down instead.
    """
    level = logging.INFO if _verbose else logging.WARNING
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    for handler in root.handlers:
        if _is_terminal_handler(handler):
            handler.setLevel(level)
    for name in THIRD_PARTY[:-1]:
        for handler in logging.getLogger(name).handlers:
            if _is_terminal_handler(handler):
                handler.setLevel(level)
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.propagate = _verbose
    if not warnings_logger.handlers:  # no handler at all would make logging print them anyway (its last resort)
        warnings_logger.addHandler(logging.NullHandler())


def _is_terminal_handler(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


@contextmanager
def status(text: str) -> Iterator[None]:
    """A spinner with `text` while the block runs, on a terminal; nothing elsewhere (logs, pipes, tests)."""
    if not console.is_terminal:
        yield
        return
    with console.status(text, spinner="dots"):
        yield


# -- tables -------------------------------------------------------------------------------------------------------
FORMATS = ("table", "csv", "json", "markdown")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def render_table(header: list[str], rows: list[list[Any]], fmt: str = "table", title: str | None = None,
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
