"""The commands on a trained run: `dlkit eval`, `dlkit report`, `dlkit predict`, `dlkit serve` and `dlkit export`."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from dlkit.cli.app import app, emit
from dlkit.errors import UsageError


@app.command("eval")
def eval_run(
    ref: str = typer.Argument(..., help="A run folder, run id, latest, or a .ckpt file."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value settings, e.g. data.test_file=x.csv"),  # noqa: UP045
    output_dir: str = typer.Option("outputs", help="Where run ids and latest are looked up."),
) -> None:
    """Test a trained model again, rebuilt from its run's own config; prints the metrics and saves them as
    eval-<time>.json in the run folder (next to the checkpoint for a lone .ckpt)."""
    from dlkit import inference, ui
    from dlkit.runs import records

    loaded = inference.load(ref, list(overrides or []), output_dir)
    metrics, tracked = inference.evaluate(loaded, list(overrides or []))
    typer.echo(f"Checkpoint: {loaded.checkpoint}")
    ui.render_table(["metric", "value"], [[k, v] for k, v in sorted(metrics.items())])
    record = {"checkpoint": str(loaded.checkpoint.resolve()), "overrides": list(overrides or []), "metrics": metrics}
    target = records.write_eval(inference.output_folder(loaded), {**record, "wandb": tracked} if tracked else record)
    typer.echo(f"Saved: {target}")
    _wandb_note(tracked)


@app.command()
def report(
    ref: str = typer.Argument(..., help="A run folder, run id, latest, or a .ckpt file."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value settings, e.g. data.test_file=x.csv"),  # noqa: UP045
    split: str = typer.Option("test", help="The split to report on: test or val."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Folder to write (default: <run>/report-<split>)."),  # noqa: UP045
    mistakes: int = typer.Option(16, min=0, help="Classifiers: how many of the most confident mistakes to show."),
    output_dir: str = typer.Option("outputs", help="Where run ids and latest are looked up."),
) -> None:
    """Evaluate a trained run on a split and write what a person looks at: report.html (opens offline), a PNG per
    figure and metrics.json. Classifiers: per-class precision / recall / F1, confusion matrix, ROC and PR curves,
    calibration, the most confident mistakes; seq2seq: BLEU, chrF, exact match, lengths, samples; BERT
    pre-training: masked-LM and NSP accuracy. A run that logged to W&B gets the figures in a W&B eval run."""
    from pathlib import Path

    from dlkit import ui
    from dlkit.reporting.content import check_split

    check_split(split)  # before torch is imported
    ui.quiet_third_party()
    from dlkit import inference
    from dlkit.reporting import report as reports

    if out:
        reports.check_target(Path(out))  # before the model loads
    loaded = inference.load(ref, list(overrides or []), output_dir)
    folder = Path(out) if out else reports.default_folder(loaded, split)
    made, page = reports.make(loaded, split, folder, list(overrides or []), mistakes)
    for table in made.tables:
        ui.render_table(table.columns, table.rows, title=table.title)
    ui.render_table(["metric", "value"], [[k, v] for k, v in made.metrics.items()], title=f"{split} split")
    typer.echo(f"Report: {page}")
    _wandb_note(reports.log_to_wandb(loaded, made, folder, list(overrides or [])))


def _wandb_note(tracked: dict | None) -> None:
    """Where the eval's W&B run is: its URL, or the command that uploads it."""
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

    from dlkit import inference, ui

    if fmt not in ("table", "jsonl", "csv", "text"):
        raise UsageError(f"--format {fmt}: choose table, jsonl, csv or text.")
    lines = list(texts or [])
    if input_file:
        lines += (sys.stdin.read() if input_file == "-" else _read_inputs(input_file)).splitlines()
    inputs = [line for line in lines if line.strip()]  # empty lines are not predicted
    loaded = inference.load(ref, [], output_dir, for_predict=True)
    options = {name: value for name, value in (("top_k", top_k), ("beam_size", beam_size)) if value is not None}
    records = inference.predict(loaded, inputs, batch_size=batch_size, **options)
    limits = loaded.datamodule.overlong(inputs)
    cut = [str(i + 1) for i, limit in enumerate(limits) if limit]
    if cut:  # on stderr: the predictions on stdout stay one per input
        limit = max(n for n in limits if n)
        typer.secho(f"note: {len(cut)} input(s) longer than the model's {limit} tokens were cut to their first {limit} "
                    f"(input {', '.join(cut[:10])}{' ...' if len(cut) > 10 else ''}).", fg="yellow", err=True)
    if fmt == "jsonl":
        typer.echo("\n".join(_json.dumps(r) for r in records))
        return
    if fmt == "text":  # one line per input line, an empty one for an empty one: the output lines up with the input
        results = iter(records)
        typer.echo("\n".join(inference.as_text(next(results)) if line.strip() else "" for line in lines))
        return
    header = list(records[0])
    emit(ui.render_table(header, [[r.get(k) for k in header] for r in records], "csv" if fmt == "csv" else "table"))


@app.command()
def serve(
    ref: str = typer.Argument(..., help="A run folder, run id, latest, or a .ckpt file."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on: 127.0.0.1 (this machine only) or 0.0.0.0."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, help="Server processes, each with its own copy of the model."),
    max_batch_size: int = typer.Option(64, min=1, help="Most inputs in one model call (and in one request)."),
    batch_timeout: float = typer.Option(2.0, min=0.0, help="Milliseconds a batch waits for more requests."),
    threads: Optional[int] = typer.Option(  # noqa: UP045
        None, min=1, help="Torch threads per worker (default: the cores shared out among the workers)."),
    output_dir: str = typer.Option("outputs", help="Where run ids and latest are looked up."),
) -> None:
    """Serve a trained model over HTTP: POST /predict {"inputs": [...]} answers what `predict -f jsonl` prints;
    GET /health, GET /info, API docs at /docs. Requests that arrive together are batched. Ctrl+C or SIGTERM
    answers the requests in flight, then stops."""
    from dlkit.serving import server

    server.check_free(host, port)  # before the model loads
    loaded = server.load(ref, output_dir)
    where = loaded.run_dir or loaded.checkpoint
    address = f"[{host}]" if ":" in host else host
    typer.echo(f"Serving {where} ({type(loaded.task.model).__name__}, {loaded.datamodule.kind}) at "
               f"http://{address}:{port}: POST /predict, GET /health, GET /info, docs at /docs. Ctrl+C stops.")
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho(f"Listening on {host}: other machines can reach this server.", fg="yellow", err=True)
    server.serve(loaded, host, port, workers, max_batch_size, batch_timeout, threads)
    typer.echo("Stopped.")


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
