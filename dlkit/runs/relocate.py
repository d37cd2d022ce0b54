"""A run folder that was copied or moved: the paths its config and checkpoints recorded, re-pointed into it, and
what a lost segment left behind, cleared before a resume. Also code that moved inside dlkit since a run was
trained: the `_target_`s its saved config names, re-pointed to where they live now."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def relocate(value: Any, old: str | Path, new: str | Path) -> tuple[Any, bool]:
    """(value with every path inside folder `old` re-pointed into folder `new`, whether any was): strings, and the
    keys and items of dicts, lists and tuples, are looked at; anything else (tensors) is kept as it is."""
    old, new = str(old).rstrip(os.sep), str(new).rstrip(os.sep)
    if isinstance(value, str):
        if value == old or value.startswith(old + os.sep):
            return new + value[len(old):], True
        return value, False
    if isinstance(value, dict):
        items = [(relocate(k, old, new), relocate(v, old, new)) for k, v in value.items()]
        return {k: v for (k, _), (v, _) in items}, any(a or b for (_, a), (_, b) in items)
    if isinstance(value, (list, tuple)):
        items = [relocate(v, old, new) for v in value]
        return type(value)(v for v, _ in items), any(changed for _, changed in items)
    return value, False


def relocate_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """A run's saved config for the folder it now lives in (it may have been copied or moved): config.yaml holds
    resolved absolute paths, so paths.run_dir and everything under it (checkpoint folder, logger folders) still
    name the folder it was trained in."""
    old = cfg.get("paths", {}).get("run_dir")
    if not old or Path(old) == run_dir:
        return cfg
    moved, _ = relocate(OmegaConf.to_container(cfg), old, run_dir)
    cfg = OmegaConf.create(moved)
    if cfg.paths.get("multirun_dir") and Path(cfg.paths.multirun_dir) == Path(old).parent:
        cfg.paths.multirun_dir = str(run_dir.parent)  # a multirun job moved with its multirun folder
    return cfg


def relocate_checkpoint(path: Path, old: str | Path, new: str | Path) -> bool:
    """Re-point the paths a Lightning checkpoint's callbacks recorded (ModelCheckpoint's folder, best and last
    checkpoints) from folder `old` to `new`, rewriting the file atomically; False when none pointed into `old`.

    Without this, a resumed copy of a run would not know its own best checkpoints (Lightning drops them when the
    folder differs) and would test the original's best checkpoint at the end.
    """
    import torch

    from dlkit.runs.checkpoint_io import AtomicCheckpointIO

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    callbacks, changed = relocate(checkpoint.get("callbacks") or {}, old, new)
    if changed:
        checkpoint["callbacks"] = callbacks
        AtomicCheckpointIO().save_checkpoint(checkpoint, path)
    return changed


def clean_for_resume(checkpoints: Path, checkpoint: Path) -> list[str]:
    """Before resuming from `checkpoint`, remove what the lost segment after it left in the checkpoint folder:
    temporary files of interrupted writes, and checkpoints written after it (the resumed run writes them again;
    kept, a best-*.ckpt of the lost segment would stand beside the resumed run's own, whatever save_top_k says).
    Returns the names removed."""
    if not checkpoints.is_dir():
        return []
    since = checkpoint.stat().st_mtime_ns
    removed = []
    for path in sorted(checkpoints.iterdir()):
        stale = path.name.endswith(".tmp") or (path.suffix == ".ckpt" and path != checkpoint
                                                and path.stat().st_mtime_ns > since)
        if stale and path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed


# where dlkit's configurable classes and functions used to live -> where they live now
MOVED_TARGETS = {
    "dlkit.models.bert.bert_adamw": "dlkit.tasks.optimizers.bert_adamw",
    "dlkit.data.text.HFTextDataModule": "dlkit.data.hf_text.HFTextDataModule",
    "dlkit.data.text.SyntheticSentimentDataModule": "dlkit.data.synthetic_text.SyntheticSentimentDataModule",
    "dlkit.tracking.csv_logger.RunCSVLogger": "dlkit.loggers.csv_logger.RunCSVLogger",
    "dlkit.tracking.wandb_logger.make_wandb_logger": "dlkit.loggers.wandb_logger.make_wandb_logger",
    "dlkit.tracking.grad_norm.GradNormMonitor": "dlkit.callbacks.GradNormMonitor",
}


def retarget(cfg: DictConfig) -> DictConfig:
    """A run's saved config with every `_target_` that names a moved class or function (MOVED_TARGETS) re-pointed,
    so runs trained by an earlier dlkit still evaluate, predict and resume."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: MOVED_TARGETS.get(v, v) if k == "_target_" and isinstance(v, str) else walk(v)
                    for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return OmegaConf.create(walk(OmegaConf.to_container(cfg)))
