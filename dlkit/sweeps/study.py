"""Hyperparameter search on current Optuna: a persistent study that resumes, prunes and runs trials in parallel.

Each trial is an ordinary dlkit run (dlkit.runner) in `<output_dir>/sweeps/<study>/trial_NNN/`, so it has a
run folder, checkpoints and a W&B run grouped under the study. The study lives in SQLite in the sweep folder
(or any database URL in hparams_search.storage), so the same command run again continues it.

How the processes of one sweep share the work:
- Each process claims a trial (Optuna's `ask`) under a file lock in the sweep folder, and only while the
  trials finished, running or queued are fewer than `n_trials`: the study ends with exactly `n_trials`.
- Every claimed trial records the process running it (`host:pid`), so a trial whose process is gone is seen
  as interrupted (by `sweep status`, and by the next run of the sweep, which queues its parameters again).
- Each process has its own sampler seed, derived from `sampler.seed`, the number of trials the study held
  when the process opened it and the worker's number, so no process replays the random draws of another
  (only the first process of a new study uses `sampler.seed` as it is; the grid sampler keeps it everywhere,
  since its grid order must be the same in every process).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from dlkit import runner, ui
from dlkit.config import metric_mode
from dlkit.errors import Stopped, UsageError
from dlkit.runs import records
from dlkit.sweeps import storage
from dlkit.sweeps.space import as_override, check_space, grid, parse_space, suggest

WORKER_ENV = "DLKIT_SWEEP_WORKER"
_MISSING = object()
GO = "go"


def sweep_dir_of(cfg: DictConfig, name: str) -> Path:
    """The sweep folder, as an absolute path (trial folders and W&B sync commands then work from anywhere)."""
    return (Path(cfg.paths.output_dir) / "sweeps" / name).resolve()


def is_worker() -> bool:
    """True in a worker process started by a parallel sweep (it runs trials and reports nothing)."""
    return bool(os.environ.get(WORKER_ENV))


def worker_number() -> int:
    """0 in the main process, 1.. in the workers it starts."""
    try:
        return int(os.environ.get(WORKER_ENV) or 0)
    except ValueError:
        return 0


def worker_command(overrides: list[str], config_dir: str | None) -> list[str]:
    """The command of a worker process: the same `dlkit sweep`, through `python -m dlkit`."""
    options = ["--config-dir", str(config_dir)] if config_dir else []
    return [sys.executable, "-m", "dlkit", "sweep", *options, "--", *overrides]


def settings(overrides: list[str], config_dir: str | None) -> tuple[DictConfig, dict[str, str], str]:
    """The composed config of the sweep's base command, its group choices, and the study name."""
    job = runner.prepare(overrides, config_dir)
    search = job.cfg.get("hparams_search")
    if not search:
        raise UsageError("dlkit sweep needs hparams_search=NAME (see `dlkit config list hparams_search`).")
    check_space(parse_space(OmegaConf.to_container(search.params, resolve=True)))
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


def sampler_seed(seed: int | None, kind: str, trials_before: int, worker: int, shared: bool) -> int | None:
    """The sampler seed of one process.

    Samplers draw from their own random generator, rebuilt in every process: with one seed everywhere, a
    study continued later (or a parallel worker) would draw trial 0's parameters again. The first process of
    a new study keeps `seed` (a fresh sweep is reproducible); any other gets a seed derived from `seed`, the
    trials the study already holds and the worker number, which differ from one process to the next. With a
    storage named by the user (possibly shared by several machines starting at once) the host and process id
    are mixed in too. The grid sampler keeps `seed` everywhere: it is the order of the grid, which every
    process must share for trials to take distinct grid points.
    """
    if seed is None or kind == "grid" or (trials_before == 0 and worker == 0 and not shared):
        return seed
    parts = [seed, trials_before, worker, *([socket.gethostname(), os.getpid()] if shared else [])]
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _sampler(search: DictConfig, space: dict[str, Any], trials_before: int = 0, worker: int = 0,
             shared: bool = False):
    import optuna

    spec = _named(search.get("sampler"), "tpe")
    kind, seed = spec.pop("name", "tpe"), spec.pop("seed", None)
    seed = sampler_seed(seed, kind, trials_before, worker, shared)
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
    pruners = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
               "none": optuna.pruners.NopPruner}
    if kind not in pruners:
        raise UsageError(f"hparams_search.pruner.name={kind!r}: choose {', '.join(pruners)}.")
    if kind == "none":  # no pruning: whatever settings a preset left for another pruner do not apply
        return pruners[kind]()
    accepted = [n for n in inspect.signature(pruners[kind]).parameters if n != "self"]
    unknown = [key for key in spec if key not in accepted]
    if unknown:  # e.g. a preset's median settings left in place by pruner.name=hyperband
        raise UsageError(f"hparams_search.pruner.{unknown[0]} is not a setting of the {kind} pruner (it takes "
                         f"{', '.join(accepted) or 'none'}): give the whole pruner, e.g. "
                         f"'hparams_search.pruner={{name: {kind}}}'.")
    return pruners[kind](**spec)


