"""The run's hyperparameters and results in every logger: the flat config as hyperparameters (hparams.yaml,
TensorBoard's HParams view, whose table then compares the jobs of a multirun), and the best value of the
optimized metric under its own name (`best/val/acc`) beside the test metrics."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger

from dlkit.loggers.wandb_runs import flat_config


def best_metric_name(cfg: DictConfig) -> str | None:
    """What the optimized metric's best value is called in every logger and in summary.json (`best/val/acc`)."""
    monitored = cfg.get("optimized_metric")
    return f"best/{monitored}" if monitored else None


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """The flat config (`optimizer.lr`, ...) as every logger's hyperparameters; W&B had it when its run began."""
    flat = flat_config(cfg)
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            logger.log_hyperparams(flat)


def log_results(loggers: list[Logger], cfg: DictConfig, metrics: dict[str, float], step: int) -> None:
    """The best optimized metric to every logger; to TensorBoard with the test metrics as the HParams metrics of
    this run. Called after fit and test, when Lightning has already finalised the loggers: each is saved again."""
    name = best_metric_name(cfg)
    best = {name: metrics[name]} if name in metrics else {}
    results: dict[str, Any] = {k: v for k, v in metrics.items() if k.startswith("test/")} | best
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and results:
            logger.log_hyperparams(flat_config(cfg), metrics=results, step=step)  # logs them as scalars too
            logger.experiment.flush()
        elif best:
            logger.log_metrics(best, step=step)
        logger.save()
