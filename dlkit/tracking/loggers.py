"""Build the configured Lightning loggers and close them after a run."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import Any

from hydra.utils import get_method, instantiate
from omegaconf import DictConfig

from dlkit.config import construct


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Every logger of cfg.logger; factories that take `run_config` get the whole composed config."""
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if not node:
            continue
        factory = get_method(node._target_)
        if "run_config" in inspect.signature(factory).parameters:
            loggers.append(construct(node, run_config=cfg))
        else:
            loggers.append(instantiate(node))
    return [lg for lg in loggers if lg is not None]


def finish_loggers(loggers: list[Any], run_dir: str) -> None:
    """Attach the run's config.yaml to its W&B run and end it, so multirun jobs never merge into one."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            config = Path(run_dir) / "config.yaml"
            if config.is_file():  # W&B keeps its own config.yaml: store dlkit's under another name
                copy = Path(logger.experiment.dir) / "dlkit_config.yaml"
                shutil.copyfile(config, copy)
                logger.experiment.save(str(copy), base_path=logger.experiment.dir, policy="now")
            logger.experiment.finish()
