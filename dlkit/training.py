"""Fit and test: the datamodule, task and trainer of a composed config (see build.py), trained and tested.

`train(cfg)` is the one entry the CLI, sweeps and tests share. The config must carry `paths.run_dir`.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint

from dlkit.build import build_datamodule, build_task, build_trainer
from dlkit.data.base import DataModule
from dlkit.loggers.hparams import best_metric_name, log_config, log_results
from dlkit.loggers.wandb_logger import finish_loggers
from dlkit.tasks.base import Task

log = logging.getLogger("dlkit")


def train(cfg: DictConfig, ckpt_path: str | None = None,
          callbacks: list[pl.Callback] | None = None) -> dict[str, float]:
    """Fit (from ckpt_path when resuming) and test; return every final metric as a float.

    `callbacks` are added to the configured ones (sweeps add their pruning callback this way).

    The returned dict holds `optimized_metric`: the best value of cfg.optimized_metric (what sweeps optimise), also
    under its own name (`best/val/acc`), as every logger has it.
    """
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule)
    trainer = build_trainer(cfg, callbacks)
    failed = True  # until fit and test return: an exception anywhere (in Lightning or not) fails the W&B run
    try:
        metrics = _fit_and_test(cfg, datamodule, task, trainer, ckpt_path)
        failed = False
        return metrics
    finally:
        if trainer.is_global_zero:
            # None: Lightning's own record (a failure it caught and did not raise still counts)
            finish_loggers(trainer.loggers, cfg.paths.run_dir, failed=True if failed else None)


def _fit_and_test(cfg: DictConfig, datamodule: DataModule, task: Task, trainer: pl.Trainer,
                  ckpt_path: str | None) -> dict[str, float]:
    metrics: dict[str, float] = {}
    log_config(trainer.loggers, cfg)
    if cfg.get("fit", True):
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(_floats(trainer.callback_metrics))
    checkpoint = best_checkpoint_callback(trainer)
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    if cfg.get("test", True):
        results = trainer.test(task, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        for result in results:
            metrics.update(_floats(result))
    best = checkpoint.best_model_score if checkpoint is not None else None
    monitored = cfg.get("optimized_metric")
    if best is not None:
        metrics["optimized_metric"] = float(best)
    elif monitored in metrics:
        metrics["optimized_metric"] = metrics[monitored]
    if "optimized_metric" in metrics and best_metric_name(cfg):
        metrics[best_metric_name(cfg)] = metrics["optimized_metric"]
    log_results(trainer.loggers, cfg, metrics, trainer.global_step)
    return metrics


def best_checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The ModelCheckpoint that ranks checkpoints by a metric (else the first ModelCheckpoint, else None)."""
    models = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    return next((c for c in models if c.monitor), models[0] if models else None)


def _floats(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if _scalar(v)}


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)
