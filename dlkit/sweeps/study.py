"""Hyperparameter search on current Optuna: a persistent study that resumes, prunes and runs trials in parallel.

Each trial is an ordinary dlkit run (dlkit.runner) in `<output_dir>/sweeps/<study>/trial_NNN/`, so it has a
run folder, checkpoints and a W&B run grouped under the study. The study lives in SQLite in the sweep folder
(or any database URL in hparams_search.storage), so the same command run again continues it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from dlkit import run_folder, runner
from dlkit.config import metric_mode
from dlkit.errors import UsageError
from dlkit.sweeps.space import as_override, grid, parse_space, suggest

WORKER_ENV = "DLKIT_SWEEP_WORKER"
_MISSING = object()
SWEEP_FILE = "sweep.json"


class PruneOnPlateau(pl.Callback):
    """Report the optimized metric to the trial after every validation; stop the run when Optuna prunes it."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric, self.pruned = trial, metric, False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if trainer.sanity_checking or value is None:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True


def sweep_dir_of(cfg: DictConfig, name: str) -> Path:
    return Path(cfg.paths.output_dir) / "sweeps" / name


def is_worker() -> bool:
    """True in a worker process started by a parallel sweep (it runs trials and reports nothing)."""
    return bool(os.environ.get(WORKER_ENV))


def worker_command(overrides: list[str], config_dir: str | None) -> list[str]:
    """The command of a worker process: the same `dlkit sweep`, through `python -m dlkit`."""
    options = ["--config-dir", str(config_dir)] if config_dir else []
    return [sys.executable, "-m", "dlkit", "sweep", *options, "--", *overrides]


def storage_of(url: str) -> Any:
    """Optuna storage for a URL; SQLite waits for its lock (parallel workers write at once) instead of failing."""
    import optuna

    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return url


def settings(overrides: list[str], config_dir: str | None) -> tuple[DictConfig, dict[str, str], str]:
    """The composed config of the sweep's base command, its group choices, and the study name."""
    job = runner.prepare(overrides, config_dir)
    search = job.cfg.get("hparams_search")
    if not search:
        raise UsageError("dlkit sweep needs hparams_search=NAME (see `dlkit config list hparams_search`).")
    name = search.get("study_name") or job.choices.get("hparams_search", "sweep")
    return job.cfg, job.choices, name


def _is_search(override: str) -> bool:
    return override.lstrip("+~").startswith("hparams_search")


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a config container as {dotted.key: value}; lists are leaves."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    return {k: v for key, value in node.items() for k, v in _leaves(value, f"{prefix}.{key}".lstrip(".")).items()}


def train_overrides(overrides: list[str], config_dir: str | None = None) -> list[str]:
    """Overrides with which `dlkit train` composes what the sweep's trials compose, minus the preset itself.

    That is the groups the preset picks (model and data always named), the user's overrides, and any value
    the preset sets outside `hparams_search`.
    """
    from dlkit.config import compose_with_choices

    cfg, choices = compose_with_choices(overrides, config_dir)
    base = [o for o in overrides if not _is_search(o)]
    _, plain = compose_with_choices(base, config_dir)
    given = {o.partition("=")[0].lstrip("+~") for o in base}
    picked = [f"{group}={choice}" for group, choice in choices.items()
              if group != "hparams_search" and group not in given
              and (group in ("model", "data") or plain.get(group) != choice)]
    picked += [f"{group}=null" for group in plain if group not in choices and group not in given]
    args = [*picked, *base]
    target = _leaves({k: v for k, v in OmegaConf.to_container(cfg).items() if k != "hparams_search"})
    current = _leaves(OmegaConf.to_container(compose_with_choices(args, config_dir)[0]))
    for key, value in target.items():
        if current.get(key, _MISSING) != value:
            args.append(("" if key in current else "+") + as_override(key, value))
    return args


