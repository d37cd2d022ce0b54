"""A split's predictions: every batch's `Task.predict_step` outputs, joined."""

from __future__ import annotations

from typing import Any

import torch

from dlkit.build import build_eval_trainer
from dlkit.inference import Loaded


def collect(loaded: Loaded, split: str) -> dict[str, Any]:
    """The task's predict_step outputs over the split, in the split's order (tensors concatenated on the CPU, lists
    extended), read by Lightning on the run's accelerator and precision, as far as the run's
    trainer.limit_<split>_batches allowed (as `dlkit eval` tests)."""
    trainer = build_eval_trainer(loaded.cfg, split=split)
    datamodule = loaded.datamodule
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    batches: list[dict[str, Any]] = trainer.predict(loaded.task, dataloaders=loader) or []
    parts: dict[str, list[Any]] = {}
    for batch in batches:
        for key, value in batch.items():
            parts.setdefault(key, []).append(value.cpu() if isinstance(value, torch.Tensor) else value)
    return {key: torch.cat(values) if isinstance(values[0], torch.Tensor) else [v for part in values for v in part]
            for key, values in parts.items()}
