"""A report's figures: each described once as a Chart, drawn by matplotlib as a PNG and by plotly for the HTML page."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dlkit.reporting.metrics import BINS, Classification, Translation

if TYPE_CHECKING:
    import plotly.graph_objects as go

# more classes than this: no legend in the PNGs (the HTML's legend scrolls), no counts written in confusion cells
LEGEND_LIMIT = 12
ANNOTATE_LIMIT = 30


@dataclass
class Series:
    """One line, set of points or set of bars of a chart."""

    label: str
    x: list[float]
    y: list[float]
    style: str = "line"  # line, points or bars
    widths: list[float] | None = None  # bars: each bar's width


@dataclass
class Heatmap:
    """A matrix drawn as coloured cells: rows top-down in y_ticks' order, columns in x_ticks' order."""

    values: list[list[float]]
    x_ticks: list[str]
    y_ticks: list[str]


@dataclass
class Chart:
    """A figure: its file name, title, axes and what it draws (series, or a heatmap)."""

    name: str
    title: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    heatmap: Heatmap | None = None
    diagonal: bool = False  # a dashed y = x reference line
    unit_square: bool = False  # both axes from 0 to 1


# -- the charts of each kind of report --------------------------------------------------------------------------
def classification_charts(scores: Classification, names: list[str], prefix: str = "", what: str = "") -> list[Chart]:
    """Confusion matrix, one-vs-rest ROC and precision-recall curves, reliability diagram."""
    label = f"{what} " if what else ""
    areas = {row["class"]: row for row in scores.classes}

    def area(name: str, key: str) -> str:
        value = areas[name][key]
        return f"{name} ({'n/a' if value is None else format(value, '.3f')})"

    return [
        Chart(f"{prefix}confusion_matrix", f"{label}Confusion matrix (rows: true class)", "predicted", "true",
              heatmap=Heatmap([[float(v) for v in row] for row in scores.confusion], names, names)),
        Chart(f"{prefix}roc", f"{label}ROC, one-vs-rest (AUC in brackets; macro "
              f"{_number(scores.metrics['macro_auroc'])})", "false positive rate", "true positive rate",
              [Series(area(n, "auroc"), *curve) for n, curve in zip(names, scores.roc)
               if areas[n]["auroc"] is not None],
              diagonal=True, unit_square=True),
        Chart(f"{prefix}precision_recall", f"{label}Precision-recall, one-vs-rest (average precision in brackets)",
              "recall", "precision",
              [Series(area(n, "average_precision"), *curve) for n, curve in zip(names, scores.pr)
               if areas[n]["average_precision"] is not None], unit_square=True),
        Chart(f"{prefix}reliability", f"{label}Reliability diagram (ECE {scores.metrics['ece']:.4f}, {BINS} bins)",
              "top-1 probability", "accuracy",
              [Series("accuracy of the bin", [(b["low"] + b["high"]) / 2 for b in scores.calibration],
                      [b["accuracy"] for b in scores.calibration], "bars",
                      [max(b["high"] - b["low"], 0.01) for b in scores.calibration])],
              diagonal=True, unit_square=True),
    ]


def translation_charts(scores: Translation) -> list[Chart]:
    """Per-sentence BLEU histogram; output length against reference length."""
    counts, edges = np.histogram(scores.sentence_bleu, bins=10, range=(0, 100))
    lengths = np.array(scores.lengths or [(0, 0)], dtype=float)
    return [
        Chart("sentence_bleu", f"Sentence BLEU (corpus BLEU {scores.metrics['bleu']:.2f})", "sentence BLEU",
              "sentences", [Series("sentences", ((edges[:-1] + edges[1:]) / 2).tolist(), counts.tolist(), "bars",
                                   [10.0] * len(counts))]),
        Chart("lengths", f"Output and reference lengths (ratio {scores.metrics['length_ratio']:.3f})",
              "reference words", "output words",
              [Series("sentences", lengths[:, 0].tolist(), lengths[:, 1].tolist(), "points")], diagonal=True),
    ]


def _number(value: float | None) -> str:
    """A figure title's number: three decimals, or n/a."""
    return "n/a" if value is None else f"{value:.3f}"


