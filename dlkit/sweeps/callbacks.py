"""Lightning callbacks of a sweep trial: report to Optuna and prune; find a final loss that is not finite.

Kept apart from dlkit.sweeps.study so that starting a sweep (and its worker processes) does not wait for
Lightning to import.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl


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
