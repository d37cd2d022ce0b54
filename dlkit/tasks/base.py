"""What every task shares: the model, the optimizer and scheduler, and dlkit's metadata in checkpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import nn

from dlkit.data.spec import DataSpec
from dlkit.errors import DlkitError

# how often a training step's own value (`train/loss_step`) is handed to the progress bar, in seconds
STEP_DISPLAY_INTERVAL = 0.5
# where a checkpoint keeps the running state of the training epoch it was taken in (see Task.training_epoch_state)
EPOCH_STATE = "dlkit_epoch_state"


class NonFiniteLoss(DlkitError):
    """The training loss became NaN or infinite: training on would only burn time, so the run fails."""

    def __init__(self, step: int) -> None:
        self.step = step
        super().__init__(f"non-finite loss at step {step}: lower optimizer.lr, clip gradients "
                         "(trainer.gradient_clip_val=1.0) or check the data for NaNs.")


def resumed_mid_epoch(trainer: pl.Trainer) -> bool:
    """Whether fit continues inside the epoch a checkpoint interrupted.

    Lightning also calls a checkpoint taken after an epoch's last batch (at the end of its validation) "mid-epoch",
    but the next batch then starts a new epoch: that is not a mid-epoch resume.
    """
    loop = trainer.fit_loop
    return loop.restarted_mid_epoch and not loop.epoch_loop.batch_progress.is_last_batch


class Task(pl.LightningModule):
    """A LightningModule around a plain nn.Module; subclasses define the steps for one kind of data."""

    # the DataSpec kinds this task handles (a model/data/task mismatch is refused before any work)
    kinds: ClassVar[tuple[str, ...]] = ()
    # set by training.build_task from the `channels_last` switch: 4-D float batches are made NHWC on the device
    channels_last: bool = False

    def __init__(self, model: nn.Module, spec: DataSpec, optimizer: Callable[..., Any],
                 scheduler: Callable[..., dict] | None = None, monitor: str = "val/loss") -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        # The run's config and spec travel inside every checkpoint, so a lone .ckpt can be rebuilt; build_task adds
        # "data" (DataModule.inference_state: tokenizers, labels, ...) and "model" (sizes to rebuild it without
        # model.pretrained), so predict needs neither the data nor the tokenizer cache.
        self.meta: dict[str, Any] = {"spec": spec.as_dict()}
        # stage -> name -> [sum of value * batch size, sum of batch sizes, logged per step too, on the bar]
        self._means: dict[str, dict[str, list[Any]]] = {}
        self._step_shown = float("-inf")
        self._resumed_epoch_state: dict[str, Any] | None = None
        # first global step whose training loss was not finite (-1: none), kept on the loss's device (see _watch)
        self._first_bad_step: torch.Tensor | None = None

    # -- metrics ----------------------------------------------------------------------------------------------
    def log_mean(self, stage: str, name: str, value: torch.Tensor, batch_size: int, prog_bar: bool = False,
                 step: bool = False) -> None:
        """Add one batch's value to the epoch mean of `stage/name` (weighted by batch size), logged once when the
        epoch ends, as Lightning's `self.log(..., on_epoch=True)` would log it.

        With step=True (the training loss) the batch's own value is logged too, as `stage/name_step`, at the steps
        where the loggers write (every trainer.log_every_n_steps) and every STEP_DISPLAY_INTERVAL seconds for the
        progress bar; the epoch mean is then `stage/name_epoch`. Lightning's self.log costs a few tenths of a
        millisecond per call, and called on every batch it was the largest per-step cost of training small models
        (issue 9); a running sum costs one tensor addition.
        """
        weighted = value.detach().float() * batch_size
        entry = self._means.setdefault(stage, {}).get(name)
        if entry is None:
            self._means[stage][name] = [weighted, batch_size, step, prog_bar]
        else:
            entry[0] = entry[0] + weighted
            entry[1] += batch_size
        if step and self._step_due():
            self.log(f"{stage}/{name}_step", value.detach(), on_step=True, on_epoch=False, prog_bar=prog_bar)

    def _step_due(self) -> bool:
        """Whether this training step's value should be logged: the loggers write at it, or the bar is due."""
        trainer = self._trainer
        every = trainer.log_every_n_steps if trainer is not None else 1
        now = time.monotonic()
        if (every and (self.global_step + 1) % every == 0) or now - self._step_shown >= STEP_DISPLAY_INTERVAL:
            self._step_shown = now
            return True
        return False

    # -- a loss that is no longer finite fails the run -------------------------------------------------------------
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._watch(loss)

    def _watch(self, loss: torch.Tensor) -> None:
        """Stop at a NaN or infinite training loss, naming its step. On the CPU every step is looked at; on an
        accelerator the first bad step is noted on the device (no synchronisation per step) and looked at when the
        loggers write, at epoch ends and before every checkpoint, so no non-finite state is ever saved."""
        finite = torch.isfinite(loss.detach())
        if loss.device.type == "cpu":
            if not bool(finite):
                raise NonFiniteLoss(self.global_step)
            return
        first = self._first_bad_step
        if first is None:
            first = torch.full((), -1, dtype=torch.long, device=loss.device)
        self._first_bad_step = torch.where(~finite & (first < 0), self.global_step, first)
        every = self.trainer.log_every_n_steps or 1
        if self.global_step % every == 0:
            self.check_loss()

    def check_loss(self) -> None:
        """Raise NonFiniteLoss if a training step since the last look had a NaN or infinite loss."""
        if self._first_bad_step is not None:
            step = int(self._first_bad_step)
            if step >= 0:
                raise NonFiniteLoss(step)

    def end_epoch(self, stage: str) -> None:
        """Log the epoch means of the stage (averaged over processes under DDP) and start new ones.

        Subclasses that log epoch metrics of their own override this and call it."""
        for name, (total, count, step, prog_bar) in self._means.pop(stage, {}).items():
            key = f"{stage}/{name}_epoch" if step else f"{stage}/{name}"
            self.log(key, total / max(count, 1), on_step=False, on_epoch=True, prog_bar=prog_bar, sync_dist=True)

    def on_train_epoch_end(self) -> None:
        self.check_loss()
        self.end_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self.end_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.end_epoch("test")

    def predict_batch(self, batch: Any, **options: Any) -> list[dict[str, Any]]:
        """One record per input of a batch (DataModule.encode_inputs): what `dlkit predict` prints for it."""
        raise NotImplementedError(f"predict does not support {type(self).__name__} yet")

    def client_postprocessing(self) -> dict[str, Any]:
        """How a program outside dlkit turns the exported model's outputs into what `dlkit predict` prints: the
        `postprocessing` entry of an export's model.json (the steps, with every number they use)."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its outputs for exports yet")

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params, **self._fused_choice(params))
        if self.scheduler_factory is None:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps, monitor=self.monitor)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _fused_choice(self, params: list[nn.Parameter]) -> dict[str, bool]:
        """`fused: null` in the optimizer config: fused kernels when every parameter is a floating-point CUDA tensor
        and gradients are not clipped (Lightning refuses to clip with a fused optimizer under mixed precision).

        Otherwise the keyword stays None, torch's own default (foreach on CUDA): False would turn foreach off.
        """
        if getattr(self.optimizer_factory, "keywords", {}).get("fused", False) is not None:
            return {}
        clipping = self._trainer is not None and bool(self._trainer.gradient_clip_val)
        on_cuda = bool(params) and all(p.device.type == "cuda" and p.is_floating_point() for p in params)
        return {"fused": True} if on_cuda and not clipping else {}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not self.channels_last:
            return batch
        return apply_to_collection(batch, torch.Tensor, _to_channels_last)

    # -- resuming mid-epoch ---------------------------------------------------------------------------------------
    def training_epoch_state(self) -> dict[str, Any]:
        """The running state of the current training epoch: the sums behind its means (subclasses add their metric
        states). A checkpoint carries it, so an epoch resumed mid-way reports the means of all its batches."""
        return {"means": {name: {"total": total, "count": count, "step": step, "prog_bar": prog_bar}
                          for name, (total, count, step, prog_bar) in self._means.get("train", {}).items()}}

    def load_training_epoch_state(self, state: dict[str, Any]) -> None:
        """Continue the training epoch from training_epoch_state()."""
        self._means["train"] = {name: [entry["total"].to(self.device), int(entry["count"]), bool(entry["step"]),
                                       bool(entry["prog_bar"])] for name, entry in state.get("means", {}).items()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_loss()
        checkpoint["dlkit"] = self.meta
        checkpoint[EPOCH_STATE] = self.training_epoch_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_epoch_state = checkpoint.get(EPOCH_STATE)

    def on_train_start(self) -> None:
        state, self._resumed_epoch_state = self._resumed_epoch_state, None
        if state and resumed_mid_epoch(self.trainer):
            self.load_training_epoch_state(state)


def _to_channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """Image batches [N, C, H, W] in NHWC memory order; other tensors as they are."""
    if tensor.dim() == 4 and tensor.is_floating_point():
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor
