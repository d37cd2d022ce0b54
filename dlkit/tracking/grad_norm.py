"""A callback that logs the total gradient norm (to W&B, CSV and every other logger)."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.utilities import grad_norm


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
