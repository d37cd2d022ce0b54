"""Run `dlkit train`: compose and check every job first, then give each its run folder and train it.

One job: outputs/<date>/<time>-<id>/. A multirun (-m): outputs/multirun/<date>/<time>-<id>/<N>/ per job
and a multirun.json + summary table in the multirun folder. A failing job does not stop a multirun
unless fail_fast is set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict
from rich.markup import escape
from rich.table import Table

from dlkit import redact, run_folder, ui
from dlkit.config import compose_with_choices, expand_sweep
from dlkit.errors import DlkitError, Stopped, UsageError, stop_on_signals
from dlkit.tracking.wandb_logger import wandb_summary

log = logging.getLogger("dlkit")
console = ui.console


@dataclass
class Job:
    """One training job: its overrides, composed config and, once run, its outcome."""

    overrides: list[str]
    cfg: DictConfig
    choices: dict[str, str]
    run_dir: Path | None = None
    status: str = "pending"
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    world_size: int = 1
    wandb: dict[str, Any] | None = None


def prepare(overrides: list[str], config_dir: str | None = None) -> Job:
    """Compose and check one job's config (no folder is created, nothing is trained)."""
    job = compose_job(overrides, config_dir)
    check_job(job)
    return job


def compose_job(overrides: list[str], config_dir: str | None = None) -> Job:
    """Compose one job's config and check every value against the schema (fast: no torch)."""
    from dlkit import schema

    cfg, choices = compose_with_choices(overrides, config_dir)
    schema.check(cfg)
    with open_dict(cfg):
        if cfg.get("name") is None:
            cfg.name = f"{choices.get('model', 'model')}-{choices.get('data', 'data')}"
        for override in overrides:  # a run id is text: Hydra would read 1889e9 as a float and 001234 as 1234
            if override.startswith("resume="):
                cfg.resume = override.split("=", 1)[1].strip("'\"") or None
    return Job(list(overrides), cfg, choices)


def check_job(job: Job) -> None:
    """The checks that need the code (impossible model/data pairs, hardware) and the model's say on its data."""
    from dlkit.checks import check

    check(job.cfg, job.choices)
    _apply_model_data_settings(job.cfg)


def describe(job: Job) -> str:
    """One line saying what a job builds: model, data, trainer, precision and logger."""
    picks = job.choices
    parts = [f"trainer={picks.get('trainer', '?')}", f"precision={picks.get('precision', '?')}",
             f"logger={picks.get('logger', 'none')}"]
    return f"[bold]{escape(picks.get('model', 'model'))}[/] on [bold]{escape(picks.get('data', 'data'))}[/]  " + \
        escape("  ".join(parts))


