"""dlkit's Lightning logger for W&B: one W&B run per dlkit run (and one per `dlkit eval`), ended with the run's
outcome, with dlkit's config.yaml attached."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger

from dlkit.loggers.wandb_runs import (
    ID_FILE,
    decide_mode,
    display_name,
    flat_config,
    group_of,
    rank,
    remember_url,
    run_id,
)


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


def make_wandb_logger(run_config: DictConfig, project: str = "dlkit", entity: str | None = None, mode: str = "auto",
                      name: str | None = None, group: str | None = None, tags: list[str] | None = None,
                      job_type: str = "train", log_model: bool | str = False, notes: str | None = None):
    """A Lightning WandbLogger for this run, or None when W&B is disabled."""
    run_dir = Path(run_config.paths.run_dir)
    # only rank 0 makes a W&B run: the others need no mode decision (and no network check)
    mode = decide_mode(mode, run_config, run_dir) if rank() == 0 else "offline"
    if mode == "disabled":
        return None
    import wandb

    return RunWandbLogger(
        project=project, entity=entity, id=run_id(run_dir), resume="allow", save_dir=str(run_dir), mode=mode,
        name=display_name(run_config, name), group=group_of(run_config, group), tags=list(tags or []),
        job_type=job_type, log_model=log_model, notes=notes, config=flat_config(run_config),
        # dlkit says itself where an offline run went and how to sync it; W&B's own console report is noise here
        settings=wandb.Settings(silent=True),
    )


def make_eval_logger(run_config: DictConfig, folder: Path, checkpoint: Path, overrides: list[str],
                     extra: dict[str, Any] | None = None) -> Any:
    """A W&B run of its own (job_type eval) for `dlkit eval`, or None when the run did not log to W&B or W&B is
    disabled.

    It is named after the training run ("<name>-eval"), shares its group (the multirun or sweep, if any), records
    the training run's W&B id, the checkpoint, the eval overrides and `extra` in its config, and is saved in `folder`.
    """
    node = (run_config.get("logger") or {}).get("wandb")
    if node is None or not node.get("_target_", "").endswith("make_wandb_logger"):
        return None
    mode = decide_mode(str(node.get("mode") or "auto"), run_config, folder)
    if mode == "disabled":
        return None
    import wandb

    trained = folder / ID_FILE
    config = {**flat_config(run_config), "eval.checkpoint": str(checkpoint.resolve()),
              "eval.overrides": list(overrides), "eval.train_wandb_id": trained.read_text().strip()
              if trained.is_file() else None, **(extra or {})}
    return RunWandbLogger(
        project=node.get("project") or "dlkit", entity=node.get("entity"), mode=mode, save_dir=str(folder),
        name=f"{display_name(run_config, node.get('name'))}-eval", group=group_of(run_config, node.get("group")),
        tags=list(node.get("tags") or []), job_type="eval", config=config, settings=wandb.Settings(silent=True),
    )


def finish_loggers(loggers: list[Any], run_dir: str, failed: bool | None = None) -> None:
    """Attach the run's config.yaml to its W&B run and end it, so multirun jobs never merge into one.

    The W&B run ends with exit code 1 when the run failed or was interrupted (state `failed` in W&B), else 0.
    `failed=None` takes it from Lightning (see RunWandbLogger).
    """
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
