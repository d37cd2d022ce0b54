"""Objects from a composed config: the datamodule, the model, the task around it and the trainer.

Everything dlkit trains, evaluates or predicts with is built here, one way (training, eval, predict and sweeps
call these).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Checkpoint, LearningRateMonitor, ModelSummary, ProgressBar
from torch import nn

from dlkit import redact
from dlkit.callbacks import EpochSeeder, skip_inherited_batch_hooks
from dlkit.data.base import DataModule
from dlkit.data.spec import DataSpec
from dlkit.errors import DlkitError, UsageError
from dlkit.interop import hf_bert
from dlkit.runs.checkpoint_io import AtomicCheckpointIO
from dlkit.tasks.base import Task

log = logging.getLogger("dlkit")


def construct(node: DictConfig | dict, **objects: Any) -> Any:
    """Call the node's `_target_` with its other keys plus the given live objects (no conversion of those)."""
    params = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    target = params.pop("_target_")
    params.pop("_partial_", None)
    return get_method(target)(**params, **objects)


def build_model(model_cfg: Any, spec: DataSpec) -> tuple[nn.Module, dict[str, Any]]:
    """The model config's module, given the spec fields (vocab_size, num_classes, ...) its class names, with the
    weights of model.pretrained when it names a checkpoint; (module, the model settings that rebuild it without
    model.pretrained, or {}).
    """
    params = inspect.signature(get_class(model_cfg["_target_"]).__init__).parameters
    settings = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) \
        else dict(model_cfg)
    pretrained = settings.pop("pretrained", None)
    spec_values = {**spec.as_dict(), **spec.extra, "spec": spec}
    given = {k: v for k, v in spec_values.items() if k in params and k not in settings and v is not None}
    name = settings["_target_"].rsplit(".", 1)[-1]
    try:
        if pretrained:  # the checkpoint's architecture, whatever the config and the spec say
            settings.update(hf_bert.architecture(pretrained, given.pop("vocab_size", 0)))
            given = {k: v for k, v in given.items() if k not in settings}
        model = construct(settings, **given)
        return model, (hf_bert.load(model, pretrained) if pretrained else {})
    except (ValueError, TypeError) as err:  # a model.* value the architecture refuses: a usage error, no run
        raise UsageError(f"{name} refuses its model.* settings: {err} (`dlkit config show` prints them).") from err


def build_datamodule(cfg: DictConfig, setup: bool = True) -> DataModule:
    """The datamodule; with `setup`, prepared and set up so that its spec is known."""
    from hydra.errors import InstantiationException

    try:
        datamodule: DataModule = instantiate(cfg.data, _convert_="all")
    except InstantiationException as err:  # a data.* value the constructor refused: its own one-line error
        if isinstance(err.__cause__, DlkitError):
            raise err.__cause__ from None
        raise
    if setup:
        datamodule.prepare_data()
        datamodule.setup("fit")
    return datamodule


def build_task(cfg: DictConfig, datamodule: DataModule) -> Task:
    """The task (LightningModule) around the model sized from the data's spec."""
    model, rebuild = build_model(cfg.model, datamodule.spec)
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
    if rebuild:  # what rebuilds the model without model.pretrained (BERT)
        task.meta["model"] = rebuild
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
    trainer = pl.Trainer(
        **kwargs,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=cfg.paths.run_dir,
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
        enable_model_summary=any(isinstance(c, ModelSummary) for c in callbacks),
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
    )
    skip_inherited_batch_hooks(trainer.callbacks)
    return trainer


def build_eval_trainer(cfg: DictConfig, logger: Any = None, split: str = "test") -> pl.Trainer:
    """The Trainer of `dlkit eval` and `dlkit report`: the run's accelerator and precision, on one device, with
    `logger` (the eval's own W&B run) or none; no checkpoints, no callbacks of the run. Testing and predicting
    (a report of the split) read as many batches as the run's trainer.limit_<split>_batches allowed."""
    settings = cfg.trainer
    limit = settings.get(f"limit_{split}_batches")
    return pl.Trainer(accelerator=settings.get("accelerator", "auto"), devices=1, logger=logger or False,
                      enable_checkpointing=False, enable_model_summary=False,
                      precision=settings.get("precision", "32-true"),
                      limit_test_batches=limit, limit_predict_batches=limit)


def strategy_with_timeout(strategy: Any, timeout_s: float | None) -> Any:
    """`ddp` / `fsdp` as Lightning strategies whose collectives give up after timeout_s seconds (a rank that died
    or hangs then stops the others instead of holding them for Lightning's default 30 minutes); else as given."""
    if timeout_s is None or not isinstance(strategy, str) or strategy not in ("ddp", "fsdp"):
        return strategy
    from datetime import timedelta

    from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy

    return (DDPStrategy if strategy == "ddp" else FSDPStrategy)(timeout=timedelta(seconds=float(timeout_s)))


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
