"""Build the datamodule, task and trainer from a composed config, then fit and test.

`train(cfg)` is the one entry the CLI, sweeps and tests share. The config must carry `paths.run_dir`.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Checkpoint, LearningRateMonitor, ModelCheckpoint, ModelSummary, ProgressBar

from dlkit import redact
from dlkit.callbacks import EpochSeeder
from dlkit.checkpointing import AtomicCheckpointIO
from dlkit.config import construct
from dlkit.data.base import DataModule
from dlkit.models import build_model
from dlkit.tasks.base import Task
from dlkit.tracking.loggers import build_loggers, finish_loggers

log = logging.getLogger("dlkit")


def build_datamodule(cfg: DictConfig) -> DataModule:
    """The datamodule, prepared and set up so that its spec is known."""
    datamodule: DataModule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def build_task(cfg: DictConfig, datamodule: DataModule) -> Task:
    """The task (LightningModule) around the model sized from the data's spec."""
    model = build_model(cfg.model, datamodule.spec)
    model_settings = getattr(model, "inference_settings", None)
    if cfg.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    if cfg.get("compile"):
        model = torch.compile(model)
    optimizer = instantiate(cfg.optimizer)
    scheduler = instantiate(cfg.scheduler) if cfg.scheduler.get("_target_") else None
    task: Task = construct(cfg.task, model=model, spec=datamodule.spec, optimizer=optimizer, scheduler=scheduler)
    task.meta["config"] = redact.value(OmegaConf.to_container(cfg, resolve=True))
    data_state = datamodule.inference_state()
    if data_state is not None:  # what predict needs from the data (tokenizers, labels, normalisation)
        task.meta["data"] = data_state
    if model_settings is not None:  # what rebuilds the model without model.pretrained (BERT)
        task.meta["model"] = model_settings()
    task.channels_last = bool(cfg.get("channels_last"))
    return task


def build_trainer(cfg: DictConfig, extra_callbacks: list[pl.Callback] | None = None) -> pl.Trainer:
    """A Lightning Trainer from the trainer and precision groups, with callbacks and loggers."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c] + list(extra_callbacks or [])
    if cfg.get("seed") is not None:
        callbacks.append(EpochSeeder(int(cfg.seed)))
    loggers = build_loggers(cfg)
    if not loggers:  # the learning-rate monitor writes through a logger: with logger=null it has nowhere to write
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    kwargs: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs["strategy"] = strategy_with_timeout(kwargs.get("strategy", "auto"), kwargs.pop("ddp_timeout_s", None))
    return pl.Trainer(
        **kwargs,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=cfg.paths.run_dir,
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
        enable_model_summary=any(isinstance(c, ModelSummary) for c in callbacks),
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
    )


def strategy_with_timeout(strategy: Any, timeout_s: float | None) -> Any:
    """`ddp` / `fsdp` as Lightning strategies whose collectives give up after timeout_s seconds (a rank that died
    or hangs then stops the others instead of holding them for Lightning's default 30 minutes); else as given."""
    if timeout_s is None or not isinstance(strategy, str) or strategy not in ("ddp", "fsdp"):
        return strategy
    from datetime import timedelta

    from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy

    return (DDPStrategy if strategy == "ddp" else FSDPStrategy)(timeout=timedelta(seconds=float(timeout_s)))


def train(cfg: DictConfig, ckpt_path: str | None = None,
          callbacks: list[pl.Callback] | None = None) -> dict[str, float]:
    """Fit (from ckpt_path when resuming) and test; return every final metric as a float.

    `callbacks` are added to the configured ones (sweeps add their pruning callback this way).

    The returned dict holds `optimized_metric`: the best value of cfg.optimized_metric (what sweeps optimise).
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
    return metrics


def best_checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The ModelCheckpoint that ranks checkpoints by a metric (else the first ModelCheckpoint, else None)."""
    models = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    return next((c for c in models if c.monitor), models[0] if models else None)


def _floats(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if _scalar(v)}


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)


def task_class(cfg: DictConfig) -> type[Task]:
    """The task class the config names (imports it; no objects are built)."""
    return get_class(cfg.task._target_)