def _named(node: Any, default: str) -> dict[str, Any]:
    """A sampler/pruner setting as a dict: `median` and `{name: median, ...}` both work."""
    if node is None or isinstance(node, str):
        return {"name": node or default}
    return dict(node)


def _sampler(search: DictConfig, space: dict[str, Any]):
    import optuna

    spec = _named(search.get("sampler"), "tpe")
    kind, seed = spec.pop("name", "tpe"), spec.pop("seed", None)
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, **spec),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "grid": lambda: optuna.samplers.GridSampler(grid(space), seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, **spec),
    }
    if kind not in samplers:
        raise UsageError(f"hparams_search.sampler.name={kind!r}: choose {', '.join(samplers)}.")
    return samplers[kind]()


def _pruner(search: DictConfig):
    import optuna

    spec = _named(search.get("pruner"), "none")
    kind = spec.pop("name", "none")
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(**spec),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(**spec),
        "none": lambda: optuna.pruners.NopPruner(),
    }
    if kind not in pruners:
        raise UsageError(f"hparams_search.pruner.name={kind!r}: choose {', '.join(pruners)}.")
    return pruners[kind]()


def open_study(cfg: DictConfig, name: str, sweep_dir: Path):
    """Create or load the study (same name and storage: the same study)."""
    import optuna

    search = cfg.hparams_search
    space = parse_space(OmegaConf.to_container(search.params, resolve=True))
    direction = search.get("direction") or ("minimize" if metric_mode(cfg.optimized_metric) == "min" else "maximize")
    storage = search.get("storage") or f"sqlite:///{sweep_dir / 'study.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage_of(storage), sampler=_sampler(search, space),
                                pruner=_pruner(search), direction=direction, load_if_exists=True)
    return study, space, storage


def recover_interrupted(study) -> int:
    """Trials left RUNNING by a killed process: mark them failed (interrupted) and queue their parameters again."""
    from optuna.trial import TrialState

    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        recovered += 1
    return recovered


def counted(study) -> int:
    """Trials that count towards n_trials: complete, pruned, or failed by themselves (not interrupted)."""
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))
               for t in study.get_trials(deepcopy=False))


