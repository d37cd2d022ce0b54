"""A report of a trained run on one split: what it holds (Report), how it is built from the run (build) and the
folder it is written to (write): report.html, a PNG per figure, metrics.json and figures.json."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from dlkit.errors import DlkitError, UsageError
from dlkit.inference import Loaded, output_folder
from dlkit.reporting import figures, metrics
from dlkit.reporting.collect import collect
from dlkit.reporting.figures import Chart
from dlkit.runs import records

# what marks a folder as a dlkit report (metrics.json's "format"): such a folder may be written over
FORMAT = "dlkit-report/1"
CLASSIFIERS = ("image_classification", "text_classification")


@dataclass
class Picture:
    """An image shown in the page itself: a PNG as a data: URL."""

    data_url: str


@dataclass
class Table:
    """A titled table of the page; cells are text, numbers, None or Pictures."""

    title: str
    columns: list[str]
    rows: list[list[Any]]


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


def check_split(split: str) -> None:
    """A usage error unless the split is one a report reads."""
    from dlkit.errors import did_you_mean
    from dlkit.reporting.collect import SPLITS

    if split not in SPLITS:
        raise UsageError(f"--split {split}: choose test or val.{did_you_mean(split, SPLITS)}")


def default_folder(loaded: Loaded, split: str) -> Path:
    """RUN/report-<split> (beside a lone checkpoint: report-<split> in its folder)."""
    return output_folder(loaded) / f"report-{split}"


def check_target(folder: Path) -> None:
    """A usage error unless the folder is free to write a report to: missing, empty, or an earlier report."""
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not is_report(folder))):
        raise UsageError(f"--out {folder}: this {'folder' if folder.is_dir() else 'file'} exists and holds no dlkit "
                         "report; give a new or empty folder.")


def is_report(folder: Path) -> bool:
    return records.read_json(folder / "metrics.json").get("format") == FORMAT


def build(loaded: Loaded, split: str, mistakes: int = 16) -> Report:
    """Predict the split with the run's model and score it: a Report of the task's kind."""
    outputs = collect(loaded, split)
    spec, datamodule = loaded.datamodule.spec, loaded.datamodule
    about = _about(loaded, split)
    if not outputs:
        raise DlkitError(f"the {split} split of this run has no examples to report on.")
    if spec.kind in CLASSIFIERS:
        names = list(spec.class_names or [str(i) for i in range(spec.num_classes or 0)])
        scores = metrics.classification(outputs["probabilities"], outputs["labels"], names, mistakes)
        shown = datamodule.examples(split, [m["index"] for m in scores.mistakes])
        rows = [[m["index"], _cell(example), m["label"], m["predicted"], m["probability"], m["probability_of_label"]]
                for m, example in zip(scores.mistakes, shown)]
        noted = [{**m, "input": e} if isinstance(e, str) else m for m, e in zip(scores.mistakes, shown)]
        return Report("classification", split, about, scores.metrics, [_class_table(scores, "Per class")],
                      figures.classification_charts(scores, names),
                      Table(f"The {len(rows)} most confident mistakes", ["row", "input", "label", "predicted",
                                                                        "probability", "probability of label"], rows),
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


def _about(loaded: Loaded, split: str) -> dict[str, Any]:
    from dlkit import __version__
    from dlkit.runs.query import Run

    run = Run.load(loaded.run_dir) if loaded.run_dir is not None else None
    return {"run": run.id if run else loaded.checkpoint.stem, "folder": str(output_folder(loaded)),
            "name": run.summary.get("name") if run else None, "model": type(loaded.task.model).__name__,
            "choices": dict(run.summary.get("choices") or {}) if run else {},
            "checkpoint": str(loaded.checkpoint.resolve()), "checkpoint_time": loaded.checkpoint.stat().st_mtime,
            "split": split, "created": datetime.now().isoformat(timespec="seconds"), "dlkit_version": __version__}


def _class_table(scores: metrics.Classification, title: str) -> Table:
    columns = ["class", "precision", "recall", "f1", "support", "auroc", "average_precision"]
    return Table(title, columns, [[row[c] for c in columns] for row in scores.classes])


def _classification_details(scores: metrics.Classification, names: list[str],
                            mistakes: list[dict[str, Any]]) -> dict[str, Any]:
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
    """Write the report's folder (report.html, <figure>.png, metrics.json, figures.json) next to where it goes,
    then move it into place, so the folder is never half written; an earlier report there is replaced."""
    from plotly.utils import PlotlyJSONEncoder

    from dlkit.reporting import page

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # (mkdtemp makes it private)
    try:
        plotted = {}
        for chart in report.charts:
            figures.save_png(chart, staging / f"{chart.name}.png")
            plotted[chart.name] = figures.plotly_figure(chart)
        (staging / "figures.json").write_text(
            json.dumps({name: figure.to_plotly_json() for name, figure in plotted.items()}, cls=PlotlyJSONEncoder),
            encoding="utf-8")
        records.write_json(staging / "metrics.json", as_record(report))
        page.write_report(report, plotted, staging / "report.html")
        _replace(folder, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / "report.html"


def as_record(report: Report) -> dict[str, Any]:
    """metrics.json: the report's numbers (no pictures), tagged with FORMAT."""
    return {"format": FORMAT, "kind": report.kind, "split": report.split, "run": report.about,
            "metrics": report.metrics, **report.details, "figures": [chart.name for chart in report.charts]}


def _replace(folder: Path, staging: Path) -> None:
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}-old-{os.getpid()}")
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def log_to_wandb(loaded: Loaded, report: Report, folder: Path, overrides: list[str]) -> dict[str, Any] | None:
    """Log the figures (images), the per-class table and the metrics to a W&B eval run of the training run (as
    `dlkit eval` makes one); None when the run did not log to W&B or W&B is disabled."""
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
