"""Learning-rate schedules as Lightning scheduler configs.

Each takes the optimizer, the total number of optimizer steps and the monitored metric, plus its own
settings from `conf/scheduler/`, and returns the dict Lightning expects from configure_optimizers.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau

from dlkit.config import metric_mode


def _warmup_steps(total_steps: int, warmup_steps: int, warmup_ratio: float) -> int:
    return max(int(warmup_steps), int(warmup_ratio * total_steps))


def cosine_with_warmup(optimizer: Optimizer, total_steps: int, monitor: str, warmup_steps: int = 0,
                       warmup_ratio: float = 0.0, min_lr_ratio: float = 0.0) -> dict:
    """Linear warm-up from 0, then cosine decay to min_lr_ratio of the base rate."""
    warmup = _warmup_steps(total_steps, warmup_steps, warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}


def linear_with_warmup(optimizer: Optimizer, total_steps: int, monitor: str, warmup_steps: int = 0,
                       warmup_ratio: float = 0.1) -> dict:
    """Linear warm-up from 0, then linear decay to 0 at the last step."""
    warmup = _warmup_steps(total_steps, warmup_steps, warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}


def inverse_sqrt(optimizer: Optimizer, total_steps: int, monitor: str, warmup_steps: int = 4000,
                 d_model: int | None = None) -> dict:
    """Vaswani et al. 2017: lr grows linearly for warmup_steps, then decays as 1/sqrt(step).

    With d_model set, the paper's formula d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) is used as
    the factor (set optimizer.lr=1); without it, the factor peaks at 1.0 so optimizer.lr is the peak.
    """
    warmup = max(1, int(warmup_steps))

    def factor(step: int) -> float:
        step = step + 1
        shape = min(step ** -0.5, step * warmup ** -1.5)
        return shape * d_model ** -0.5 if d_model else shape * warmup ** 0.5

    return {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}


def one_cycle(optimizer: Optimizer, total_steps: int, monitor: str, max_lr_factor: float = 10.0,
              pct_start: float = 0.3) -> dict:
    """One-cycle policy peaking at max_lr_factor times each group's learning rate."""
    max_lr = [group["lr"] * max_lr_factor for group in optimizer.param_groups]
    scheduler = OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(1, total_steps), pct_start=pct_start)
    return {"scheduler": scheduler, "interval": "step"}


def reduce_on_plateau(optimizer: Optimizer, total_steps: int, monitor: str, factor: float = 0.5,
                      patience: int = 3) -> dict:
    """Cut the learning rate when the monitored metric stops improving (checked every epoch)."""
    scheduler = ReduceLROnPlateau(optimizer, mode=metric_mode(monitor), factor=factor, patience=patience)
    return {"scheduler": scheduler, "interval": "epoch", "monitor": monitor}
