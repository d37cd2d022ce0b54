"""Multi-layer perceptron."""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def make_activation(name: str) -> nn.Module:
    """An activation module by name (relu, gelu, tanh, silu)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r}: choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """Flatten the input, then Linear -> [norm] -> activation -> dropout per hidden layer, then a linear head."""

    accepts = ("image_classification",)

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden_sizes: list[int] = (256, 128),
                 activation: str = "relu", dropout: float = 0.1, norm: str | None = None) -> None:
        super().__init__()
        if norm not in (None, "batch", "layer"):
            raise ValueError(f"norm={norm!r}: choose batch, layer or null")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for hidden in hidden_sizes:
            layers.append(nn.Linear(width, hidden))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(hidden))
            elif norm == "layer":
                layers.append(nn.LayerNorm(hidden))
            layers += [make_activation(activation), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [B, num_classes] for inputs [B, ...]."""
        return self.net(x)
