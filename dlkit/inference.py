"""Use a trained run afterwards: rebuild its data and model from the run's own config, then test or predict."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from dlkit.data.base import DataModule
from dlkit.errors import DlkitError, UsageError
from dlkit.runs import checkpoints, records, relocate
from dlkit.tasks.base import Task


class BadInput(DlkitError):
    """An input the run's data cannot turn into a batch (an unreadable image, an array of the wrong shape): the
    input's fault, not the model's."""


@dataclass
class Loaded:
    """A trained model ready to use: its config, run folder (None for a lone .ckpt), checkpoint, data and task."""

    cfg: DictConfig
    run_dir: Path | None
    checkpoint: Path
    datamodule: DataModule
    task: Task


def load(ref: str, overrides: list[str] | None = None, output_dir: str = "outputs",
         for_predict: bool = False) -> Loaded:
    """Rebuild datamodule and task of a run (or lone checkpoint) with its trained weights.

    Overrides are plain `key=value` settings on the run's config (e.g. data.test_file=other.csv). With
    for_predict, a checkpoint that carries its data state is rebuilt from it alone (see restore_datamodule): the
    training data, the tokenizer cache and a BERT's model.pretrained folder need not exist any more.
    """
    import pytorch_lightning as pl

    from dlkit.build import build_datamodule, build_task

    run_dir, path = checkpoints.locate(ref, output_dir)
    checkpoint = checkpoints.read_checkpoint(path)
    saved = OmegaConf.load(run_dir / records.CONFIG) if run_dir else OmegaConf.create(checkpoint["dlkit"]["config"])
    cfg = relocate.retarget(saved)
    world_size = int(records.read_json(run_dir / records.SUMMARY).get("world_size") or 1) if run_dir else 1
    for split in ("val", "test"):
        limit = cfg.trainer.get(f"limit_{split}_batches")
        if world_size > 1 and isinstance(limit, int) and not isinstance(limit, bool):
            # each of the run's processes read `limit` batches of an interleaved split: together, the first
            # limit * world_size batches that one process sees
            cfg.trainer[f"limit_{split}_batches"] = limit * world_size
    bad = [o for o in overrides or [] if "=" not in o or o.startswith(("+", "~"))]
    if bad:
        raise UsageError(f"'{bad[0]}': give settings as key=value (e.g. data.test_file=other.csv).")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides or [])))
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    restored = restore_datamodule(cfg, checkpoint["dlkit"]) if for_predict else None
    if restored is not None and checkpoint["dlkit"].get("model"):
        # the model's recorded sizes instead of model.pretrained: the trained weights replace them all anyway
        with open_dict(cfg):
            cfg.model = OmegaConf.merge(cfg.model, checkpoint["dlkit"]["model"])
    datamodule = restored if restored is not None else build_datamodule(cfg)
    task = build_task(cfg, datamodule)
    task.load_state_dict(checkpoint["state_dict"])
    task.eval()
    return Loaded(cfg, run_dir, path, datamodule, task)


def restore_datamodule(cfg: DictConfig, meta: dict[str, Any]) -> DataModule | None:
    """The run's datamodule ready to encode inputs, from the state and spec its checkpoint carries (no data
    read, no setup); None for checkpoints written before they carried the state."""
    from dlkit.build import build_datamodule
    from dlkit.data.spec import DataSpec

    state = meta.get("data")
    if not isinstance(state, dict) or "spec" not in meta:
        return None
    datamodule = build_datamodule(cfg, setup=False)
    datamodule.restore(state, DataSpec.from_dict(meta["spec"]))
    return datamodule


def output_folder(loaded: Loaded) -> Path:
    """Where eval results go: the run folder, or the folder of a lone checkpoint."""
    return loaded.run_dir if loaded.run_dir is not None else loaded.checkpoint.resolve().parent


def evaluate(loaded: Loaded, overrides: list[str] | None = None) -> tuple[dict[str, float], dict[str, Any] | None]:
    """Run the test loop on one device: (test metrics, the eval's W&B run as id/mode/url or sync command).

    The run's own trainer.limit_test_batches applies (eval tests what the training run tested); an override such
    as trainer.limit_test_batches=null tests everything. A run that logged to W&B gets a W&B run of its own with
    job_type eval (see make_eval_logger); logger.mode=disabled leaves it out.
    """
    from dlkit.build import build_eval_trainer
    from dlkit.loggers.wandb_logger import finish_loggers, make_eval_logger
    from dlkit.loggers.wandb_runs import describe

    folder = output_folder(loaded)
    logger = make_eval_logger(loaded.cfg, folder, loaded.checkpoint, list(overrides or []))
    trainer = build_eval_trainer(loaded.cfg, logger)
    failed = True
    try:
        results = trainer.test(loaded.task, datamodule=loaded.datamodule, verbose=False)
        failed = False
    finally:
        if logger is not None:
            finish_loggers([logger], str(folder), failed=failed)
    metrics = {k: float(v) for result in results for k, v in result.items()}
    return metrics, (describe(logger, folder) if logger is not None else None)


def predict(loaded: Loaded, inputs: list[str], batch_size: int = 64, **options: Any) -> list[dict[str, Any]]:
    """One record per raw input (text line, image path, source sentence), in batches."""
    if not inputs:
        raise UsageError("nothing to predict: give TEXT arguments, --input FILE, or --input - for standard input.")
    records: list[dict[str, Any]] = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + batch_size]
            try:
                batch = loaded.datamodule.encode_inputs(chunk)
            except NotImplementedError as err:  # data that does not predict (see DataModule.encode_inputs)
                raise DlkitError(f"{err}.") from err
            except DlkitError as err:  # (an image that cannot be read)
                raise BadInput(str(err)) from err
            except (ValueError, RuntimeError, OSError) as err:
                raise BadInput(f"input does not fit this model's data ({type(err).__name__}: {err})") from err
            try:
                predicted = loaded.task.predict_batch(batch, **options)
            except NotImplementedError as err:  # a task that does not predict (see Task.predict_batch)
                raise DlkitError(f"{err}.") from err
            records += [{"input": raw, **record} for raw, record in zip(chunk, predicted)]
    return records


def as_text(record: dict[str, Any]) -> str:
    """A prediction as one line of plain text (`predict --format text`): the label, the translation, or the input
    with each [MASK] replaced by its most likely fill (a `##` word piece joined to the word before it)."""
    if "translation" in record:
        return str(record["translation"])
    if "label" in record:
        return str(record["label"])
    text = str(record["input"])
    for fills in record.get("fills", []):
        if fills:
            token: str = fills[0]["token"]
            mask = r"\s?\[MASK\]" if token.startswith("##") else r"\[MASK\]"
            text = re.sub(mask, token.removeprefix("##").replace("\\", "\\\\"), text, count=1)
    return text
