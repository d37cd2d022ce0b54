"""Model architectures: plain nn.Modules, sized from the data's spec. They never import Lightning."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from dlkit.data.spec import DataSpec
from dlkit.errors import UsageError


def build_model(model_cfg: Any, spec: DataSpec) -> nn.Module:
    """Instantiate the model config, passing the spec fields (vocab_size, num_classes, ...) its class names."""
    from hydra.utils import get_class

    from dlkit.config import construct

    params = inspect.signature(get_class(model_cfg["_target_"]).__init__).parameters
    spec_values = {**spec.as_dict(), **spec.extra, "spec": spec}
    given = {k: v for k, v in spec_values.items() if k in params and k not in model_cfg and v is not None}
    try:
        return construct(model_cfg, **given)
    except (ValueError, TypeError) as err:  # a model.* value the architecture refuses: a usage error, no run
        name = model_cfg["_target_"].rsplit(".", 1)[-1]
        raise UsageError(f"{name} refuses its model.* settings: {err} (`dlkit config show` prints them).") from err
