"""What every task shares: the model, the optimizer and scheduler, and dlkit's metadata in checkpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import nn

from dlkit.data.spec import DataSpec

# how often a training step's own value (`train/loss_step`) is handed to the progress bar, in seconds
STEP_DISPLAY_INTERVAL = 0.5


class Task(pl.LightningModule):
    """A LightningModule around a plain nn.Module; subclasses define the steps for one kind of data."""

    kinds: tuple[str, ...] = ()
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

    def end_epoch(self, stage: str) -> None:
        """Log the epoch means of the stage (averaged over processes under DDP) and start new ones.

        Subclasses that log epoch metrics of their own override this and call it."""
        for name, (total, count, step, prog_bar) in self._means.pop(stage, {}).items():
            key = f"{stage}/{name}_epoch" if step else f"{stage}/{name}"
            self.log(key, total / max(count, 1), on_step=False, on_epoch=True, prog_bar=prog_bar, sync_dist=True)

    def on_train_epoch_end(self) -> None:
        self.end_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self.end_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.end_epoch("test")

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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["dlkit"] = self.meta


def _to_channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """Image batches [N, C, H, W] in NHWC memory order; other tensors as they are."""
    if tensor.dim() == 4 and tensor.is_floating_point():
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor
