"""What preparing a dataset shows while it runs: one progress line per pass over the data (rows done, rows per
second, size written), on a terminal; nothing elsewhere (the run's train.log gets the summary line)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dlkit.ui import console


class Pass:
    """One pass over the rows (counting, training the tokenizer, encoding): call advance() as rows go by."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task, self.rows, self.written = progress, task, 0, 0

    def advance(self, rows: int, written: int = 0) -> None:
        self.rows += rows
        self.written += written
        if self._progress is not None:
            self._progress.update(self._task, advance=rows, written=human_size(self.written))


@contextmanager
def preparing() -> Iterator[Any]:
    """A context whose value starts passes: `with preparing() as show: p = show("Encoding", total_rows)`."""
    if not console.is_terminal:
        yield lambda description, total=None: Pass(None, None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:,.0f} rows/s" if task.speed else "")

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
               RowsPerSecond(), TextColumn("{task.fields[written]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        yield lambda description, total=None: Pass(progress, progress.add_task(description, total=total,
                                                                               written=""))


def human_size(count: float) -> str:
    """12.3 MB, 512 B ('' for 0)."""
    if not count:
        return ""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return ""
