"""`dlkit runs list | compare | show`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from dlkit.cli.app import FormatOption, emit, number_text, runs_app, table_format
from dlkit.errors import UsageError


@runs_app.command("list")
def runs_list(
    path: str = typer.Argument("outputs", help="Folder to search for runs."),
    status: Optional[str] = typer.Option(None, help="running, finished, failed or interrupted."),  # noqa: UP045
    model: Optional[str] = typer.Option(None, help="Only runs of this model option."),  # noqa: UP045
    data: Optional[str] = typer.Option(None, help="Only runs of this data option."),  # noqa: UP045
    multirun: Optional[bool] = typer.Option(None, "--multirun/--single", help="Only multirun jobs, or none."),  # noqa: UP045
    fmt: str = FormatOption,
) -> None:
    """Runs under PATH, newest first: when, name, model, data, trainer, status, duration, best metric."""
    from dlkit import ui
    from dlkit.errors import did_you_mean
    from dlkit.runs import query

    fmt = table_format(fmt)
    if status is not None and status not in query.STATUSES:
        raise UsageError(f"--status {status}: choose {', '.join(query.STATUSES[:-1])} or {query.STATUSES[-1]}."
                         f"{did_you_mean(status, query.STATUSES)}")
    _runs_folder(path, "PATH", "the folder that holds the runs")
    found = query.load_runs(path, status, model, data, multirun)
    rows = [[r.id, r.started.replace("T", " "), r.summary.get("name"), r.choice("model"), r.choice("data"),
             r.choice("trainer"), r.status, query.duration(r), f"{r.metric_name} {number_text(r.best())}",
             os.path.relpath(r.path)] for r in found]
    header = ["id", "started", "name", "model", "data", "trainer", "status", "duration", "best", "folder"]
    emit(ui.render_table(header, rows, fmt, title=f"{len(rows)} runs under {path}"))


def _runs_folder(path: str, what: str, expected: str) -> None:
    """A usage error (exit 2) unless path is a folder."""
    if not Path(path).expanduser().is_dir():
        hint = "train a run first (dlkit train), or give" if path == "outputs" else "give"
        raise UsageError(f"{what} {path}: no such folder; {hint} {expected}.")


@runs_app.command("compare")
def runs_compare(
    refs: Optional[list[str]] = typer.Argument(None, help="Runs: folders, ids or latest."),  # noqa: UP045
    multirun: Optional[str] = typer.Option(  # noqa: UP045
        None, "--multirun", help="Compare every job of this multirun folder (latest: the newest multirun)."),
    metric: Optional[str] = typer.Option(None, help="Metric to rank by (default: the runs' optimized metric)."),  # noqa: UP045
    plot: bool = typer.Option(False, "--plot", help="Also write a PNG of the metric's curves."),
    report: bool = typer.Option(False, "--report", help="Also write one HTML page of the runs' reports side by side "
                                "(each run's report is made first where it is missing or out of date)."),
    split: str = typer.Option("test", help="With --report: the split the reports are of (test or val)."),
    output_dir: str = typer.Option("outputs", help="Where run ids and latest are looked up."),
    fmt: str = FormatOption,
) -> None:
    """The config values that differ between runs, with their metrics; the best run highlighted."""
    from dlkit import ui
    from dlkit.runs import query

    fmt = table_format(fmt)
    if report:
        from dlkit.reporting.content import check_split

        check_split(split)
    folders = [query.find_run(ref, output_dir) for ref in refs or []]
    if multirun == "latest":
        multirun = str(query.latest_multirun(output_dir))
    if multirun:
        _runs_folder(multirun, "--multirun", "a multirun folder (outputs/multirun/<date>/<time>-<id>) or latest")
        jobs = sorted((f.resolve() for f in query.find_runs(multirun)), key=query.natural_key)
        if not jobs:
            raise UsageError(f"--multirun {multirun}: no runs in this folder; give a multirun folder "
                             "(outputs/multirun/<date>/<time>-<id>).")
        folders += jobs
    folders = list(dict.fromkeys(folders))  # the order given, each run once; multirun jobs by number
    if len(folders) < 2:
        raise UsageError("compare needs at least two runs: give RUN RUN ... or --multirun FOLDER.")
    loaded = [query.Run.load(f) for f in folders]
    header, rows, best = query.comparison(loaded, metric)
    emit(ui.render_table(header, rows, fmt, title="Run comparison", highlight=best, mark_best=True))
    if plot:
        name = metric or loaded[0].metric_name
        target = Path(multirun or loaded[0].path.parent) / f"compare-{name.replace('/', '_')}.png"
        typer.echo(f"Plot: {query.plot_curves(loaded, name, target)}")
    if report:
        folder = Path(multirun or loaded[0].path.parent)
        page = _compare_reports([run.path for run in loaded], split, folder)
        typer.echo(f"Reports side by side: {page}", err=fmt != "table")


def _compare_reports(runs: list[Path], split: str, folder: Path) -> str:
    """Each run's report (made where missing or out of date), then the page of all of them side by side."""
    from dlkit import inference
    from dlkit.reporting import compare, report

    def make(run: Path) -> None:
        typer.echo(f"Making the {split} report of {run} ...", err=True)  # (stdout: the table, in any --format)
        loaded = inference.load(str(run))
        report.make(loaded, split, report.default_folder(loaded, split), [])

    return str(compare.compare(runs, split, folder / f"compare-report-{split}.html", make))


@runs_app.command("show")
def runs_show(
    ref: str = typer.Argument("latest", help="A run folder, run id or latest."),
    output_dir: str = typer.Option("outputs", help="Where run ids and latest are looked up."),
) -> None:
    """One run: status, config, final metrics, checkpoints, and its W&B link or sync command."""
    from dlkit import ui
    from dlkit.runs import query, records

    run = query.Run.load(query.find_run(ref, output_dir))
    typer.echo(f"Run {run.id}: {run.status}  ({run.path})")
    typer.echo(f"started {run.started}, duration {query.duration(run)}, overrides: "
               f"{' '.join(run.summary.get('overrides') or []) or '(none)'}")
    if run.summary.get("error"):
        typer.echo(f"error: {run.summary['error']}")
    typer.echo("\n" + (run.path / records.CONFIG).read_text(encoding="utf-8"))
    ui.render_table(["metric", "value"], [[k, v] for k, v in sorted(run.final_metrics().items())],
                  title=f"best {run.metric_name}: {run.best()}")
    checkpoints = sorted((run.path / "checkpoints").glob("*.ckpt")) if (run.path / "checkpoints").is_dir() else []
    typer.echo("checkpoints: " + (", ".join(str(c) for c in checkpoints) or "none"))
    tracked = run.summary.get("wandb") or {}
    if tracked.get("url"):
        typer.echo(f"W&B run: {tracked['url']}")
    elif tracked.get("id") and tracked.get("mode") == "online":
        typer.echo(f"W&B run id: {tracked['id']} (online)")
    if tracked.get("sync"):
        typer.echo(f"W&B (offline): upload with `{tracked['sync']}`")
