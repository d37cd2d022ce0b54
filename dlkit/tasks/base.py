"""What every task shares: the model, the optimizer and scheduler, and dlkit's metadata in checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from torch import nn

from dlkit.data.spec import DataSpec


class Task(pl.LightningModule):
    """A LightningModule around a plain nn.Module; subclasses define the steps for one kind of data."""

    kinds: tuple[str, ...] = ()

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
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps, monitor=self.monitor)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["dlkit"] = self.meta
