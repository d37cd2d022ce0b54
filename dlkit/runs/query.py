"""Finding run folders (a path, a run id or `latest`) and what `dlkit runs list | compare | show` print. No torch
import."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from dlkit.config import metric_mode
from dlkit.errors import UsageError
from dlkit.runs.records import CONFIG, SUMMARY, process_alive, read_json

STATUSES = ("running", "finished", "failed", "interrupted")


@dataclass
class Run:
    """What a run folder says about its run."""

    path: Path
    summary: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Run:
        config = yaml.safe_load((path / CONFIG).read_text(encoding="utf-8")) or {}
        return cls(path, read_json(path / SUMMARY), config)

    @property
    def id(self) -> str:
        """The hex suffix of the folder name; multirun jobs: `<multirun id>/<job>`."""
        if "-" in self.path.name:
            return self.path.name.rsplit("-", 1)[-1]
        return f"{self.path.parent.name.rsplit('-', 1)[-1]}/{self.path.name}"

    @property
    def status(self) -> str:
        """running / finished / failed / interrupted; a 'running' run whose process is gone was interrupted."""
        status = self.summary.get("status", "unknown")
        if status == "running" and process_alive(self.summary.get("pid"), self.summary.get("host"),
                                                             self.summary.get("pid_started")) is False:
            return "interrupted"
        return status

    @property
    def started(self) -> str:
        return self.summary.get("started", "")

    def choice(self, group: str) -> str:
        return (self.summary.get("choices") or {}).get(group, "")

    @property
    def metric_name(self) -> str:
        return self.summary.get("optimized_metric") or self.config.get("optimized_metric") or "val/acc"

    def best(self) -> float | None:
        """The best value of the optimized metric (from summary.json, else from metrics.csv)."""
        value = (self.summary.get("metrics") or {}).get("optimized_metric")
        if value is not None:
            return value
        curve = [v for _, v in self.curve(self.metric_name)]
        if not curve:
            return None
        return min(curve) if metric_mode(self.metric_name) == "min" else max(curve)

    def curve(self, metric: str) -> list[tuple[float, float]]:
        """(step, value) pairs of a metric from metrics.csv."""
        path = self.path / "metrics.csv"
        if not path.is_file():
            return []
        with open(path, encoding="utf-8") as handle:
            return [(float(row.get("step") or 0), float(row[metric])) for row in csv.DictReader(handle)
                    if row.get(metric)]

    def final_metrics(self) -> dict[str, float]:
        return {k: v for k, v in (self.summary.get("metrics") or {}).items() if k.startswith(("val/", "test/"))}


def load_runs(root: str | Path, status: str | None = None, model: str | None = None, data: str | None = None,
              multirun: bool | None = None) -> list[Run]:
    """Runs under root, newest first, filtered by status, model, data and whether they belong to a multirun."""
    runs = [Run.load(p) for p in find_runs(root)]
    return [r for r in runs
            if (status is None or r.status == status) and (model is None or r.choice("model") == model)
            and (data is None or r.choice("data") == data)
            and (multirun is None or ("multirun" in r.path.parts) == multirun)]


def duration(run: Run) -> str:
    seconds = run.summary.get("duration_s")
    if seconds is None and run.status == "running" and run.started:
        seconds = (datetime.now() - datetime.fromisoformat(run.started)).total_seconds()
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config as dotted keys."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, child in value.items():
            flat.update(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def differing_config(runs: list[Run]) -> dict[str, list[Any]]:
    """Config keys whose values differ between the runs (run-specific paths left out)."""
    flats = [flatten(r.config) for r in runs]
    keys = sorted(set().union(*flats))

    def own_path(key: str) -> bool:  # values that differ only because each names its own run folder
        return all(str(f.get(key, "")).startswith(str(f.get("paths.run_dir") or "\0")) for f in flats)

    return {k: [f.get(k) for f in flats] for k in keys
            if k != "paths.multirun_dir" and not own_path(k)
            and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1}


def comparison(runs: list[Run], metric: str | None = None) -> tuple[list[str], list[list[Any]], int | None]:
    """Header, one row per run (id, differing config values, best metric, final metrics) and the best row."""
    metric = metric or runs[0].metric_name
    differing = differing_config(runs)
    finals = sorted(set().union(*(r.final_metrics() for r in runs)))
    header = ["run", "status", *differing, f"best {metric}", *finals]
    rows, values = [], []
    for i, run in enumerate(runs):
        best = run.best() if metric == run.metric_name else _best_of_curve(run, metric)
        values.append(best)
        rows.append([run.id, run.status, *(differing[k][i] for k in differing), best,
                     *(run.final_metrics().get(m) for m in finals)])
    return header, rows, best_index(values, metric)


def best_index(values: list[float | None], metric: str) -> int | None:
    """Position of the best value (the lowest for losses and perplexities, else the highest; the first of equals)."""
    scored = [(v, i) for i, v in enumerate(values) if v is not None and v == v]  # v == v: not NaN
    if not scored:
        return None
    if metric_mode(metric) == "min":
        return min(scored)[1]
    return max(scored, key=lambda pair: (pair[0], -pair[1]))[1]


def natural_key(path: Path) -> list[Any]:
    """Sort key reading the numbers in a path as numbers: multirun job 2 before job 10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _best_of_curve(run: Run, metric: str) -> float | None:
    final = run.final_metrics().get(metric)
    curve = [v for _, v in run.curve(metric)]
    if not curve:
        return final
    return min(curve) if metric_mode(metric) == "min" else max(curve)