def open_study(cfg: DictConfig, name: str, sweep_dir: Path, worker: int = 0):
    """Create or load the study (same name and storage: the same study), with this process's sampler."""
    import optuna

    search = cfg.hparams_search
    space = parse_space(OmegaConf.to_container(search.params, resolve=True))
    direction = search.get("direction") or ("minimize" if metric_mode(cfg.optimized_metric) == "min" else "maximize")
    url = search.get("storage") or f"sqlite:///{sweep_dir / 'study.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # machines starting at once would race to make the tables
    with storage.database_lock(search.get("storage"), "create"):
        study = optuna.create_study(study_name=name, storage=storage.storage_of(url), pruner=_pruner(search),
                                    direction=direction, load_if_exists=True)
    study.sampler = _sampler(search, space, len(study.get_trials(deepcopy=False)), worker,
                             shared=bool(search.get("storage")))
    return study, space, url


class TrialFailed(Exception):
    """A trial that must not count as complete: its run failed, or had a non-finite loss, or gave no metric."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        self.reason = reason
        super().__init__(detail if detail and detail.startswith(reason) else f"{reason} ({detail})" if detail
                         else reason)


def run(overrides: list[str], config_dir: str | None = None) -> Path:
    """Run (or continue) the study of `hparams_search=NAME` with the other overrides as its base command.

    The main process starts its workers (n_jobs > 1) before anything slow, so that they import PyTorch and
    Lightning while it prepares the study; they claim trials once it tells them the study is ready (after
    interrupted trials were queued again).
    """
    from dlkit.config import compose_with_choices

    if is_worker():
        return _work(overrides, config_dir)
    n_jobs = int(OmegaConf.select(compose_with_choices(overrides, config_dir)[0], "hparams_search.n_jobs",
                                  default=1) or 1)
    command = worker_command(overrides, config_dir)
    workers = [subprocess.Popen(command, env={**os.environ, WORKER_ENV: str(number)}, stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, text=True)
               for number in range(1, n_jobs)]
    told = False
    try:
        cfg, _, name = settings(overrides, config_dir)
        search = cfg.hparams_search
        sweep_dir = sweep_dir_of(cfg, name)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        study, space, url = open_study(cfg, name, sweep_dir)
        with storage.claim_lock(sweep_dir, search.get("storage"), name):
            recovered = storage.recover_interrupted(study) if search.get("recover_interrupted", True) else 0
        if recovered:
            ui.console.print(f"Continuing study {name}: {recovered} interrupted trial(s) queued again.")
        records.write_json(sweep_dir / storage.SWEEP_FILE, {
            "study": name, "storage": url, "overrides": overrides, "metric": cfg.optimized_metric,
            "direction": study.direction.name.lower()})
        if storage.planned(study) < int(search.n_trials):
            for process in workers:
                _tell_worker(process, GO)
            told = True
            _optimize(study, space, cfg, overrides, config_dir, sweep_dir)
    finally:
        for number, process in enumerate(workers, start=1):
            if not told:  # nothing to do, or the main process failed before the study was ready: no trial started
                process.terminate()
            _tell_worker(process, None)
            if process.wait() != 0 and told:
                ui.console.print(f"[yellow]Sweep worker {number} exited with code {process.returncode}.[/]")
    return sweep_dir


def _tell_worker(process: subprocess.Popen, word: str | None) -> None:
    """Send a word to a worker (None: close its input, which makes a worker still waiting leave)."""
    with contextlib.suppress(OSError, ValueError):
        if word is None:
            process.stdin.close()
        else:
            process.stdin.write(word + "\n")
            process.stdin.flush()


def _work(overrides: list[str], config_dir: str | None) -> Path | None:
    """A worker process: import the training stack and compose the config while the main process prepares the
    study, then claim trials once it says the study is ready."""
    import optuna  # noqa: F401 - the slow imports, done while the main process prepares

    import dlkit.callbacks  # noqa: F401
    import dlkit.training  # noqa: F401

    try:
        cfg, _, name = settings(overrides, config_dir)
        reproduce = ["dlkit", "train", *train_overrides(overrides, config_dir)]
    except Exception as err:  # noqa: BLE001 - the main process reports a bad config; raised only if it goes on
        prepared: Exception | None = err
    else:
        prepared = None
    if sys.stdin.readline().strip() != GO:
        return None  # nothing left to do, or the main process stopped
    if prepared is not None:
        raise prepared
    sweep_dir = sweep_dir_of(cfg, name)
    study, space, _ = open_study(cfg, name, sweep_dir, worker=worker_number())
    _optimize(study, space, cfg, overrides, config_dir, sweep_dir, reproduce)
    return sweep_dir


def _optimize(study, space: dict[str, Any], cfg: DictConfig, overrides: list[str], config_dir: str | None,
              sweep_dir: Path, reproduce: list[str] | None = None) -> None:
    """Claim and run trials until the study holds n_trials (or the timeout passes)."""
    search = cfg.hparams_search
    n_trials, timeout = int(search.n_trials), search.get("timeout")
    reproduce = reproduce or ["dlkit", "train", *train_overrides(overrides, config_dir)]
    started = time.monotonic()
    while timeout is None or time.monotonic() - started < float(timeout):
        trial = storage.claim(study, sweep_dir, n_trials, search.get("storage"))
        if trial is None or not _run_trial(study, trial, space, cfg, overrides, config_dir, sweep_dir, reproduce):
            return


def _run_trial(study, trial, space: dict[str, Any], cfg: DictConfig, overrides: list[str],
               config_dir: str | None, sweep_dir: Path, reproduce: list[str]) -> bool:
    """Run one claimed trial and tell the study how it ended; False when the sweep should stop here."""
    from optuna.trial import TrialState

    from dlkit.callbacks import PruneOnPlateau
    from dlkit.tasks.base import NonFiniteLoss

    state, value = TrialState.FAIL, None
    try:
        params = suggest(trial, space)
        trial.set_user_attr("command", " ".join([*reproduce, *(as_override(k, v) for k, v in params.items())]))
        job = runner.prepare([*overrides, *(as_override(k, v) for k, v in params.items())], config_dir)
        with open_dict(job.cfg):
            job.cfg.paths.multirun_dir = str(sweep_dir)  # the W&B group of every trial
        trial_dir = sweep_dir / f"trial_{trial.number:03d}"
        trial_dir.mkdir(parents=True, exist_ok=False)
        trial.set_user_attr("run_dir", str(trial_dir))
        pruning = PruneOnPlateau(trial, cfg.optimized_metric)
        try:
            runner.run_job(job, trial_dir, callbacks=[pruning])
        except (KeyboardInterrupt, SystemExit, Stopped):
            raise
        except NonFiniteLoss as err:  # the run stopped at the step its training loss stopped being finite
            raise TrialFailed("non-finite loss", str(err)) from err
        except Exception as err:
            raise TrialFailed(job.error or f"{type(err).__name__}: {err}") from err
        bad_loss = non_finite_loss(job.metrics)  # a validation or test loss
        if bad_loss:
            records.record_end(trial_dir, "failed", job.metrics, error=f"non-finite loss: {bad_loss}")
            raise TrialFailed("non-finite loss", bad_loss)
        if pruning.pruned:
            state = TrialState.PRUNED
        else:
            value = job.metrics.get("optimized_metric")
            if value is None or not math.isfinite(value):
                raise TrialFailed(f"no finite {cfg.optimized_metric}")
            state = TrialState.COMPLETE
    except (KeyboardInterrupt, SystemExit, Stopped):
        storage.requeue(study, trial._trial_id, trial.number, trial.params)
        raise
    except TrialFailed as err:
        _failed(trial, err.reason, str(err))
    except Exception as err:  # noqa: BLE001 - a broken trial fails alone; the study goes on
        _failed(trial, f"{type(err).__name__}: {err}", f"{type(err).__name__}: {err}")
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as err:  # the grid sampler asks the study to stop: every grid point was taken
        if "Study.stop" not in str(err):
            raise
        return False
    return True


def non_finite_loss(metrics: dict[str, Any]) -> str | None:
    """`name = value` of the first loss (any key whose last part names a loss: train/loss, val/mlm_loss,
    train/loss_epoch, ...) that is NaN or infinite; None when every loss is finite."""
    for key, value in metrics.items():
        if "loss" not in key.rsplit("/", 1)[-1]:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(number):
            return f"{key} = {number}"
    return None


def _failed(trial: Any, reason: str, message: str) -> None:
    """Record why a trial failed: `fail_reason` (short: "non-finite loss", or the error) and `error` (one line)."""
    line = (message.strip().splitlines() or [reason])[0][:300]
    trial.set_user_attr("fail_reason", (reason.strip().splitlines() or ["error"])[0][:120])
    trial.set_user_attr("error", line)
    ui.console.print(f"[red]Trial {trial.number} failed:[/] {line}")
