"""One training job: its config composed and checked before any work, its run folder (outputs/<date>/<time>-<id>/,
one writer), the training itself, a resume from the folder's last.ckpt, and the result printed.

jobs.py runs one job or the jobs of a multirun through this.
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

from dlkit import ui
from dlkit.config import compose_with_choices
from dlkit.errors import DlkitError, Stopped, UsageError, stop_on_signals
from dlkit.loggers.wandb_runs import wandb_summary
from dlkit.runs import checkpoints, query, records, relocate

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
    """What the model says its data must use (its class's `data_settings`: BERT frames texts [CLS] ... [SEP]) and,
    for model.pretrained, the checkpoint's architecture pinned in the model config and its vocabulary in the data's."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from dlkit.data.spec import model_declares
    from dlkit.interop.hf_bert import pin_pretrained

    settings = dict(model_declares(get_class(cfg.model._target_), "data_settings"))
    output_dir = cfg.get("paths", {}).get("output_dir") or "outputs"
    settings.update(pin_pretrained(cfg.model, output_dir, cfg.data.get("max_length")))
    if settings:
        with open_dict(cfg):
            cfg.data = OmegaConf.merge(cfg.data, settings)


def resume(job: Job) -> Job:
    """Continue an earlier run in its own folder from its last.ckpt (or from the checkpoint file `resume` names),
    with its own config.

    Plain `key=value` overrides of the command (e.g. a larger trainer.max_epochs) apply on top; choosing
    other configs (`model=...`) would make another run, and is refused. What the lost segment after the checkpoint
    left behind (its metrics.csv rows, temporary files and later checkpoints) is removed first.
    """
    from omegaconf import OmegaConf

    from dlkit.loggers.csv_logger import drop_rows_after

    ref = Path(str(job.cfg.resume)).expanduser()
    run_dir = query.find_run(job.cfg.resume, job.cfg.paths.output_dir)
    checkpoint = ref.resolve() if ref.suffix == ".ckpt" and ref.is_file() else run_dir / "checkpoints" / "last.ckpt"
    saved_choices = records.read_json(run_dir / records.SUMMARY).get("choices") or {}
    picks = [o for o in job.overrides if o.split("=", 1)[0] in job.choices]
    changed = [o for o in picks if saved_choices.get(o.split("=", 1)[0]) != o.split("=", 1)[1].strip("'\"")]
    if changed:
        raise UsageError(f"'{changed[0]}' picks another config than the run used; a resumed run keeps its own. "
                         "Drop it, or start a new run.")
    if not checkpoint.is_file():
        raise DlkitError(f"{run_dir} has no checkpoints/last.ckpt, so it cannot be resumed; train it again.")
    with records.writing(run_dir):
        state = _resume_state(checkpoint)
        step = int(state["global_step"])
        plain = [o for o in job.overrides if not o.startswith(("resume=", "+", "~")) and "=" in o and o not in picks]
        saved = relocate.retarget(OmegaConf.load(run_dir / records.CONFIG))
        _check_more_to_train(state, OmegaConf.merge(saved, OmegaConf.from_dotlist(plain)), plain)
        relocate.clean_for_resume(checkpoint.parent, checkpoint)
        drop_rows_after(run_dir / "metrics.csv", step)
        trained_in = saved.get("paths", {}).get("run_dir")
        if trained_in and Path(trained_in) != run_dir:
            # a copied or moved run: its config and checkpoint still name the folder it was trained in; point them
            # here, so the run continues in this folder and never writes into the original
            saved = relocate.relocate_config(saved, run_dir)
            relocate.relocate_checkpoint(checkpoint, trained_in, run_dir)
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
        state = checkpoints.torch_load_lazily(checkpoint)
        int(state["global_step"])
        return state
    except Exception as err:  # noqa: BLE001 - any unreadable file is refused the same way
        others = [p for p in sorted(checkpoint.parent.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns,
                                    reverse=True) if p != checkpoint]
        best = checkpoints.best_checkpoint(checkpoint.parent)
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


def new_run_dir(cfg: DictConfig) -> Path:
    """A new run folder, or a throw-away one on ranks > 0 of an external launch (rank 0 writes the run)."""
    from dlkit.distributed import external_launcher, global_rank

    if external_launcher() and global_rank() != 0:
        return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{global_rank()}-"))
    return records.new_folder(cfg.paths.output_dir)


def run_job(job: Job, run_dir: Path, ckpt_path: str | None = None, callbacks: list | None = None) -> dict[str, float]:
    """Record, train (with its DDP ranks when asked) and finish one job in run_dir, holding its writer lock."""
    from dlkit.distributed import external_launcher, global_rank

    writer = not (external_launcher() and global_rank() != 0)
    if writer:
        with records.writing(run_dir):
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
        records.record_start(run_dir, job.cfg, job.overrides, job.choices, resumed_from=ckpt_path)
        console.print(f"Run folder: {escape(str(run_dir))}", soft_wrap=True)
    job.status = "running"
    try:
        log = records.log_to(run_dir) if writer else contextlib.nullcontext()  # rank 0 writes train.log
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
        disk = records.disk_full_message(err, job.cfg.paths.output_dir)
        if disk is not None:
            job.error = disk
            raise DlkitError(disk) from err
        raise
    else:
        job.status = "finished"
    finally:
        if writer:
            job.wandb = wandb_summary(run_dir)
            records.record_end(run_dir, job.status, job.metrics, job.error, started, world_size=job.world_size,
                                  wandb=job.wandb)
        elif refused or run_dir.name.startswith(SCRATCH_PREFIX):  # (a rank > 0 given rank 0's folder only reads it)
            records.discard(run_dir, job.cfg.paths.output_dir)
    if writer:
        print_result(job)
    return job.metrics


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