# -- drawing ------------------------------------------------------------------------------------------------------
def save_png(chart: Chart, path: Path) -> Path:
    """The chart drawn by matplotlib (no pyplot: no global figure state), written to path."""
    from matplotlib.figure import Figure

    classes = len(chart.heatmap.x_ticks) if chart.heatmap else 0
    size = min(4.5 + 0.3 * classes, 16)
    figure = Figure(figsize=(size + 1.5, size) if chart.heatmap else (7, 5.5), layout="constrained")
    axes = figure.subplots()
    if chart.heatmap is not None:
        values = np.array(chart.heatmap.values)
        image = axes.imshow(values, cmap="Blues")
        figure.colorbar(image, ax=axes)
        axes.set_xticks(range(classes), chart.heatmap.x_ticks, rotation=45, ha="right")
        axes.set_yticks(range(len(chart.heatmap.y_ticks)), chart.heatmap.y_ticks)
        if classes <= ANNOTATE_LIMIT:
            middle = values.max() / 2 if values.size else 0
            for (row, column), value in np.ndenumerate(values):
                axes.text(column, row, f"{value:g}", ha="center", va="center", fontsize=8,
                          color="white" if value > middle else "black")
    for series in chart.series:
        if series.style == "bars":
            axes.bar(series.x, series.y, width=series.widths or 0.8, label=series.label, edgecolor="white", alpha=0.8)
        elif series.style == "points":
            axes.scatter(series.x, series.y, s=8, alpha=0.5, label=series.label)
        else:
            axes.plot(series.x, series.y, label=series.label, linewidth=1.2)
    if chart.diagonal:
        axes.axline((0, 0), slope=1, color="grey", linestyle="--", linewidth=1)
    if chart.unit_square:
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
    axes.set(title=chart.title, xlabel=chart.x_label, ylabel=chart.y_label)
    axes.title.set_fontsize(10)
    if 1 < len(chart.series) <= LEGEND_LIMIT:
        axes.legend(fontsize=8, loc="best")
    figure.savefig(path, dpi=110)
    return path


def plotly_figure(chart: Chart) -> go.Figure:
    """The chart as an interactive plotly figure. Names are escaped: plotly.js reads <b>, <a href> and the like in
    labels as markup."""
    import plotly.graph_objects as go

    figure = go.Figure()
    if chart.heatmap is not None:
        heatmap = chart.heatmap
        figure.add_trace(go.Heatmap(z=heatmap.values, x=_escaped(heatmap.x_ticks), y=_escaped(heatmap.y_ticks),
                                    colorscale="Blues",
                                    texttemplate="%{z}" if len(heatmap.x_ticks) <= ANNOTATE_LIMIT else None,
                                    hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
        figure.update_yaxes(autorange="reversed", type="category")
        figure.update_xaxes(type="category")
    for series in chart.series:
        if series.style == "bars":
            figure.add_trace(go.Bar(x=series.x, y=series.y, width=series.widths, name=html.escape(series.label),
                                    opacity=0.8))
        else:
            figure.add_trace(go.Scatter(x=series.x, y=series.y, name=html.escape(series.label),
                                        mode="markers" if series.style == "points" else "lines"))
    if chart.diagonal:
        top = 1.0 if chart.unit_square else max([max(s.x + s.y, default=1) for s in chart.series], default=1)
        figure.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="y = x", hoverinfo="skip",
                                    line={"dash": "dash", "color": "grey", "width": 1}))
    figure.update_layout(title={"text": html.escape(chart.title), "font": {"size": 14}}, xaxis_title=chart.x_label,
                         yaxis_title=chart.y_label, template="plotly_white", height=460,
                         margin={"l": 60, "r": 20, "t": 50, "b": 50})
    if chart.unit_square:
        figure.update_xaxes(range=[0, 1])
        figure.update_yaxes(range=[0, 1.02])
    return figure


def _escaped(names: list[str]) -> list[str]:
    """Names as plotly.js shows them literally."""
    return [html.escape(name) for name in names]
