"""Model architectures: plain nn.Modules, sized from the data's spec. They never import Lightning."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from dlkit.data.spec import DataSpec


def build_model(model_cfg: Any, spec: DataSpec) -> nn.Module:
    """Instantiate the model config, passing the spec fields (vocab_size, num_classes, ...) its class names."""
    from hydra.utils import get_class

    from dlkit.config import construct

    params = inspect.signature(get_class(model_cfg["_target_"]).__init__).parameters
    spec_values = {**spec.as_dict(), **spec.extra, "spec": spec}
    given = {k: v for k, v in spec_values.items() if k in params and k not in model_cfg and v is not None}
    return construct(model_cfg, **given)