def run(overrides: list[str], config_dir: str | None = None) -> Path:
    """Run (or continue) the study of `hparams_search=NAME` with the other overrides as its base command."""
    import optuna

    cfg, _, name = settings(overrides, config_dir)
    search = cfg.hparams_search
    sweep_dir = sweep_dir_of(cfg, name)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    study, space, storage = open_study(cfg, name, sweep_dir)
    worker = is_worker()
    if not worker:
        recovered = recover_interrupted(study) if search.get("recover_interrupted", True) else 0
        if recovered:
            runner.console.print(f"Continuing study {name}: {recovered} interrupted trial(s) queued again.")
        run_folder.write_json(sweep_dir / SWEEP_FILE, {
            "study": name, "storage": storage, "overrides": overrides, "metric": cfg.optimized_metric,
            "direction": study.direction.name.lower()})
    n_trials = int(search.n_trials)
    reproduce = ["dlkit", "train", *train_overrides(overrides, config_dir)]

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        job = runner.prepare([*overrides, *(as_override(k, v) for k, v in params.items())], config_dir)
        with open_dict(job.cfg):
            job.cfg.paths.multirun_dir = str(sweep_dir)  # the W&B group of every trial
        trial_dir = sweep_dir / f"trial_{trial.number:03d}"
        trial_dir.mkdir(parents=True, exist_ok=False)
        trial.set_user_attr("run_dir", str(trial_dir))
        trial.set_user_attr("process", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("command", " ".join([*reproduce, *(as_override(k, v) for k, v in params.items())]))
        pruning = PruneOnPlateau(trial, cfg.optimized_metric)
        runner.run_job(job, trial_dir, callbacks=[pruning])
        if pruning.pruned:
            raise optuna.TrialPruned()
        value = job.metrics.get("optimized_metric")
        if value is None or math.isnan(value):
            raise ValueError(f"the run gave no finite {cfg.optimized_metric}")
        return value

    def enough(study: optuna.Study, _trial: Any) -> None:
        if counted(study) >= n_trials:
            study.stop()

    workers = []
    if not worker and int(search.get("n_jobs", 1)) > 1 and counted(study) < n_trials:
        command = worker_command(overrides, config_dir)
        workers = [subprocess.Popen(command, env={**os.environ, WORKER_ENV: str(number)}, stdout=subprocess.DEVNULL)
                   for number in range(1, int(search.n_jobs))]
    try:
        if counted(study) < n_trials:
            study.optimize(objective, callbacks=[enough], timeout=search.get("timeout"), catch=(Exception,))
    finally:
        for number, process in enumerate(workers, start=1):
            if process.wait() != 0:
                runner.console.print(f"[yellow]Sweep worker {number} exited with code {process.returncode}.[/]")
    return sweep_dir


def trials_table(study) -> tuple[list[str], list[list[Any]]]:
    """State, parameters, value and duration of every trial."""
    params = sorted({k for t in study.trials for k in t.params})
    header = ["trial", "state", *params, "value", "duration (s)", "run"]
    rows = []
    for t in study.trials:
        ended = t.datetime_complete and t.datetime_start
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if ended else None
        state = t.state.name.lower() + (" (interrupted)" if t.user_attrs.get("interrupted") else "")
        rows.append([t.number, state, *(t.params.get(p) for p in params), t.value,
                     None if seconds is None else round(seconds, 1), t.user_attrs.get("run_dir", "")])
    return header, rows


def load(sweep: str | Path, output_dir: str | Path = "outputs"):
    """(study, folder, sweep.json) of a sweep folder, or of a sweep under <output_dir>/sweeps by name or latest."""
    import optuna

    path, root = Path(sweep), Path(output_dir) / "sweeps"
    if not (path / SWEEP_FILE).is_file():
        found = root.glob(f"*/{SWEEP_FILE}") if str(sweep) == "latest" else root.glob(f"{sweep}*/{SWEEP_FILE}")
        candidates = sorted(found, key=lambda p: p.stat().st_mtime) if str(sweep) == "latest" else sorted(found)
        if not candidates:
            raise UsageError(f"no sweep {str(sweep)!r} under {root}: give a sweep folder, or --output-dir where "
                             "the sweep ran (its paths.output_dir).")
        path = candidates[-1].parent
    info = json.loads((path / SWEEP_FILE).read_text())
    storage = info["storage"]
    if storage.startswith("sqlite:///") and Path(storage[len("sqlite:///"):]).name == "study.db" \
            and (path / "study.db").is_file():
        storage = f"sqlite:///{path / 'study.db'}"  # the folder's own database, wherever it is looked at from
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=info["study"], storage=storage_of(storage)), path, info


def plots(study, sweep_dir: Path) -> list[Path]:
    """Optimization history and parallel coordinates as PNG (and HTML when plotly is installed)."""
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    from optuna.visualization import matplotlib as views

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, view in (("optimization_history", views.plot_optimization_history),
                           ("parallel_coordinate", views.plot_parallel_coordinate)):
            try:
                axis = view(study)
            except (ValueError, RuntimeError):
                continue
            figure = axis.figure if hasattr(axis, "figure") else axis.flat[0].figure
            figure.set_size_inches(9, 5)
            figure.tight_layout()
            figure.savefig(sweep_dir / f"{name}.png", dpi=110)
            written.append(sweep_dir / f"{name}.png")
            try:
                from optuna import visualization

                getattr(visualization, f"plot_{name}")(study).write_html(str(sweep_dir / f"{name}.html"))
                written.append(sweep_dir / f"{name}.html")
            except ImportError:
                pass
    return written


def importances(study) -> dict[str, float]:
    """Parameter importances (fANOVA), when at least two trials completed."""
    import optuna

    try:
        return optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}