def _apply_model_data_settings(cfg: DictConfig) -> None:
    """Let the model say what its data must use (BERT: its checkpoint's vocabulary and [CLS]/[SEP] framing)."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    settings = getattr(get_class(cfg.model._target_), "data_settings", None)
    if settings is not None:
        with open_dict(cfg):
            cfg.data = OmegaConf.merge(cfg.data, settings(cfg.model))


def train(overrides: list[str], multirun: bool = False, config_dir: str | None = None,
          fail_fast: bool = False) -> list[Job]:
    """Run one job, or every job of a multirun; return the jobs with their outcomes."""
    ui.quiet_third_party()
    if not multirun:
        job = compose_job(overrides, config_dir)
        if not job.cfg.get("resume"):
            console.print(f"Training {describe(job)}")
        with ui.status("Importing PyTorch and Lightning, checking the config"):
            check_job(job)
        if job.cfg.get("resume"):
            return [resume(job)]
        run_job(job, _new_run_dir(job.cfg))
        return [job]
    if any(o.startswith("hparams_search=") for o in overrides):  # `-m hparams_search=NAME` is an Optuna study
        from dlkit.sweeps import report

        report.run_and_report(overrides, config_dir)  # the same report as `dlkit sweep`
        return []
    jobs = [compose_job(job_overrides, config_dir) for job_overrides in expand_sweep(overrides)]
    with ui.status(f"Importing PyTorch and Lightning, checking {len(jobs)} configs"):
        for job in jobs:
            check_job(job)
    if jobs[0].cfg.launcher.name != "local":
        from dlkit.launcher import check

        check(jobs[0].cfg.launcher)
    root = run_folder.new_folder(jobs[0].cfg.paths.output_dir, multirun=True)
    console.print(f"[bold]Multirun[/] of {len(jobs)} jobs in {escape(str(root))}")
    if jobs[0].cfg.launcher.name != "local":
        return _launch_elsewhere(jobs, root, config_dir)
    for number, job in enumerate(jobs):
        with open_dict(job.cfg):
            job.cfg.paths.multirun_dir = str(root)
        console.rule(escape(f"job {number}: {' '.join(job.overrides) or '(defaults)'}"))
        try:
            run_job(job, run_folder.job_folder(root, number))
        except (KeyboardInterrupt, Stopped):
            _write_multirun(root, jobs)
            raise
        except Exception as err:  # noqa: BLE001 - one failed job must not stop the sweep
            if fail_fast:
                _write_multirun(root, jobs)
                raise
            console.print(f"[red]job {number} failed:[/] {escape(str(job.error or err))}")
    _write_multirun(root, jobs)
    print_jobs(jobs, root)
    return jobs


def _launch_elsewhere(jobs: list[Job], root: Path, config_dir: str | None) -> list[Job]:
    """Submit the jobs through the configured launcher (SLURM via submitit) and collect their outcomes."""
    from dlkit.launcher import submit

    folders = [run_folder.job_folder(root, number) for number in range(len(jobs))]
    console.print(f"Submitting {len(jobs)} jobs with launcher={jobs[0].cfg.launcher.name}; waiting for them.")
    results = submit(jobs[0].cfg.launcher, jobs[0].cfg.trainer, [(j.overrides, f) for j, f in zip(jobs, folders)], root,
                     config_dir)
    for job, folder, result in zip(jobs, folders, results):
        job.run_dir, job.status, job.metrics, job.error = folder, result["status"], result["metrics"], result["error"]
    _write_multirun(root, jobs)
    print_jobs(jobs, root)
    return jobs


def resume(job: Job) -> Job:
    """Continue an earlier run in its own folder from its last.ckpt (or from the checkpoint file `resume` names),
    with its own config.

    Plain `key=value` overrides of the command (e.g. a larger trainer.max_epochs) apply on top; choosing
    other configs (`model=...`) would make another run, and is refused. What the lost segment after the checkpoint
    left behind (its metrics.csv rows, temporary files and later checkpoints) is removed first.
    """
    from omegaconf import OmegaConf

    from dlkit.tracking.csv_logger import drop_rows_after

    ref = Path(str(job.cfg.resume)).expanduser()
    run_dir = run_folder.find_run(job.cfg.resume, job.cfg.paths.output_dir)
    checkpoint = ref.resolve() if ref.suffix == ".ckpt" and ref.is_file() else run_dir / "checkpoints" / "last.ckpt"
    saved_choices = run_folder.read_json(run_dir / run_folder.SUMMARY).get("choices") or {}
    picks = [o for o in job.overrides if o.split("=", 1)[0] in job.choices]
    changed = [o for o in picks if saved_choices.get(o.split("=", 1)[0]) != o.split("=", 1)[1].strip("'\"")]
    if changed:
        raise UsageError(f"'{changed[0]}' picks another config than the run used; a resumed run keeps its own. "
                         "Drop it, or start a new run.")
    if not checkpoint.is_file():
        raise DlkitError(f"{run_dir} has no checkpoints/last.ckpt, so it cannot be resumed; train it again.")
    with run_folder.writing(run_dir):
        state = _resume_state(checkpoint)
        step = int(state["global_step"])
        plain = [o for o in job.overrides if not o.startswith(("resume=", "+", "~")) and "=" in o and o not in picks]
        saved = OmegaConf.load(run_dir / run_folder.CONFIG)
        _check_more_to_train(state, OmegaConf.merge(saved, OmegaConf.from_dotlist(plain)), plain)
        run_folder.clean_for_resume(checkpoint.parent, checkpoint)
        drop_rows_after(run_dir / "metrics.csv", step)
        trained_in = saved.get("paths", {}).get("run_dir")
        if trained_in and Path(trained_in) != run_dir:
            # a copied or moved run: its config and checkpoint still name the folder it was trained in; point them
            # here, so the run continues in this folder and never writes into the original
            saved = run_folder.relocate_config(saved, run_dir)
            run_folder.relocate_checkpoint(checkpoint, trained_in, run_dir)
            console.print(f"{run_dir} was trained in {trained_in}: it continues here.", markup=False)
        job.cfg = OmegaConf.merge(saved, OmegaConf.from_dotlist(plain))
        if (job.cfg.get("logger") or {}).get("tensorboard"):
            with open_dict(job.cfg):  # TensorBoard hides the events of the lost segment's steps
                job.cfg.logger.tensorboard.purge_step = step
        job.choices = saved_choices or job.choices
        console.print(f"Resuming {run_dir} from {checkpoint.name} (step {step})", markup=False)
        run_job(job, run_dir, ckpt_path=str(checkpoint))
    return job


def _resume_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's contents (tensors memory-mapped); a damaged one is refused, naming a checkpoint to resume from."""
    try:
        state = run_folder.torch_load_lazily(checkpoint)
        int(state["global_step"])
        return state
    except Exception as err:  # noqa: BLE001 - any unreadable file is refused the same way
        others = [p for p in sorted(checkpoint.parent.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns,
                                    reverse=True) if p != checkpoint]
        best = run_folder.best_checkpoint(checkpoint.parent)
        offer = best if best is not None and best != checkpoint else (others[0] if others else None)
        hint = f"resume from another checkpoint: dlkit train resume={offer}" if offer else "train the run again"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DlkitError(f"{checkpoint} cannot be read, it is damaged or truncated ({reason}); {hint}.") from err