def plot_curves(runs: list[Run], metric: str, path: Path) -> Path:
    """A PNG of the metric's curve for every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    plotted = 0
    for run in runs:
        points = run.curve(metric)
        if points:
            steps, values = zip(*points)
            axis.plot(steps, values, marker="o", markersize=3, label=f"{run.id} ({run.choice('model')})")
            plotted += 1
    if not plotted:
        raise UsageError(f"no run has a {metric!r} curve in metrics.csv; try --metric val/loss.")
    axis.set_xlabel("step")
    axis.set_ylabel(metric)
    axis.set_title(f"{metric} by run")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def is_run_folder(path: Path) -> bool:
    """A folder dlkit wrote a run into."""
    return (path / SUMMARY).is_file() and (path / CONFIG).is_file()


def folder_of_file(path: Path) -> Path:
    """The run folder a file of it would be in: <run>/checkpoints/x.ckpt or <run>/x (a run folder only if it is one)."""
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def find_runs(root: str | Path) -> list[Path]:
    """Every run folder under root (a run folder itself counts), newest first."""
    root = Path(root)
    if is_run_folder(root):
        return [root]
    runs = [p.parent for p in root.rglob(SUMMARY) if (p.parent / CONFIG).is_file()] if root.is_dir() else []
    return sorted(runs, key=lambda p: (read_json(p / SUMMARY).get("started", ""), str(p)), reverse=True)


def latest_multirun(output_dir: str | Path = "outputs") -> Path:
    """The newest multirun folder under output_dir (outputs/multirun/<date>/<time>-<id>)."""
    folders = sorted(Path(output_dir).glob("multirun/*/*"), key=lambda p: (p.parent.name, p.name))
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        raise UsageError(f"--multirun latest: no multirun under {output_dir}; run one first (dlkit train -m ...).")
    return folders[-1]


def find_run(ref: str | Path, output_dir: str | Path = "outputs") -> Path:
    """A run folder from a path (folder or a checkpoint file inside it), a run id (the hex suffix), or `latest`."""
    path = Path(ref).expanduser()
    if path.is_file():
        path = folder_of_file(path)
    if is_run_folder(path):
        return path.resolve()
    runs = find_runs(output_dir)
    if str(ref) == "latest":
        if not runs:
            raise UsageError(f"no runs under {output_dir}: train one first (dlkit train).")
        return runs[0].resolve()
    matches = [r for r in runs if r.name.endswith(f"-{ref}") or r.name == str(ref)
               or f"{r.parent.name}/{r.name}".endswith(str(ref))]
    if len(matches) == 1:
        return matches[0].resolve()
    if len(matches) > 1:
        raise UsageError(f"run id {ref!r} matches {len(matches)} runs under {output_dir}; give the folder path.")
    raise UsageError(f"no run {ref!r}: give a run folder, a run id (e.g. 9af716) or `latest` "
                     f"(see `dlkit runs list {output_dir}`).")
