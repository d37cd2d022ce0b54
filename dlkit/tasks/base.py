"""What every task shares: the model, the optimizer and scheduler, and dlkit's metadata in checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import nn

from dlkit.data.spec import DataSpec


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
        # The run's config and spec travel inside every checkpoint, so a lone .ckpt can be rebuilt.
        self.meta: dict[str, Any] = {"spec": spec.as_dict()}

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
