"""The `dlkit` command line: one small function per command; the work happens in the modules they call.

Only typer, rich and dlkit.config are imported at start-up, so `--help` and `config show` stay fast.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from dlkit.errors import DlkitError, Stopped, UsageError

OVERRIDES_HELP = """Hydra overrides: GROUP=OPTION picks a config (model=lenet), KEY=VALUE sets a value
(optimizer.lr=3e-4), +KEY=VALUE adds a key, ~KEY removes one (~callbacks.early_stopping)."""

EXAMPLES = """
Examples:

  dlkit train                                     # MLP on the bundled digits, offline, about a minute

  dlkit train model=lenet optimizer.lr=3e-4 trainer.max_epochs=5

  dlkit train -m optimizer.lr=1e-2,1e-3 seed=0,1  # a multirun: 4 jobs, one folder each

  dlkit train trainer=ddp_cpu precision=bf16      # 2 processes (DDP, gloo), bf16 autocast

  dlkit config list model                         # what can be chosen
"""

app = typer.Typer(
    name="dlkit",
    help="Train neural networks from YAML configs: Hydra composes them, PyTorch Lightning runs them.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show, list and copy configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")
runs_app = typer.Typer(help="List, compare and inspect the runs in run folders.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
data_app = typer.Typer(help="Prepare a dataset's token store ahead of training, and describe it.", no_args_is_help=True)
app.add_typer(data_app, name="data")

def complete_override(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion for overrides: group names, then the options of `group=`.

    zsh and fish hand over the whole word (`model=l`); bash splits words at `=`, so there the word is `l`
    after the words `model` and `=` (and the reply replaces only the text after `=`: bare option names).
    """
    from dlkit.config import config_groups

    try:
        groups = config_groups((ctx.params or {}).get("config_dir"))
    except Exception:  # noqa: BLE001 - a bad --config-dir: complete from the packaged configs
        groups = config_groups()
    before = [str(word) for word in (ctx.params or {}).get("overrides") or ()]
    if len(before) >= 2 and before[-1] == "=":
        return [o.name for o in groups.get(before[-2].lstrip("+~"), []) if o.name.startswith(incomplete)]
    if "=" in incomplete:
        group, _, prefix = incomplete.partition("=")
        return [f"{group}={o.name}" for o in groups.get(group.lstrip("+~"), []) if o.name.startswith(prefix)]
    sign = incomplete[0] if incomplete[:1] in ("+", "~") else ""
    end = "" if sign == "~" else "="  # `~callbacks` removes the group; `+group=` and `group=` pick an option
    return [f"{sign}{g}{end}" for g in groups if g.startswith(incomplete[len(sign):])]


def _overrides_argument() -> typer.models.ArgumentInfo:
    return typer.Argument(None, help=OVERRIDES_HELP, show_default=False, autocompletion=complete_override)


ConfigDir = typer.Option(None, "--config-dir", "-c", help="Folder of your own configs (default: ./conf if present).")


@app.callback()
def root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show full tracebacks on errors.")) -> None:
    """dlkit: declarative deep learning on Hydra + PyTorch Lightning."""


@app.command(epilog=EXAMPLES)
def train(
    overrides: Optional[list[str]] = _overrides_argument(),  # noqa: UP045 - typer needs Optional here
    multirun: bool = typer.Option(False, "--multirun", "-m", help="One job per combination of listed values."),
    config_dir: Optional[str] = ConfigDir,  # noqa: UP045
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop a multirun at its first failed job."),
) -> None:
    """Train (and test) a model. The default: an MLP on scikit-learn's digits, on the CPU."""
    from dlkit import runner

    jobs = runner.train(list(overrides or []), multirun=multirun, config_dir=config_dir, fail_fast=fail_fast)
    if any(job.status != "finished" for job in jobs):
        raise typer.Exit(1)


@config_app.command("show")
def config_show(
    overrides: Optional[list[str]] = _overrides_argument(),  # noqa: UP045
    config_dir: Optional[str] = ConfigDir,  # noqa: UP045
    resolve: bool = typer.Option(False, "--resolve", help="Resolve ${...} interpolations."),
) -> None:
    """Print the composed config as highlighted YAML (nothing is trained)."""
    from dlkit.config import compose, to_yaml

    cfg = compose(list(overrides or []), config_dir)
    text = to_yaml(cfg, resolve=resolve)
    if not sys.stdout.isatty():  # piped: plain YAML, and no need to load the highlighter
        sys.stdout.write(text)
        return
    from rich.console import Console
    from rich.syntax import Syntax

    Console().print(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))


@config_app.command("list")
def config_list(
    group: Optional[str] = typer.Argument(None, help="Only this group (e.g. model)."),  # noqa: UP045
    config_dir: Optional[str] = ConfigDir,  # noqa: UP045
) -> None:
    """List config groups and their options, each with a one-line description."""
    from rich.console import Console
    from rich.table import Table

    from dlkit.config import config_groups
    from dlkit.errors import did_you_mean

    groups = config_groups(config_dir)
    if group is not None and group not in groups:
        raise UsageError(f"Unknown group '{group}'.{did_you_mean(group, groups)} Groups: {', '.join(groups)}.")
    table = Table(header_style="bold", show_lines=False)
    table.add_column("group", style="cyan")
    table.add_column("option", style="green")
    table.add_column("description")
    for name, options in groups.items():
        if group is None or name == group:
            for option in options:
                table.add_row(name, option.name, option.description)
    Console(width=max(100, Console().width)).print(table)


@config_app.command("copy")
def config_copy(
    option: str = typer.Argument(..., help="GROUP/OPTION to copy, e.g. model/mlp."),
    config_dir: Optional[str] = typer.Option(None, "--config-dir", "-c", help="Where to copy (default ./conf)."),  # noqa: UP045
) -> None:
    """Copy a built-in config into ./conf/GROUP/ to edit; it then overrides the packaged one."""
    from dlkit.config import copy_option

    target = copy_option(option, config_dir)
    if config_dir is None:
        typer.echo(f"Copied {option} to {target}. Edit it; dlkit uses it from now on in this folder.")
    else:  # only ./conf is picked up by itself
        typer.echo(f"Copied {option} to {target}. Edit it; dlkit uses it when you give --config-dir {config_dir}.")


@data_app.command("prepare")
def data_prepare(
    overrides: Optional[list[str]] = _overrides_argument(),  # noqa: UP045
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
    overrides: Optional[list[str]] = _overrides_argument(),  # noqa: UP045
    config_dir: Optional[str] = ConfigDir,  # noqa: UP045
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv, json or markdown."),
) -> None:
    """Rows, tokens, length percentiles and label counts of each split of a config's data (prepared if needed)."""
    from dlkit import data_commands
    from dlkit.tracking import tables

    fmt = _format(fmt)
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
    _emit(tables.render(header, rows, fmt, title=str(done["folder"] or "data")))


@app.command(epilog="""
Examples:

  dlkit sweep hparams_search=mlp_optuna hparams_search.n_trials=10

  dlkit sweep hparams_search=textcnn_optuna hparams_search.n_jobs=2   # 2 trials at a time

  dlkit sweep status latest                        # trials, best, importances, plots

  dlkit sweep --backend wandb hparams_search=lstm_optuna
""")
def sweep(
    overrides: Optional[list[str]] = _overrides_argument(),  # noqa: UP045
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


@app.command("eval")
def eval_run(
    ref: str = typer.Argument(..., help="A run folder, run id, latest, or a .ckpt file."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value settings, e.g. data.test_file=x.csv"),  # noqa: UP045
    output_dir: str = typer.Option("outputs", help="Where run ids and latest are looked up."),
) -> None:
    """Test a trained model again, rebuilt from its run's own config; prints the metrics and saves them as
    eval-<time>.json in the run folder (next to the checkpoint for a lone .ckpt)."""
    from datetime import datetime

    from dlkit import inference, run_folder
    from dlkit.tracking import tables

    loaded = inference.load(ref, list(overrides or []), output_dir)
    metrics, tracked = inference.evaluate(loaded, list(overrides or []))
    typer.echo(f"Checkpoint: {loaded.checkpoint}")
    tables.render(["metric", "value"], [[k, v] for k, v in sorted(metrics.items())])
    folder = inference.output_folder(loaded)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target, number = folder / f"eval-{stamp}.json", 1
    while target.exists():  # two evals within one second keep both results
        target, number = folder / f"eval-{stamp}-{number}.json", number + 1
    record = {"checkpoint": str(loaded.checkpoint.resolve()), "overrides": list(overrides or []), "metrics": metrics}
    try:
        run_folder.write_json(target, {**record, "wandb": tracked} if tracked else record)
    except OSError as err:
        raise DlkitError(f"could not save the metrics to {target} ({err.strerror}); "
                         "make the folder writable or copy the checkpoint elsewhere.") from err
    typer.echo(f"Saved: {target}")
    if tracked and tracked.get("url"):
        typer.echo(f"W&B eval run: {tracked['url']}")
    elif tracked:
        typer.echo(f"W&B ran offline ({tracked['offline_reason']}). Upload the eval run with: {tracked['sync']}")


@app.command()
def predict(
    ref: str = typer.Argument(..., help="A run folder, run id, latest, or a .ckpt file."),
    texts: Optional[list[str]] = typer.Argument(None, help="Inputs: texts, or image files for image models."),  # noqa: UP045
    input_file: Optional[str] = typer.Option(None, "--input", "-i", help="File of inputs, one per line; - is stdin."),  # noqa: UP045
    fmt: str = typer.Option("table", "--format", "-f",
                            help="table, jsonl, csv, or text (one line per input: label, translation or filled text)."),
    top_k: Optional[int] = typer.Option(  # noqa: UP045
        None, "--top-k", min=1, help="Classifiers: the k most likely labels (default 1); masked LM: k fills (5)."),
    beam_size: Optional[int] = typer.Option(None, "--beam-size", min=1, help="Seq2seq: beam search width (1: greedy)."),  # noqa: UP045
    batch_size: int = typer.Option(64, help="Inputs per batch."),
    output_dir: str = typer.Option("outputs", help="Where run ids and latest are looked up."),
) -> None:
    """Predict with a trained model, one result per input: a label and its probability (classifiers), a
    translation (seq2seq), or the top fills of each [MASK] (BERT pre-training)."""
    import json as _json

    from dlkit import inference
    from dlkit.tracking import tables

    if fmt not in ("table", "jsonl", "csv", "text"):
        raise UsageError(f"--format {fmt}: choose table, jsonl, csv or text.")
    lines = list(texts or [])
    if input_file:
        lines += (sys.stdin.read() if input_file == "-" else _read_inputs(input_file)).splitlines()
    inputs = [line for line in lines if line.strip()]  # empty lines are not predicted
    loaded = inference.load(ref, [], output_dir, for_predict=True)
    options = {name: value for name, value in (("top_k", top_k), ("beam_size", beam_size)) if value is not None}
    records = inference.predict(loaded, inputs, batch_size=batch_size, **options)
    if fmt == "jsonl":
        typer.echo("\n".join(_json.dumps(r) for r in records))
        return
    if fmt == "text":  # one line per input line, an empty one for an empty one: the output lines up with the input
        results = iter(records)
        typer.echo("\n".join(inference.as_text(next(results)) if line.strip() else "" for line in lines))
        return
    header = list(records[0])
    _emit(tables.render(header, [[r.get(k) for k in header] for r in records], "csv" if fmt == "csv" else "table"))


@app.command()
def export(
    ref: str = typer.Argument(..., help="A run folder, run id, latest, or a .ckpt file."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx, torchscript, or huggingface (BERT runs)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Folder to write (default: <run>/export)."),  # noqa: UP045
    output_dir: str = typer.Option("outputs", help="Where run ids and latest are looked up."),
) -> None:
    """Export a trained model to ONNX or TorchScript with model.json (labels, inputs, tokenizer), or a BERT run
    as a Hugging Face folder (config.json, model.safetensors, tokenizer) that transformers loads."""
    from pathlib import Path

    from dlkit import inference
    from dlkit.export import check_format
    from dlkit.export import export as export_model

    check_format(fmt)
    loaded = inference.load(ref, [], output_dir)
    target = Path(out) if out else (loaded.run_dir or loaded.checkpoint.parent) / "export" / fmt
    metadata = export_model(loaded, fmt, target)
    if fmt == "huggingface":
        typer.echo(f"Exported a Hugging Face {metadata['architectures'][0]} to {target}")
    else:
        typer.echo(f"Exported {target / metadata['file']} and {target / 'model.json'}")


def _read_inputs(path: str) -> str:
    from pathlib import Path

    if not Path(path).is_file():
        raise UsageError(f"--input {path}: no such file.")
    return Path(path).read_text(encoding="utf-8")


FormatOption = typer.Option("table", "--format", "-f", help="table, csv, json or markdown.")


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
    from dlkit.errors import did_you_mean
    from dlkit.tracking import runs, tables

    fmt = _format(fmt)
    if status is not None and status not in runs.STATUSES:
        raise UsageError(f"--status {status}: choose {', '.join(runs.STATUSES[:-1])} or {runs.STATUSES[-1]}."
                         f"{did_you_mean(status, runs.STATUSES)}")
    _runs_folder(path, "PATH", "the folder that holds the runs")
    found = runs.load_runs(path, status, model, data, multirun)
    rows = [[r.id, r.started.replace("T", " "), r.summary.get("name"), r.choice("model"), r.choice("data"),
             r.choice("trainer"), r.status, runs.duration(r), f"{r.metric_name} {_number(r.best())}",
             os.path.relpath(r.path)] for r in found]
    header = ["id", "started", "name", "model", "data", "trainer", "status", "duration", "best", "folder"]
    _emit(tables.render(header, rows, fmt, title=f"{len(rows)} runs under {path}"))


def _runs_folder(path: str, what: str, expected: str) -> None:
    """A usage error (exit 2) unless path is a folder."""
    from pathlib import Path

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
    output_dir: str = typer.Option("outputs", help="Where run ids and latest are looked up."),
    fmt: str = FormatOption,
) -> None:
    """The config values that differ between runs, with their metrics; the best run highlighted."""
    from pathlib import Path

    from dlkit import run_folder
    from dlkit.tracking import runs, tables

    fmt = _format(fmt)
    folders = [run_folder.find_run(ref, output_dir) for ref in refs or []]
    if multirun == "latest":
        multirun = str(run_folder.latest_multirun(output_dir))
    if multirun:
        _runs_folder(multirun, "--multirun", "a multirun folder (outputs/multirun/<date>/<time>-<id>) or latest")
        jobs = sorted((f.resolve() for f in run_folder.find_runs(multirun)), key=runs.natural_key)
        if not jobs:
            raise UsageError(f"--multirun {multirun}: no runs in this folder; give a multirun folder "
                             "(outputs/multirun/<date>/<time>-<id>).")
        folders += jobs
    folders = list(dict.fromkeys(folders))  # the order given, each run once; multirun jobs by number
    if len(folders) < 2:
        raise UsageError("compare needs at least two runs: give RUN RUN ... or --multirun FOLDER.")
    loaded = [runs.Run.load(f) for f in folders]
    header, rows, best = runs.comparison(loaded, metric)
    _emit(tables.render(header, rows, fmt, title="Run comparison", highlight=best, mark_best=True))
    if plot:
        name = metric or loaded[0].metric_name
        target = Path(multirun or loaded[0].path.parent) / f"compare-{name.replace('/', '_')}.png"
        typer.echo(f"Plot: {runs.plot_curves(loaded, name, target)}")


@runs_app.command("show")
def runs_show(
    ref: str = typer.Argument("latest", help="A run folder, run id or latest."),
    output_dir: str = typer.Option("outputs", help="Where run ids and latest are looked up."),
) -> None:
    """One run: status, config, final metrics, checkpoints, and its W&B link or sync command."""
    from dlkit import run_folder
    from dlkit.tracking import runs, tables

    run = runs.Run.load(run_folder.find_run(ref, output_dir))
    typer.echo(f"Run {run.id}: {run.status}  ({run.path})")
    typer.echo(f"started {run.started}, duration {runs.duration(run)}, overrides: "
               f"{' '.join(run.summary.get('overrides') or []) or '(none)'}")
    if run.summary.get("error"):
        typer.echo(f"error: {run.summary['error']}")
    typer.echo("\n" + (run.path / run_folder.CONFIG).read_text(encoding="utf-8"))
    tables.render(["metric", "value"], [[k, v] for k, v in sorted(run.final_metrics().items())],
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


def _format(fmt: str) -> str:
    from dlkit.tracking.tables import FORMATS

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: choose one of {', '.join(FORMATS)}.")
    return fmt


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _emit(text: str | None) -> None:
    if text is not None:
        typer.echo(text)


def main() -> None:
    """Entry point: run the app and turn errors into one line and an exit code."""
    import click
    from typer import exceptions as typer_exceptions

    args = sys.argv[1:]
    # --verbose (-v) may stand anywhere before a `--` (`dlkit train model=x -v`); no command uses -v otherwise
    end = args.index("--") if "--" in args else len(args)
    verbose = any(a in ("--verbose", "-v") for a in args[:end]) or os.environ.get("DLKIT_VERBOSE") == "1"
    if verbose and end:
        args = ["--verbose", *(a for a in args[:end] if a not in ("--verbose", "-v")), *args[end:]]
    if os.environ.get("_DLKIT_COMPLETE") == "complete_bash":
        import shlex

        # bash splits words at `=`: at `model=<TAB>` the cursor word is `=` and bash replaces the empty text after
        # it. Give click that empty word (after `model` and `=`) so complete_override offers the option names.
        try:
            words = shlex.split(os.environ.get("COMP_WORDS", ""))
            cword = int(os.environ.get("COMP_CWORD", ""))
        except ValueError:
            words, cword = [], 0
        if 1 < cword < len(words) and words[cword] == "=" and not words[cword - 1].startswith("-"):
            os.environ["COMP_WORDS"] = shlex.join([*words[:cword + 1], ""])
            os.environ["COMP_CWORD"] = str(cword + 1)
    from dlkit import ui

    ui.set_verbose(verbose)
    # recent Typer raises its own copy of click's exceptions; older versions raise click's
    command_line_errors = (click.ClickException, getattr(typer_exceptions, "TyperException", click.ClickException))
    try:
        # without standalone mode Typer returns the code of an Exit (Ctrl+C gives 130) instead of exiting
        code = app(args=args, standalone_mode=False)
    except DlkitError as err:
        _fail(err, err.exit_code, verbose)
    except command_line_errors as err:  # unknown option, missing argument, bad value: usage errors (exit 2)
        context = getattr(err, "ctx", None)
        if type(err).__name__ == "NoArgsIsHelpError" and context is not None:  # `dlkit`, `dlkit runs`: the help
            typer.echo(context.get_help())
            sys.exit(0)
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        typer.secho(f"error: {err.format_message()}{hint}", fg="red", err=True)
        sys.exit(err.exit_code)
    except (click.exceptions.Abort, typer_exceptions.Abort):
        sys.exit(130)
    except Stopped as stop:
        typer.secho(f"Stopped: {stop.reason}.", fg="yellow", err=True)
        sys.exit(stop.exit_code)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line (traceback with --verbose)
        _fail(err, 1, verbose)
    if code == 130:
        typer.secho("Interrupted.", fg="yellow", err=True)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(err: BaseException, code: int, verbose: bool) -> None:
    """Print one line for the error (the real cause, not Hydra's wrapper), the traceback if verbose, and exit."""
    shown = err
    while type(shown).__name__ == "InstantiationException" and shown.__cause__ is not None:
        shown = shown.__cause__  # Hydra wraps the error a constructor raised: show that one
    if isinstance(shown, DlkitError):
        code, prefix = shown.exit_code, ""
    else:
        prefix = f"{type(shown).__name__}: "
    if verbose:
        import traceback

        traceback.print_exception(err)
    message = " ".join(str(shown).split()) or type(shown).__name__  # the whole message, on one line
    typer.secho(f"error: {prefix}{message}", fg="red", err=True)
    sys.exit(code)
