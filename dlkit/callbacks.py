"""dlkit's own Lightning callbacks: every one of them (checkpoints, seeding, progress, gradient norms, sweep
pruning)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, ModelSummary, RichProgressBar
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import grad_norm

from dlkit.errors import Stopped, UsageError, did_you_mean, stop_request
from dlkit.tasks.base import resumed_mid_epoch

# the hooks Lightning calls on every callback for each batch (see skip_inherited_batch_hooks)
BATCH_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
               "on_before_optimizer_step", "on_before_zero_grad", "on_validation_batch_start",
               "on_validation_batch_end", "on_test_batch_start", "on_test_batch_end", "on_predict_batch_start",
               "on_predict_batch_end")


def skip_inherited_batch_hooks(callbacks: list[pl.Callback]) -> None:
    """Lightning calls every callback for each per-batch event (42 calls per training step with the default
    callbacks), though most callbacks inherit pl.Callback's empty method for most of them. Lightning's hook loop
    calls a callback's hook only when it is callable, so each inherited empty per-batch hook is set to None on the
    instance: the loop passes it by. Nothing a callback does changes; the hooks it overrides are all still called."""
    for callback in callbacks:
        for hook in BATCH_HOOKS:
            if getattr(type(callback), hook) is getattr(pl.Callback, hook):
                setattr(callback, hook, None)


class LastCheckpoint(Checkpoint):
    """Keep `last.ckpt` the newest training state, whatever the monitored metric did.

    Written at the end of every training epoch (after its validation), after a validation inside an epoch
    (val_check_interval), every `every_n_train_steps` optimizer steps, and when training ends. Lightning's
    `ModelCheckpoint(save_last=True)` with a monitor refreshes last.ckpt only when it also saves a top-k file, so
    after epochs without improvement "last" was really "best" and a resumed run trained those epochs again. As a
    `Checkpoint`, Lightning runs it after every other callback (the best checkpoint and early stopping included),
    so the state it saves is complete.

    It is also where a run stops on a signal (errors.StopRequest): SIGTERM, SIGHUP or Slurm's time-limit warning
    during training ends the current step, writes last.ckpt there (exact to resume) and raises `Stopped`. Ranks of a
    DDP job under Slurm, which all get the signal, agree on the step to stop at (one all-reduce per step); other
    multi-process runs stop at once on a signal, as before.
    """

    FILE = "last.ckpt"

    def __init__(self, dirpath: str, every_n_train_steps: int | None = None) -> None:
        self.path = Path(dirpath) / self.FILE
        self.every_n_train_steps = every_n_train_steps or 0
        self._saved_step = -1
        self._agree = False
        self._stopping: Stopped | None = None

    def _save(self, trainer: pl.Trainer) -> None:
        if (trainer.sanity_checking or trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING
                or trainer.global_step == self._saved_step):
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step

    def _asked_to_stop(self, trainer: pl.Trainer) -> bool:
        asked = stop_request.pending is not None
        if self._agree:  # every rank takes part, every step, so they all stop after the same one
            asked = trainer.strategy.reduce_boolean_decision(asked, all=False)
        return asked

    def _stop_now(self, *_: Any) -> None:
        if self._stopping is not None:
            stop, self._stopping = self._stopping, None
            stop.checkpointed = True
            raise stop

    # the stop is raised before the next step or epoch, once the stopped step's metrics are logged
    on_train_batch_start = on_train_epoch_start = _stop_now

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stop_request.install()  # in place of the SIGTERM handler Lightning's fit wraps around it (its own stop)
        self._agree = trainer.world_size > 1
        stop_request.graceful = trainer.world_size == 1 or "SLURM_JOB_ID" in os.environ

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer)
        if stop_request.graceful and self._asked_to_stop(trainer):
            stop_request.graceful = False  # a second signal stops at once
            self._stopping = stop_request.take() or Stopped(signal.SIGTERM)  # (another rank got it first)
            if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
                self._save(trainer)  # the epoch's last step is saved at the epoch's end, after its validation

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a validation inside the epoch (val_check_interval); the one after its last batch is followed by the
        # epoch's end, which is the resumable place for that state (as Lightning's ModelCheckpoint saves it)
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # training is over: a stop asked during the last epoch's end lets the test run (a second signal stops it)
        self._save(trainer)
        stop_request.graceful = False
        self._stopping = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        stop_request.graceful = False


class EpochSeeder(pl.Callback):
    """Re-seed every RNG at the start of each epoch from (seed, epoch), and keep the RNG states in checkpoints.

    Data order, dropout and augmentation of an epoch then depend only on the seed and the epoch number, so a run
    resumed from an epoch-end checkpoint trains exactly as the uninterrupted run would have; one resumed from a
    mid-epoch checkpoint (every_n_train_steps) continues from the RNG states saved with it.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._restored: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np
        import torch

        kind, keys, position, has_gauss, gauss = np.random.get_state()
        return {"torch": torch.get_rng_state(), "python": random.getstate(),
                # plain lists and numbers: checkpoints are loaded with weights_only
                "numpy": [kind, keys.tolist(), position, has_gauss, gauss]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restored and resumed_mid_epoch(trainer):
            import random

            import numpy as np
            import torch

            torch.set_rng_state(self._restored["torch"])
            random.setstate(self._restored["python"])
            kind, keys, position, has_gauss, gauss = self._restored["numpy"]
            np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
            return
        # after a resume from an epoch-end checkpoint Lightning skips the first on_train_epoch_start
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl.seed_everything(self.seed + trainer.current_epoch, workers=True, verbose=False)


class ThrottledRichProgressBar(RichProgressBar):
    """Lightning's Rich progress bar, given the batch count and metrics at most every `update_interval` seconds.

    Lightning's bar converts and formats every progress-bar metric after each batch (about 0.3 ms a step, the
    cost of a small model's whole step), while Rich draws only `refresh_rate` times a second. The last batch of
    an epoch is always shown, so a finished bar reads exactly as before.
    """

    def __init__(self, update_interval: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.update_interval = update_interval
        self._last_update = float("-inf")

    def _due(self, batch_idx: int, total: float) -> bool:
        now = time.monotonic()
        if batch_idx + 1 >= total or now - self._last_update >= self.update_interval:
            self._last_update = now
            return True
        return False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.is_disabled and self._due(batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Reading the epoch's metrics runs their cross-process reductions (values logged with sync_dist=True). Rank
        # 0's bar reads them here, before the task's own on_train_epoch_end; every other rank (its bar disabled) must
        # run the same reductions at the same point, or the processes wait on different collectives for ever.
        trainer.progress_bar_metrics  # noqa: B018 - read for its reductions; the values are cached
        super().on_train_epoch_end(trainer, pl_module)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version: a W&B id here, which says nothing about the training
        return metrics

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        # a disabled bar (every rank but 0 under DDP) never learns its dataloader: ask it nothing
        if not self.is_disabled and self._due(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)


class ModelSummaryLine(ModelSummary):
    """One line about the model when fitting starts: its class, parameter counts and size (Lightning's table lists
    the task's internal modules, such as its metric collections, and FLOPs it does not measure)."""

    def __init__(self) -> None:
        super().__init__(max_depth=1)

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int, **_: Any) -> None:
        from pytorch_lightning.utilities.model_summary.model_summary import get_human_readable_count

        from dlkit.ui import console

        columns = dict(summary_data)
        names, types = columns.get("Name", []), columns.get("Type", [])
        model = types[names.index("model")] if "model" in names else "model"
        frozen = total_parameters - trainable_parameters
        detail = f", {get_human_readable_count(frozen)} frozen" if frozen else ""
        console.print(f"Model: {model}, {get_human_readable_count(total_parameters).strip()} parameters"
                      f"{detail} ({model_size:.1f} MB)", markup=False)


class MaxNorm(pl.Callback):
    """A max-norm constraint (Kim 2014; Srivastava et al. 2014): after each training step, every row of the named
    weights (one output unit's incoming weights) whose L2 norm is above `max_norm` is scaled back to it."""

    def __init__(self, parameters: list[str], max_norm: float = 3.0) -> None:
        self.names, self.max_norm = list(parameters), float(max_norm)
        self.weights: list[torch.nn.Parameter] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        named = dict(pl_module.named_parameters())
        unknown = [n for n in self.names if n not in named]
        if unknown:
            raise UsageError(f"callbacks.max_norm: the task has no parameter {unknown[0]!r}."
                             f"{did_you_mean(unknown[0], named)}")
        self.weights = [named[n] for n in self.names]

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        for weight in self.weights:
            weight.renorm_(p=2, dim=0, maxnorm=self.max_norm)


class GradNormMonitor(pl.Callback):
    """Log `train/grad_norm` before each optimizer step, at the trainer's logging interval."""

    def __init__(self, norm_type: float = 2.0) -> None:
        self.norm_type = norm_type

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        if trainer.global_step % trainer.log_every_n_steps == 0:
            norms = grad_norm(pl_module, norm_type=self.norm_type)
            total = norms.get(f"grad_{float(self.norm_type)}_norm_total")
            if total is not None:
                pl_module.log("train/grad_norm", total, on_step=True, on_epoch=False)


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
