"""Faults the tests inject into real `dlkit train` processes through the config (tests/ on PYTHONPATH):
`+callbacks.kill._target_=faults.KillAt +callbacks.kill.step=12`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytorch_lightning as pl


class KillAt(pl.Callback):
    """SIGKILL this process right after optimizer step `step`, once its loggers have written everything so far (the
    worst case for a resume: rows past the last checkpoint are on disk). A resumed run (fit from a checkpoint) is
    left alone. With `rank`, only that rank of a DDP run dies; with `mark`, the time of death is written there."""

    def __init__(self, step: int, sig: str = "SIGKILL", rank: int | None = None, mark: str | None = None) -> None:
        self.step, self.signal, self.rank, self.mark = step, getattr(signal, sig), rank, mark

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.global_step == self.step and trainer.ckpt_path is None and self.rank in (None, trainer.global_rank):
            for logger in trainer.loggers:
                logger.save()
            if self.mark:
                Path(self.mark).write_text(str(time.time()))
            os.kill(os.getpid(), self.signal)


class SlowSteps(pl.Callback):
    """Sleep `seconds` after every training step: a run that takes at least steps x seconds on any machine, however
    lightly loaded (the sleep changes no number: no random draw, no state)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        time.sleep(self.seconds)
