"""Weights & Biases: online when logged in, offline otherwise; one W&B run per dlkit run, resumable.

The W&B run id is kept in `<run folder>/wandb_id`, so resuming a dlkit run continues its W&B run. Only
global rank 0 talks to W&B (Lightning's WandbLogger creates the run on rank 0 only).
"""

from __future__ import annotations

import netrc
import os
import secrets
import string
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

ID_FILE = "wandb_id"


def logged_in() -> bool:
    """True when an API key is in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    """online, offline or disabled: an explicit WANDB_MODE wins, then the config, then auto-detection."""
    explicit = os.environ.get("WANDB_MODE")
    if explicit in ("online", "offline", "disabled", "dryrun"):
        return "offline" if explicit == "dryrun" else explicit
    if mode == "auto":
        return "online" if logged_in() else "offline"
    if mode not in ("online", "offline", "disabled"):
        from dlkit.errors import UsageError

        raise UsageError(f"logger.wandb.mode={mode!r}: choose auto, online, offline or disabled.")
    return mode


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as flat, readable keys (`optimizer.lr`), lists kept whole."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), child)
        else:
            flat[prefix] = value

    walk("", OmegaConf.to_container(cfg, resolve=True))
    return flat


def run_id(run_dir: Path) -> str:
    """The W&B id of this run folder, created once and kept (so a resumed run continues it)."""
    path = run_dir / ID_FILE
    if path.is_file():
        return path.read_text().strip()
    new_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
        path.write_text(new_id + "\n")
    return new_id


def make_wandb_logger(run_config: DictConfig, project: str = "dlkit", entity: str | None = None, mode: str = "auto",
                      name: str | None = None, group: str | None = None, tags: list[str] | None = None,
                      job_type: str = "train", log_model: bool | str = False, notes: str | None = None):
    """A Lightning WandbLogger for this run, or None when W&B is disabled."""
    mode = resolve_mode(mode)
    if mode == "disabled":
        return None
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    run_dir = Path(run_config.paths.run_dir)
    multirun = run_config.paths.get("multirun_dir")
    wandb_id = run_id(run_dir)
    # "<model>-<data>-<run id>", or "...-<multirun id>-<job>" for multirun jobs, which share a group
    label = f"{_short_id(Path(multirun))}-{run_dir.name}" if multirun else _short_id(run_dir)
    return WandbLogger(
        project=project, entity=entity, id=wandb_id, resume="allow", save_dir=str(run_dir), mode=mode,
        name=name or f"{run_config.get('name') or 'run'}-{label}",
        group=group or (Path(multirun).name if multirun else None), tags=list(tags or []), job_type=job_type,
        log_model=log_model, notes=notes, config=flat_config(run_config),
        # dlkit says itself where an offline run went and how to sync it; W&B's own console report is noise here
        settings=wandb.Settings(silent=True),
    )


def _short_id(folder: Path) -> str:
    """The hex id at the end of a run folder's name (`14-56-22-9af716` -> `9af716`)."""
    return folder.name.rsplit("-", 1)[-1]


def wandb_summary(run_dir: Path) -> dict[str, Any] | None:
    """What summary.json says about this run's W&B run: id, mode, and the URL or the sync command."""
    id_file = run_dir / ID_FILE
    if not id_file.is_file():
        return None
    wandb_id = id_file.read_text().strip()
    offline = sorted((run_dir / "wandb").glob(f"offline-run-*-{wandb_id}"))
    if offline:
        return {"id": wandb_id, "mode": "offline", "dir": str(offline[-1]), "sync": f"wandb sync {offline[-1]}"}
    online = sorted((run_dir / "wandb").glob(f"run-*-{wandb_id}"))
    return {"id": wandb_id, "mode": "online", "dir": str(online[-1]) if online else None}
