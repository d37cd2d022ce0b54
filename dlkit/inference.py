"""Use a trained run afterwards: rebuild its data and model from the run's own config, then test or predict."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dlkit import run_folder
from dlkit.data.base import DataModule
from dlkit.errors import DlkitError, UsageError
from dlkit.tasks.base import Task


@dataclass
class Loaded:
    """A trained model ready to use: its config, run folder (None for a lone .ckpt), checkpoint, data and task."""

    cfg: DictConfig
    run_dir: Path | None
    checkpoint: Path
    datamodule: DataModule
    task: Task


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A dlkit checkpoint, loaded with torch's weights_only safety (no code runs from the file)."""
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise DlkitError(f"{path} is not a checkpoint torch can load safely ({type(err).__name__}); "
                         "give a .ckpt written by dlkit train.") from err
    if not isinstance(checkpoint, dict) or "dlkit" not in checkpoint or "state_dict" not in checkpoint:
        raise DlkitError(f"{path} is not a dlkit checkpoint (no dlkit metadata); give a .ckpt written by dlkit train.")
    return checkpoint


def locate(ref: str, output_dir: str = "outputs") -> tuple[Path | None, Path]:
    """(run folder or None, checkpoint): a .ckpt file as given, else the run's best checkpoint (or last.ckpt)."""
    path = Path(ref).expanduser()
    if path.suffix == ".ckpt":
        parent = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return (parent if run_folder.is_run_folder(parent) else None), path
    run_dir = run_folder.find_run(ref, output_dir)
    checkpoints = run_dir / "checkpoints"
    best = sorted(checkpoints.glob("best-*.ckpt")) if checkpoints.is_dir() else []
    chosen = best[-1] if best else checkpoints / "last.ckpt"
    if not chosen.is_file():
        raise DlkitError(f"{run_dir} has no checkpoint (checkpoints/best-*.ckpt or last.ckpt) to load.")
    return run_dir, chosen


def load(ref: str, overrides: list[str] | None = None, output_dir: str = "outputs") -> Loaded:
    """Rebuild datamodule and task of a run (or lone checkpoint) with its trained weights.

    Overrides are plain `key=value` settings on the run's config (e.g. data.test_file=other.csv).
    """
    import pytorch_lightning as pl

    from dlkit.training import build_datamodule, build_task

    run_dir, path = locate(ref, output_dir)
    checkpoint = read_checkpoint(path)
    cfg = OmegaConf.load(run_dir / run_folder.CONFIG) if run_dir else OmegaConf.create(checkpoint["dlkit"]["config"])
    bad = [o for o in overrides or [] if "=" not in o or o.startswith(("+", "~"))]
    if bad:
        raise UsageError(f"'{bad[0]}': give settings as key=value (e.g. data.test_file=other.csv).")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides or [])))
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule)
    task.load_state_dict(checkpoint["state_dict"])
    task.eval()
    return Loaded(cfg, run_dir, path, datamodule, task)


def evaluate(loaded: Loaded) -> dict[str, float]:
    """Run the test loop on one device and return the test metrics."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(accelerator=loaded.cfg.trainer.get("accelerator", "auto"), devices=1, logger=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         precision=loaded.cfg.trainer.get("precision", "32-true"))
    results = trainer.test(loaded.task, datamodule=loaded.datamodule, verbose=False)
    return {k: float(v) for result in results for k, v in result.items()}


def predict(loaded: Loaded, inputs: list[str], batch_size: int = 64, **options: Any) -> list[dict[str, Any]]:
    """One record per raw input (text line, image path, source sentence), in batches."""
    if not inputs:
        raise UsageError("nothing to predict: give TEXT arguments, --input FILE, or --input - for standard input.")
    if not hasattr(loaded.datamodule, "encode_inputs") or not hasattr(loaded.task, "predict_batch"):
        raise DlkitError(f"predict does not support {type(loaded.datamodule).__name__} yet.")
    records: list[dict[str, Any]] = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + batch_size]
            try:
                batch = loaded.datamodule.encode_inputs(chunk)
            except (ValueError, RuntimeError, OSError) as err:
                raise DlkitError(f"input does not fit this model's data ({type(err).__name__}: {err})") from err
            for raw, record in zip(chunk, loaded.task.predict_batch(batch, **options)):
                records.append({"input": raw, **record})
    return records
