"""A report of a trained run on one split: how it is built from the run (build), the folder it is written to
(write: report.html, a PNG per figure, metrics.json, figures.json), W&B, and the three in order (make)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from dlkit.errors import DlkitError, UsageError
from dlkit.inference import Loaded, output_folder
from dlkit.reporting import figures, metrics
from dlkit.reporting.collect import collect
from dlkit.reporting.content import FIGURES, FORMAT, METRICS, PAGE, Picture, Report, Table, folder_name
from dlkit.runs import records

CLASSIFIERS = ("image_classification", "text_classification")


def default_folder(loaded: Loaded, split: str) -> Path:
    """RUN/report-<split> (beside a lone checkpoint: report-<split> in its folder)."""
    return output_folder(loaded) / folder_name(split)


def is_report(folder: Path) -> bool:
    """Whether the folder holds a report dlkit wrote (which a new report may replace)."""
    return records.read_json(folder / METRICS).get("format") == FORMAT


def check_target(folder: Path) -> Path:
    """The folder a report may be written to, as an absolute path: missing, empty, or an earlier report; never the
    working folder, one above it or a file system's root (a report replaces the folder it is written to)."""
    target = folder.expanduser().resolve()
    if not target.name or target == Path.cwd().resolve() or target in Path.cwd().resolve().parents:
        raise UsageError(f"{folder}: a report replaces the folder it is written to; give a folder of its own "
                         "(e.g. --out reports/run1).")
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not is_report(target))):
        raise UsageError(f"{folder}: this {'folder' if target.is_dir() else 'file'} exists and holds no dlkit "
                         "report; give a new or empty folder with --out.")
    return target


def make(loaded: Loaded, split: str, folder: Path, overrides: list[str],
         mistakes: int = 16) -> tuple[Report, Path]:
    """Build the report of the split and write it to folder (refused unless check_target allows it): the report
    and its page."""
    target = check_target(folder)
    report = build(loaded, split, overrides, mistakes)
    return report, write(report, target)


def build(loaded: Loaded, split: str, overrides: list[str] | None = None, mistakes: int = 16) -> Report:
    """Predict the split with the run's model and score it: a Report of the task's kind."""
    outputs = collect(loaded, split)
    spec, datamodule = loaded.datamodule.spec, loaded.datamodule
    about = _about(loaded, split, list(overrides or []))
    if not outputs:
        limit = loaded.cfg.trainer.get(f"limit_{split}_batches")
        raise DlkitError(f"no examples of the {split} split were read (trainer.limit_{split}_batches={limit}); "
                         f"report on all of them with trainer.limit_{split}_batches=null.")
    if spec.kind in CLASSIFIERS:
        names = list(spec.class_names or [str(i) for i in range(spec.num_classes or 0)])
        scores = metrics.classification(outputs["probabilities"], outputs["labels"], names, mistakes)
        shown = datamodule.examples(split, [m["index"] for m in scores.mistakes])
        rows = [[m["index"], _cell(example), m["label"], m["predicted"], m["probability"], m["probability_of_label"]]
                for m, example in zip(scores.mistakes, shown)]
        noted = [{**m, "input": e} if isinstance(e, str) else m for m, e in zip(scores.mistakes, shown)]
        wrong = len(outputs["labels"]) - sum(scores.confusion[c][c] for c in range(len(names)))
        examples = Table(f"The {len(rows)} most confident mistakes (of {wrong})",
                         ["row", "input", "label", "predicted", "probability", "probability of label"], rows,
                         empty="no mistakes" if not wrong else "none shown (--mistakes 0)")
        return Report("classification", split, about, scores.metrics, [_class_table(scores, "Per class")],
                      figures.classification_charts(scores, names), examples,
                      _classification_details(scores, names, noted))
    if spec.kind == "seq2seq":
        references = datamodule.references(split)
        if references is None:
            raise DlkitError(f"this run's data keeps no reference texts of its {split} split to score against.")
        index = outputs["index"].tolist()
        scores = metrics.translation(outputs["outputs"], [references[i] for i in index])
        sources = datamodule.examples(split, [index[s["position"]] for s in scores.samples])
        samples = [{"index": index[sample["position"]], "source": source, "output": sample["output"],
                    "reference": sample["reference"], "bleu": sample["bleu"]}
                   for sample, source in zip(scores.samples, sources)]
        rows = [[s["index"], s["source"], s["output"], s["reference"], s["bleu"]] for s in samples]
        return Report("translation", split, about, scores.metrics, [], figures.translation_charts(scores),
                      Table("Samples: the first sentences, then the lowest sentence BLEU",
                            ["row", "source", "output", "reference", "sentence BLEU"], rows), {"samples": samples})
    if spec.kind == "masked_lm":
        scores = metrics.pretraining(outputs)
        return Report("pretraining", split, about, scores.metrics,
                      [_class_table(scores.nsp, "Next-sentence prediction")],
                      figures.classification_charts(scores.nsp, metrics.NSP_CLASSES, prefix="nsp_", what="NSP"),
                      None, {"nsp": _classification_details(scores.nsp, metrics.NSP_CLASSES, [])})
    raise DlkitError(f"dlkit report does not know data of kind {spec.kind!r} yet.")