def _check_more_to_train(state: dict[str, Any], cfg: DictConfig, plain: list[str]) -> None:
    """Refuse a resume whose trainer.max_epochs or max_steps the checkpoint has reached already (nothing to train)."""
    if not cfg.get("fit", True):
        return
    epoch_loop = state.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
    epochs = int(state.get("epoch", 0)) + int(bool(epoch_loop.get("is_last_batch")))  # epochs trained to the end
    step = int(state["global_step"])
    mine = "" if any(o.startswith("trainer.max_") for o in plain) else " (the run's own setting)"
    max_epochs, max_steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps")
    if max_epochs not in (None, -1) and int(max_epochs) <= epochs:
        raise UsageError(f"trainer.max_epochs={max_epochs}{mine}: the checkpoint has trained {epochs} epochs "
                         f"already. Give more to train on, e.g. trainer.max_epochs={epochs + 10}.")
    if max_steps not in (None, -1) and int(max_steps) <= step:
        raise UsageError(f"trainer.max_steps={max_steps}{mine}: the checkpoint is at step {step} already. "
                         f"Give more to train on, e.g. trainer.max_steps={2 * step}.")


SCRATCH_PREFIX = "dlkit-rank"  # the throw-away folder of a rank > 0 that cannot know rank 0's run folder


def _new_run_dir(cfg: DictConfig) -> Path:
    """A new run folder, or a throw-away one on ranks > 0 of an external launch (rank 0 writes the run)."""
    from dlkit.distributed import external_launcher, global_rank

    if external_launcher() and global_rank() != 0:
        return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{global_rank()}-"))
    return run_folder.new_folder(cfg.paths.output_dir)


def run_job(job: Job, run_dir: Path, ckpt_path: str | None = None, callbacks: list | None = None) -> dict[str, float]:
    """Record, train (with its DDP ranks when asked) and finish one job in run_dir, holding its writer lock."""
    from dlkit.distributed import external_launcher, global_rank

    writer = not (external_launcher() and global_rank() != 0)
    if writer:
        with run_folder.writing(run_dir):
            return _run_job(job, run_dir, writer, ckpt_path, callbacks)
    return _run_job(job, run_dir, writer, ckpt_path, callbacks)


def _run_job(job: Job, run_dir: Path, writer: bool, ckpt_path: str | None, callbacks: list | None) -> dict[str, float]:
    from dlkit.distributed import external_launcher, ranks
    from dlkit.training import train as train_model

    stop_on_signals()
    job.run_dir = run_dir
    with open_dict(job.cfg):
        job.cfg.paths.run_dir = str(run_dir)
    started, refused = time.time(), False
    if writer:
        run_folder.record_start(run_dir, job.cfg, job.overrides, job.choices, resumed_from=ckpt_path)
        console.print(f"Run folder: {escape(str(run_dir))}", soft_wrap=True)
    job.status = "running"
    try:
        log = run_folder.log_to(run_dir) if writer else contextlib.nullcontext()  # rank 0 writes train.log
        with log, ranks(run_dir, job.cfg.trainer, ckpt_path) as children:
            job.world_size = int(os.environ.get("WORLD_SIZE") or (os.environ.get("SLURM_NTASKS") if
                                 external_launcher() == "slurm" else None) or len(children) + 1)
            job.metrics = train_model(job.cfg, ckpt_path=ckpt_path, callbacks=callbacks)
    except Stopped as stop:
        job.status, job.error = "interrupted", stop.reason
        raise
    except (KeyboardInterrupt, SystemExit) as stop:
        # Lightning turns Ctrl+C into a graceful shutdown followed by SystemExit(1)
        job.status, job.error = "interrupted", "interrupted by the user"
        raise KeyboardInterrupt from stop
    except UsageError as err:
        # the config asked for something impossible that only showed once the data was read: no run happened (a
        # resumed run keeps its folder and records the refusal as a failure)
        job.status, job.error = ("failed" if ckpt_path else "refused"), str(err)
        refused, writer = writer and not ckpt_path, writer and bool(ckpt_path)
        raise
    except Exception as err:
        job.status = "failed"
        job.error = str(err) if isinstance(err, DlkitError) else f"{type(err).__name__}: {err}"
        disk = run_folder.disk_full_message(err, job.cfg.paths.output_dir)
        if disk is not None:
            job.error = disk
            raise DlkitError(disk) from err
        raise
    else:
        job.status = "finished"
    finally:
        if writer:
            job.wandb = wandb_summary(run_dir)
            run_folder.record_end(run_dir, job.status, job.metrics, job.error, started, world_size=job.world_size,
                                  wandb=job.wandb)
        elif refused or run_dir.name.startswith(SCRATCH_PREFIX):  # (a rank > 0 given rank 0's folder only reads it)
            run_folder.discard(run_dir, job.cfg.paths.output_dir)
    if writer:
        print_result(job)
    return job.metrics


