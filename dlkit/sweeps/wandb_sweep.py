"""The same search as a W&B sweep: a YAML file for `wandb sweep`, created on W&B when logged in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from dlkit.config import metric_mode
from dlkit.sweeps.space import parse_space, to_wandb
from dlkit.sweeps.study import settings, sweep_dir_of

METHODS = {"tpe": "bayes", "cmaes": "bayes", "random": "random", "grid": "grid"}


def sweep_config(overrides: list[str], config_dir: str | None = None) -> tuple[dict[str, Any], Path]:
    """The W&B sweep config equivalent to the Optuna search, and the sweep folder to write it to."""
    cfg, _, name = settings(overrides, config_dir)
    search = cfg.hparams_search
    space = parse_space(OmegaConf.to_container(search.params, resolve=True))
    base = [o for o in overrides if not o.startswith("hparams_search")]
    goal = search.get("direction") or ("minimize" if metric_mode(cfg.optimized_metric) == "min" else "maximize")
    config = {
        "name": name,
        "program": "dlkit",
        # `dlkit train <base overrides> key=value ...`: W&B passes the parameters as Hydra-style key=value
        "command": ["dlkit", "train", *base, "${args_no_hyphens}"],
        "method": METHODS.get((search.get("sampler") or {}).get("name", "tpe"), "bayes"),
        "metric": {"name": cfg.optimized_metric, "goal": goal},
        "parameters": to_wandb(space),
        "run_cap": int(search.n_trials),
    }
    return config, sweep_dir_of(cfg, name)


def write(overrides: list[str], config_dir: str | None = None) -> tuple[Path, str | None]:
    """Write wandb_sweep.yaml; when logged in, also create the sweep and return its id."""
    from dlkit.tracking.wandb_logger import logged_in

    config, sweep_dir = sweep_config(overrides, config_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / "wandb_sweep.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    if not logged_in():
        return path, None
    import wandb

    return path, wandb.sweep(config, project="dlkit")