def _about(loaded: Loaded, split: str, overrides: list[str]) -> dict[str, Any]:
    """The page's header and what `runs compare --report` checks a report against: run, checkpoint, overrides."""
    from dlkit import __version__
    from dlkit.runs.query import Run

    run = Run.load(loaded.run_dir) if loaded.run_dir is not None else None
    return {"run": run.id if run else loaded.checkpoint.stem, "folder": str(output_folder(loaded)),
            "name": run.summary.get("name") if run else None, "model": type(loaded.task.model).__name__,
            "choices": dict(run.summary.get("choices") or {}) if run else {},
            "checkpoint": str(loaded.checkpoint.resolve()), "checkpoint_time": loaded.checkpoint.stat().st_mtime,
            "overrides": overrides, "split": split, "created": datetime.now().isoformat(timespec="seconds"),
            "dlkit_version": __version__}


def _class_table(scores: metrics.Classification, title: str) -> Table:
    """The per-class table: precision, recall, F1, support and the one-vs-rest areas of each class."""
    columns = ["class", "precision", "recall", "f1", "support", "auroc", "average_precision"]
    return Table(title, columns, [[row[c] for c in columns] for row in scores.classes])


def _classification_details(scores: metrics.Classification, names: list[str],
                            mistakes: list[dict[str, Any]]) -> dict[str, Any]:
    """What metrics.json holds of a classifier beyond the headline metrics."""
    return {"classes": scores.classes, "confusion_matrix": {"labels": names, "matrix": scores.confusion},
            "calibration": scores.calibration, "mistakes": mistakes}


def _cell(example: str | np.ndarray) -> str | Picture:
    """A text as it is; an image [H, W, C] as an inline PNG."""
    if isinstance(example, str):
        return example
    from PIL import Image

    pixels = example[..., 0] if example.shape[-1] == 1 else example
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return Picture("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))


# -- the folder ---------------------------------------------------------------------------------------------------
def write(report: Report, folder: Path) -> Path:
    """Write the report's folder (report.html, <figure>.png, metrics.json, figures.json) beside where it goes, then
    move it into place, so the folder is never half written; an earlier report there is replaced. The page."""
    from plotly.utils import PlotlyJSONEncoder

    from dlkit.reporting import page

    folder = check_target(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-new-", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # (mkdtemp makes it private)
    try:
        plotted = {}
        for chart in report.charts:
            figures.save_png(chart, staging / f"{chart.name}.png")
            plotted[chart.name] = figures.plotly_figure(chart)
        (staging / FIGURES).write_text(
            json.dumps({name: figure.to_plotly_json() for name, figure in plotted.items()}, cls=PlotlyJSONEncoder),
            encoding="utf-8")
        records.write_json(staging / METRICS, as_record(report))
        page.write_report(report, plotted, staging / PAGE)
        _swap(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / PAGE


def as_record(report: Report) -> dict[str, Any]:
    """metrics.json: the report's numbers (no pictures), tagged with FORMAT."""
    return {"format": FORMAT, "kind": report.kind, "split": report.split, "run": report.about,
            "metrics": report.metrics, **report.details, "figures": [chart.name for chart in report.charts]}


def _swap(staging: Path, folder: Path) -> None:
    """Move the written folder into place; an earlier report there is moved aside first and removed after (put back
    if the move fails)."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}-old-", dir=folder.parent))
    os.replace(folder, aside / folder.name)
    try:
        os.replace(staging, folder)
    except OSError:
        os.replace(aside / folder.name, folder)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def log_to_wandb(loaded: Loaded, report: Report, folder: Path, overrides: list[str]) -> dict[str, Any] | None:
    """Log the figures (images), the tables and the metrics to a W&B eval run of the training run (as `dlkit eval`
    makes one); None when the run did not log to W&B or W&B is disabled."""
    from dlkit.loggers.wandb_logger import finish_loggers, make_eval_logger
    from dlkit.loggers.wandb_runs import describe

    home = output_folder(loaded)
    logger = make_eval_logger(loaded.cfg, home, loaded.checkpoint, overrides, {"eval.report": report.split})
    if logger is None:
        return None
    import wandb

    prefix = f"report/{report.split}"
    values: dict[str, Any] = {f"{prefix}/{chart.name}": wandb.Image(str(folder / f"{chart.name}.png"))
                              for chart in report.charts}
    for table in report.tables:
        values[f"{prefix}/{table.title.lower().replace(' ', '_')}"] = wandb.Table(columns=table.columns,
                                                                                 data=table.rows)
    values.update({f"{prefix}/{name}": value for name, value in report.metrics.items() if value is not None})
    failed = True
    try:
        logger.experiment.log(values)
        failed = False
    finally:
        finish_loggers([logger], str(home), failed=failed)
    return describe(logger, home)
