"""Build the configured Lightning loggers and close them after a run."""

from __future__ import annotations

import inspect
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import get_method, instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger

from dlkit.config import construct


class RunWandbLogger(WandbLogger):
    """Lightning's WandbLogger, remembering whether the trainer failed.

    Lightning tells every logger how fit and test ended: finalize("failed") when they raise or are interrupted
    (Ctrl+C), finalize("success") otherwise. finish_loggers() passes that on to W&B as the run's exit code.
    """

    failed = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Lightning always passes wandb.init an `anonymous` value, which W&B now only warns about
        self._wandb_init.pop("anonymous", None)

    def finalize(self, status: str) -> None:
        if status == "failed":
            self.failed = True
        super().finalize(status)


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Every logger of cfg.logger; factories that take `run_config` get the whole composed config.

    Plain values beside the logger nodes (`logger.mode`, the W&B mode) are settings the nodes refer to, not loggers.
    """
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if not isinstance(node, Mapping) or not node.get("_target_"):
            continue
        factory = get_method(node._target_)
        if "run_config" in inspect.signature(factory).parameters:
            loggers.append(construct(node, run_config=cfg))
        else:
            loggers.append(instantiate(node))
    return [lg for lg in loggers if lg is not None]


def finish_loggers(loggers: list[Any], run_dir: str, failed: bool | None = None) -> None:
    """Attach the run's config.yaml to its W&B run and end it, so multirun jobs never merge into one.

    The W&B run ends with exit code 1 when the run failed or was interrupted (state `failed` in W&B), else 0.
    `failed=None` takes it from Lightning (see RunWandbLogger).
    """
    from dlkit.tracking.wandb_logger import remember_url

    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            experiment = logger.experiment
            config = Path(run_dir) / "config.yaml"
            if config.is_file():  # W&B keeps its own config.yaml: store dlkit's under another name
                copy = Path(experiment.dir) / "dlkit_config.yaml"
                shutil.copyfile(config, copy)
                experiment.save(str(copy), base_path=experiment.dir, policy="now")
            remember_url(run_dir, experiment)
            did_fail = failed if failed is not None else getattr(logger, "failed", False)
            experiment.finish(exit_code=1 if did_fail else 0)
