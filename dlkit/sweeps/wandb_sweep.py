"""The same search as a W&B sweep: a YAML file for `wandb sweep`, created on W&B when logged in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from dlkit.config import metric_mode
from dlkit.sweeps.space import parse_space, to_wandb
from dlkit.sweeps.study import _named, settings, sweep_dir_of, train_overrides

METHODS = {"tpe": "bayes", "cmaes": "bayes", "random": "random", "grid": "grid"}


def sweep_config(overrides: list[str], config_dir: str | None = None) -> tuple[dict[str, Any], Path]:
    """The W&B sweep config equivalent to the Optuna search, and the sweep folder to write it to."""
    cfg, _, name = settings(overrides, config_dir)
    search = cfg.hparams_search
    space = parse_space(OmegaConf.to_container(search.params, resolve=True))
    goal = search.get("direction") or ("minimize" if metric_mode(cfg.optimized_metric) == "min" else "maximize")
    config: dict[str, Any] = {
        "name": name,
        "project": OmegaConf.select(cfg, "logger.wandb.project", default=None) or "dlkit",
        "entity": OmegaConf.select(cfg, "logger.wandb.entity", default=None),
        "program": "dlkit",
        # `dlkit train <the preset's groups and the user's overrides> key=value ...`: the trials' config, with W&B
        # passing the sampled parameters as Hydra-style key=value
        "command": ["dlkit", "train", *train_overrides(overrides, config_dir), "${args_no_hyphens}"],
        "method": METHODS.get(_named(search.get("sampler"), "tpe")["name"], "bayes"),
        "metric": {"name": cfg.optimized_metric, "goal": goal},
        "parameters": to_wandb(space),
        "run_cap": int(search.n_trials),
    }
    if config["entity"] is None:
        del config["entity"]
    return config, sweep_dir_of(cfg, name)


def write(overrides: list[str], config_dir: str | None = None) -> tuple[Path, str | None]:
    """Write wandb_sweep.yaml; when logged in, also create the sweep and return its id."""
    from dlkit.loggers.wandb_runs import logged_in

    config, sweep_dir = sweep_config(overrides, config_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / "wandb_sweep.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    if not logged_in():
        return path, None
    import wandb

    return path, wandb.sweep(config, project=config["project"], entity=config.get("entity"))
