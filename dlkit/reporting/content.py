"""What a report holds (Report, Table, Picture), the splits it reads and the names of its folder's files. Nothing
here imports torch: the CLI checks a split with it before any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dlkit.errors import UsageError

if TYPE_CHECKING:
    from dlkit.reporting.figures import Chart

SPLITS = ("test", "val")
# what marks a folder as a dlkit report (metrics.json's "format"): such a folder may be written over
FORMAT = "dlkit-report/1"
PAGE, METRICS, FIGURES = "report.html", "metrics.json", "figures.json"


def folder_name(split: str) -> str:
    """The report folder's name inside a run folder."""
    return f"report-{split}"


def check_split(split: str) -> None:
    """A usage error unless the split is one a report reads."""
    from dlkit.errors import did_you_mean

    if split not in SPLITS:
        raise UsageError(f"--split {split}: choose test or val.{did_you_mean(split, SPLITS)}")


@dataclass
class Picture:
    """An image shown in the page itself: a PNG as a data: URL."""

    data_url: str


@dataclass
class Table:
    """A titled table of the page; cells are text, numbers, None or Pictures. `empty`: what the page says when the
    table has no rows."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    empty: str = "none"


@dataclass
class Report:
    """Everything a report shows: about the run, headline metrics, tables, figures, and the examples it picked
    (a classifier's most confident mistakes, a seq2seq's sample translations)."""

    kind: str  # classification, translation or pretraining
    split: str
    about: dict[str, Any]
    metrics: dict[str, Any]
    tables: list[Table]
    charts: list[Chart]
    examples: Table | None
    details: dict[str, Any] = field(default_factory=dict)  # what metrics.json adds (per class, confusion, bins, ...)
