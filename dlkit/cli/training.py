"""`dlkit train`, `dlkit sweep` and `dlkit data`: the commands that prepare data and train."""

from __future__ import annotations

from typing import Optional

import typer

from dlkit.cli.app import EXAMPLES, ConfigDir, app, data_app, emit, overrides_argument, table_format
from dlkit.errors import UsageError


@app.command(epilog=EXAMPLES)
def train(
    overrides: Optional[list[str]] = overrides_argument(),  # noqa: UP045 - typer needs Optional here
    multirun: bool = typer.Option(False, "--multirun", "-m", help="One job per combination of listed values."),
    config_dir: Optional[str] = ConfigDir,  # noqa: UP045
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop a multirun at its first failed job."),
) -> None:
    """Train (and test) a model. The default: an MLP on scikit-learn's digits, on the CPU."""
    from dlkit import jobs

    done = jobs.train(list(overrides or []), multirun=multirun, config_dir=config_dir, fail_fast=fail_fast)
    if any(job.status != "finished" for job in done):
        raise typer.Exit(1)


@data_app.command("prepare")
def data_prepare(
    overrides: Optional[list[str]] = overrides_argument(),  # noqa: UP045
    config_dir: Optional[str] = ConfigDir,  # noqa: UP045
) -> None:
    """Read, tokenize and store the data of a config (the same overrides as `dlkit train`), so that training starts
    from the store; prints where it is and how large."""
    from dlkit import data_commands
    from dlkit.data.progress import human_size

    done = data_commands.prepare(list(overrides or []), config_dir)
    rows = ", ".join(f"{name} {info['rows']:,}" for name, info in done["splits"].items())
    if done["folder"] is None:
        typer.echo(f"This data keeps no token store (nothing to prepare): {rows} examples.")
        return
    verb = "Prepared" if done["built"] else "Already prepared"
    typer.echo(f"{verb}: {done['folder']} ({human_size(done['size'])}; rows: {rows})")


@data_app.command("info")
def data_info(
    overrides: Optional[list[str]] = overrides_argument(),  # noqa: UP045
    config_dir: Optional[str] = ConfigDir,  # noqa: UP045
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv, json or markdown."),
) -> None:
    """Rows, tokens, length percentiles and label counts of each split of a config's data (prepared if needed)."""
    from dlkit import data_commands, ui

    fmt = table_format(fmt)
    done = data_commands.prepare(list(overrides or []), config_dir)
    splits = done["splits"]
    columns = sorted({k for info in splits.values() for k in info if k.endswith(" tokens")})
    header = ["split", "rows", *columns, "length p50 / p90 / p99 / max", "labels"]
    rows = []
    for name, info in splits.items():
        lengths = info.get("lengths") or {}
        shown = " / ".join(str(lengths[k]) for k in ("p50", "p90", "p99", "max")) if lengths else "-"
        labels = ", ".join(f"{label} {count:,}" for label, count in (info.get("labels") or {}).items()) or "-"
        rows.append([name, f"{info['rows']:,}", *(f"{info.get(c, 0):,}" for c in columns), shown, labels])
    emit(ui.render_table(header, rows, fmt, title=str(done["folder"] or "data")))


@app.command(epilog="""
Examples:

  dlkit sweep hparams_search=mlp_optuna hparams_search.n_trials=10

  dlkit sweep hparams_search=textcnn_optuna hparams_search.n_jobs=2   # 2 trials at a time

  dlkit sweep status latest                        # trials, best, importances, plots

  dlkit sweep --backend wandb hparams_search=lstm_optuna
""")
def sweep(
    overrides: Optional[list[str]] = overrides_argument(),  # noqa: UP045
    backend: str = typer.Option("optuna", "--backend", help="optuna (dlkit runs the study) or wandb (a W&B sweep)."),
    config_dir: Optional[str] = ConfigDir,  # noqa: UP045
    output_dir: str = typer.Option("outputs", help="sweep status: where sweeps are looked up (paths.output_dir)."),
) -> None:
    """Search hyperparameters with hparams_search=NAME; `dlkit sweep status [SWEEP]` reports on a study.

    Running the same command again continues the study: finished trials are kept, an interrupted one is retried.
    """
    args = list(overrides or [])
    if args[:1] == ["status"]:
        return _sweep_status(args[1] if len(args) > 1 else "latest", output_dir)
    if backend == "wandb":
        from dlkit.sweeps import wandb_sweep

        path, sweep_id = wandb_sweep.write(args, config_dir)
        if sweep_id:
            typer.echo(f"Created W&B sweep {sweep_id} from {path}. Start agents with: wandb agent {sweep_id}")
        else:
            typer.echo(f"Wrote {path}. Not logged in to W&B: once online, run `wandb sweep {path}`, then the "
                       "`wandb agent ...` command it prints.")
        return None
    if backend != "optuna":
        raise UsageError(f"--backend {backend}: choose optuna or wandb.")
    from dlkit.sweeps import report

    report.run_and_report(args, config_dir)  # a parallel sweep's worker process leaves the report to the main one
    return None


def _sweep_status(sweep: str, output_dir: str = "outputs") -> None:
    from dlkit.sweeps import report

    report.show(sweep, output_dir)