def _write_multirun(root: Path, jobs: list[Job]) -> None:
    """multirun.json (every job's overrides, status, metric, error) and the same as a Markdown table (best marked)."""
    from dlkit.tracking.runs import best_index
    from dlkit.tracking.tables import render

    records = [_job_record(n, j) for n, j in enumerate(jobs)]
    run_folder.write_json(root / "multirun.json", {"jobs": records})
    header = ["job", "overrides", "status", "optimized_metric", "value", "error"]
    rows = [[r["job"], " ".join(r["overrides"]), r["status"], r["optimized_metric"], r["value"], r["error"]]
            for r in records]
    best = best_index([r["value"] for r in records], jobs[0].cfg.get("optimized_metric") or "")
    (root / "summary.md").write_text(render(header, rows, "markdown", highlight=best, mark_best=True) + "\n",
                                     encoding="utf-8")


def _job_record(number: int, job: Job) -> dict[str, Any]:
    return {"job": number, "overrides": job.overrides, "status": job.status, "run_dir": str(job.run_dir or ""),
            "optimized_metric": job.cfg.get("optimized_metric"), "value": job.metrics.get("optimized_metric"),
            "error": job.error}


def print_result(job: Job) -> None:
    """The final metrics of one run, where its folder is, and its W&B page or the command that uploads it.

    The test metrics are those of the checkpoint that was tested (the best by the optimized metric); validation
    metrics are the last epoch's, beside the best value the optimized metric reached."""
    monitored = job.cfg.get("optimized_metric") or "optimized metric"
    table = Table(title=escape(f"{job.cfg.name}: {job.status}"), show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(job.metrics):
        if key.startswith("test/"):
            table.add_row(escape(key), f"{job.metrics[key]:.4f}")
    if "optimized_metric" in job.metrics:
        table.add_row(escape(f"{monitored} (best)"), f"{job.metrics['optimized_metric']:.4f}")
    for key in sorted(job.metrics):
        if key.startswith("val/"):
            table.add_row(escape(f"{key} (last epoch)"), f"{job.metrics[key]:.4f}")
    console.print(table)
    if any(key.startswith("test/") for key in job.metrics):
        console.print(escape(f"test/*: the checkpoint with the best {monitored}"), soft_wrap=True)
    console.print(f"Run folder: {escape(str(job.run_dir))}", soft_wrap=True)
    tracked = job.wandb or {}
    if tracked.get("url"):
        console.print(f"W&B run: {escape(tracked['url'])}", soft_wrap=True)
    if tracked.get("sync"):
        why = tracked.get("offline_reason") or ("an earlier start ran offline" if tracked.get("mode") == "online"
                                                else "not logged in")
        console.print(escape(f"W&B ran offline ({why}). Upload the run with: {tracked['sync']}"), soft_wrap=True)


def print_jobs(jobs: list[Job], root: Path) -> None:
    """The summary table of a multirun: job, overrides, metric, status (and why a job failed)."""
    from dlkit.tracking.runs import best_index

    metric = jobs[0].cfg.get("optimized_metric", "metric")
    table = Table(title=escape(f"Multirun: {root}"), header_style="bold")
    for column in ("job", "overrides", f"best {metric}", "status"):
        table.add_column(escape(column))
    best = best_index([j.metrics.get("optimized_metric") for j in jobs], metric)
    for number, job in enumerate(jobs):
        value = job.metrics.get("optimized_metric")
        shown = "-" if value is None else f"{value:.4f}"
        if number == best:
            shown = f"[bold green]{shown}[/]"
        status = escape(job.status) if job.status != "failed" else f"[red]failed[/]: {escape(str(job.error))}"
        table.add_row(str(number), escape(redact.text(" ".join(job.overrides)) or "(defaults)"), shown, status)
    console.print(table)
