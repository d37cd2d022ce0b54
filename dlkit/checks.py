"""Checks of a composed config that need the code (imports torch): impossible pairs and hardware."""

from __future__ import annotations

import os

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from dlkit.config import config_groups
from dlkit.data.spec import model_declares
from dlkit.errors import UsageError


def _kind_of_data(target: str) -> str:
    return get_class(target).kind


def data_options_for(kinds: tuple[str, ...]) -> list[str]:
    """The data options whose datamodule produces one of these kinds."""
    fitting = []
    for option in config_groups().get("data", []):
        target = OmegaConf.load(option.path).get("_target_")
        try:
            if target and _kind_of_data(target) in kinds:
                fitting.append(option.name)
        except (ImportError, AttributeError):
            continue
    return fitting


def _targets(node: object, path: str = "") -> list[tuple[str, str]]:
    """(key, `_target_`) of every node of the config that names something to build."""
    found = []
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        if isinstance(target, str):
            found.append((path, target))
        for key in node:
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                found += _targets(child, f"{path}.{key}".lstrip("."))
    return found


def check_targets(cfg: DictConfig) -> None:
    """Import everything the config will build, so that a misspelt `_target_` stops before any work."""
    import logging

    from hydra.utils import get_object

    quiet = logging.getLogger("hydra.utils")
    level, quiet.level = quiet.level, logging.CRITICAL  # it logs the error itself before raising it
    try:
        for key, target in _targets(cfg):
            try:
                get_object(target)
            except Exception as err:  # noqa: BLE001 - any import failure is refused the same way
                raise UsageError(f"{key + '.' if key else ''}_target_={target} cannot be imported "
                                 f"({_import_failure(target, err)}).{_close_name(target)} Check its spelling, or put "
                                 "the module that defines it on PYTHONPATH.") from err
    finally:
        quiet.level = level


def _import_failure(target: str, err: Exception) -> str:
    """Why a target did not import, in one line: what is missing where (Hydra's wording), or the error raised."""
    cause = err
    while cause.__cause__ is not None:
        cause = cause.__cause__
    parent, _, name = target.rpartition(".")
    if isinstance(cause, ModuleNotFoundError) and cause.name == target:
        return f"{parent} has no {name}"
    return " ".join(f"{type(cause).__name__}: {cause}".split())


def _close_name(target: str) -> str:
    """' Did you mean X?' for a misspelt last part of a target whose parent imports."""
    from hydra.utils import get_object

    from dlkit.errors import did_you_mean

    parent, _, name = target.rpartition(".")
    try:
        names = dir(get_object(parent)) if parent else []
    except Exception:  # noqa: BLE001 - the parent does not import either: nothing to suggest
        return ""
    hint = did_you_mean(name, [n for n in names if not n.startswith("_")])
    return hint.replace("mean ", f"mean {parent}.", 1) if hint else ""


def check(cfg: DictConfig, choices: dict[str, str] | None = None) -> None:
    """Refuse what cannot be built, an impossible model/data/task combination or hardware request before any work."""
    import torch

    check_targets(cfg)
    choices = choices or {}
    model_name, data_name = choices.get("model", "the model"), choices.get("data", "the data")
    data_kind = _kind_of_data(cfg.data._target_)
    accepts = tuple(model_declares(get_class(cfg.model._target_), "accepts"))
    if accepts and data_kind not in accepts:
        fits = ", ".join(data_options_for(accepts)) or "none yet"
        raise UsageError(f"model={model_name} cannot train on data={data_name} ({data_kind.replace('_', ' ')}). "
                         f"Data that fits {model_name}: {fits}.")
    task_kinds = tuple(get_class(cfg.task._target_).kinds)
    if task_kinds and data_kind not in task_kinds:
        handled = ", ".join(k.replace("_", " ") for k in task_kinds)
        raise UsageError(f"task={choices.get('task', cfg.task._target_)} does not handle {data_kind.replace('_', ' ')} "
                         f"data (data={data_name}); it handles {handled}.")

    trainer = cfg.trainer
    accelerator = str(trainer.get("accelerator", "auto"))
    precision = str(trainer.get("precision", "32-true"))
    wants_gpu = accelerator in ("gpu", "cuda")
    if wants_gpu and not torch.cuda.is_available():
        raise UsageError(f"trainer={choices.get('trainer', 'gpu')} needs a CUDA GPU and none is visible. "
                         "Use trainer=cpu, or trainer=ddp_cpu for 2 processes.")
    if precision.startswith("16") and accelerator == "cpu":
        raise UsageError(f"precision={choices.get('precision', '16')} (float16 mixed) needs a CUDA GPU. "
                         "On the CPU use precision=bf16 or precision=32.")
    if "fsdp" in str(trainer.get("strategy")) and accelerator == "cpu":
        raise UsageError("FSDP needs GPUs; on the CPU use trainer=ddp_cpu.")
    if accelerator == "cpu":
        from dlkit.distributed import local_processes

        processes, cores = local_processes(trainer), os.cpu_count() or 1
        if processes > cores:
            raise UsageError(f"trainer.devices={trainer.get('devices')} starts {processes} processes on this "
                             f"machine's {cores} CPU cores: use at most {cores} (trainer.devices={cores}).")
