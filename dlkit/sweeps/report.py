"""The report of an Optuna sweep, printed by `dlkit sweep`, `dlkit sweep status` and `dlkit train -m
hparams_search=NAME`: trials table, best trial and the command that reproduces it, importances, plots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dlkit.sweeps.space import _decode


def run_and_report(overrides: list[str], config_dir: str | None = None) -> Path:
    """Run (or continue) the study, then print its report (a worker process of a parallel sweep prints none)."""
    from dlkit.sweeps import study

    sweep_dir = study.run(overrides, config_dir)
    if not study.is_worker():
        show(str(sweep_dir))
    return sweep_dir


def show(sweep: str, output_dir: str = "outputs") -> None:
    """Print the report of a sweep (a folder, a study name or `latest`) and write its plots."""
    from dlkit import ui
    from dlkit.sweeps import storage

    study, folder, info = storage.load(sweep, output_dir)
    header, rows, best_row = trials_table(study)
    ui.render_table(header, rows, title=f"Study {info['study']} ({info['direction']} {info['metric']}): {folder}",
                  highlight=best_row)
    try:
        best = study.best_trial
    except ValueError:
        print("No trial has finished yet.")
        return
    print(f"Best: trial {best.number}, {info['metric']} = {best.value:.4f}, {params_text(best.params)}")
    print(f"Reproduce: {best.user_attrs.get('command', '')}")
    ranked = importances(study)
    if ranked:
        print("Importance: " + ", ".join(f"{k} {v:.2f}" for k, v in ranked.items()))
    for path in plots(study, folder):
        print(f"Plot: {path}")


def trials_table(study) -> tuple[list[str], list[list[Any]], int | None]:
    """Header, one row per trial (state, parameters, value, duration, run folder, note) and the best trial's row.

    A trial still marked running whose process is gone shows as `interrupted` (the study is not changed:
    the next run of the sweep queues it again).
    """
    from optuna.trial import TrialState

    from dlkit.sweeps.storage import process_alive

    trials = study.get_trials(deepcopy=False)
    params = sorted({k for t in trials for k in t.params})
    header = ["trial", "state", *params, "value", "duration", "run", "note"]
    try:
        best_number = study.best_trial.number
    except ValueError:
        best_number = None
    rows, best_row = [], None
    retried = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    for t in trials:
        state = t.state.name.lower()
        if t.state == TrialState.RUNNING and process_alive(t) is False:
            state = "interrupted"
        ended = t.datetime_complete and t.datetime_start and not t.user_attrs.get("interrupted")
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if ended else None
        if t.number == best_number:
            best_row = len(rows)
        rows.append([t.number, state, *(value_text(t.params[p]) if p in t.params else None for p in params),
                     t.value, duration_text(seconds), _shown_path(t.user_attrs.get("run_dir", "")),
                     _note(t, retried)])
    if not any(row[-1] for row in rows):  # no trial has anything to note: no empty column
        header, rows = header[:-1], [row[:-1] for row in rows]
    return header, rows, best_row


def _note(trial: Any, retried: dict[int, int]) -> str:
    notes = []
    if trial.user_attrs.get("interrupted"):
        notes.append("interrupted" + (f", retried as trial {retried[trial.number]}" if trial.number in retried else ""))
    elif trial.user_attrs.get("fail_reason"):
        notes.append(trial.user_attrs["fail_reason"])
    if "retry_of" in trial.user_attrs:
        notes.append(f"retry of trial {trial.user_attrs['retry_of']}")
    return "; ".join(notes)


def value_text(value: Any) -> str:
    """A parameter's value as a person reads it: 0.0001644, 0.2188, [256, 128], mean."""
    value = _decode(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value_text(value)}" for key, value in params.items())


def duration_text(seconds: float | None) -> str | None:
    """21.6 s, 3 min 05 s, 2 h 07 min."""
    if seconds is None:
        return None
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _shown_path(path: str) -> str:
    """A run folder relative to the working directory when it lies below it (the study keeps it absolute)."""
    if not path:
        return ""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive
        return path
    return path if relative.startswith("..") else relative


def plots(study, sweep_dir: Path) -> list[Path]:
    """Optimization history and parallel coordinates, as PNG (matplotlib) and as interactive HTML (plotly;
    the HTML files share one plotly.min.js written beside them, so they open without a network)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from optuna import visualization
    from optuna.visualization import matplotlib as views

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("optimization_history", "parallel_coordinate"):
            try:
                axis = getattr(views, f"plot_{name}")(study)
            except (ValueError, RuntimeError):
                continue
            figure = axis.figure if hasattr(axis, "figure") else axis.flat[0].figure
            figure.set_size_inches(9, 5)
            figure.tight_layout()
            figure.savefig(sweep_dir / f"{name}.png", dpi=110)
            import matplotlib.pyplot as plt

            plt.close(figure)
            written.append(sweep_dir / f"{name}.png")
            getattr(visualization, f"plot_{name}")(study).write_html(
                str(sweep_dir / f"{name}.html"), include_plotlyjs="directory")
            written.append(sweep_dir / f"{name}.html")
    return written


def importances(study) -> dict[str, float]:
    """Parameter importances (fANOVA), when at least two trials completed."""
    import optuna

    try:
        return optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}
