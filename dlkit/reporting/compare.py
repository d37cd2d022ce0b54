"""`dlkit runs compare --report`: several runs' reports side by side in one page, each report made when it is
missing or older than the run's checkpoint."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlkit.reporting.content import FIGURES, FORMAT, METRICS, PAGE, folder_name
from dlkit.runs import checkpoints, records

# headline metrics where lower is better, where 1 is best (the others: higher is better); counts are not ranked
LOWER_IS_BETTER = {"ece", "log_loss", "mlm_perplexity"}
ONE_IS_BEST = {"length_ratio"}
UNRANKED = {"examples", "masked_tokens"}


def up_to_date(run: Path, split: str) -> bool:
    """Whether RUN/report-<split> is a report of that split, made without overrides, of the checkpoint the run would
    be reported from now."""
    recorded = records.read_json(run / folder_name(split) / METRICS)
    about = recorded.get("run") or {}
    if recorded.get("format") != FORMAT or recorded.get("split") != split or about.get("overrides"):
        return False
    _, checkpoint = checkpoints.locate(str(run), str(run.parent))
    return about.get("checkpoint") == str(checkpoint.resolve()) and about.get("checkpoint_time") == \
        checkpoint.stat().st_mtime


def compare(runs: list[Path], split: str, target: Path, make: Callable[[Path], None]) -> Path:
    """The comparison page of the runs' reports on the split, written to target; `make(run)` writes a run's report
    where it is missing or out of date."""
    import plotly.io

    from dlkit.reporting import page

    for run in runs:
        if not up_to_date(run, split):
            make(run)
    folders = [run / folder_name(split) for run in runs]
    reports = [records.read_json(folder / METRICS) for folder in folders]
    plotted = [json.loads((folder / FIGURES).read_text(encoding="utf-8")) for folder in folders]
    names = list(dict.fromkeys(name for report in reports for name in report["metrics"]))
    best = {name: _best(name, [report["metrics"].get(name) for report in reports]) for name in names}
    summaries = [{"run": report["run"]["run"], "model": report["run"]["model"], "metrics": report["metrics"],
                  "best": {name: best[name] == number for name in names},
                  "link": os.path.relpath(folder / PAGE, target.parent)}
                 for number, (folder, report) in enumerate(zip(folders, reports))]
    figure_names = list(dict.fromkeys(name for figures in plotted for name in figures))
    figure_rows = [(name, [page.figure_html(plotly.io.from_json(json.dumps(figures[name])), f"{name}-{number}")
                           if name in figures else None for number, figures in enumerate(plotted)])
                   for name in figure_names]
    return page.write_comparison(summaries, names, _class_rows(reports), figure_rows, split, target)


def _best(name: str, values: list[Any]) -> int | None:
    """The position of the best value of a metric among the runs (None: not ranked, or no values)."""
    numbers = [(v, i) for i, v in enumerate(values) if isinstance(v, (int, float))]
    if name in UNRANKED or len(numbers) < 2:
        return None
    if name in ONE_IS_BEST:
        return min(numbers, key=lambda p: (abs(p[0] - 1), p[1]))[1]
    return (min(numbers) if name in LOWER_IS_BETTER else max(numbers, key=lambda p: (p[0], -p[1])))[1]


def _class_rows(reports: list[dict[str, Any]]) -> list[list[Any]]:
    """F1 per class (rows) and run (columns), for classifiers' reports."""
    if not all(report.get("classes") for report in reports):
        return []
    f1 = [{row["class"]: row["f1"] for row in report["classes"]} for report in reports]
    classes = list(dict.fromkeys(name for scores in f1 for name in scores))
    return [[name, *(scores.get(name) for scores in f1)] for name in classes]
