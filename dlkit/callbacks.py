"""dlkit's own Lightning callbacks."""

from __future__ import annotations

import pytorch_lightning as pl


class EpochSeeder(pl.Callback):
    """Re-seed every RNG at the start of each epoch from (seed, epoch).

    Data order, dropout and augmentation of an epoch then depend only on the seed and the epoch number, so a
    run resumed from a checkpoint trains exactly as the uninterrupted run would have.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after a resume from an epoch-end checkpoint Lightning skips the first on_train_epoch_start
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl.seed_everything(self.seed + trainer.current_epoch, workers=True, verbose=False)
