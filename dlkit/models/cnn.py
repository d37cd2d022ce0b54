"""Convolutional image classifiers: LeNet-5 (LeCun et al. 1998) and AlexNet (Krizhevsky et al. 2012).

Both are sized from the input shape, so the same config trains on 8x8 digits, 28x28 MNIST, 32x32 CIFAR-10
or larger images.
"""

from __future__ import annotations

import torch
from torch import nn


def _flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Number of features the convolutional trunk produces for one input of this shape."""
    features.eval()  # batch norm cannot run in training mode on a single example
    with torch.no_grad():
        size = features(torch.zeros(1, *input_shape)).flatten(1).shape[1]
    features.train()
    return size


class LeNet(nn.Module):
    """conv(5x5, 6) -> pool -> conv(5x5, 16) -> pool -> fc 120 -> fc 84 -> classes.

    Inputs smaller than 28 pixels get padded convolutions so that both poolings still fit.
    """

    accepts = ("image_classification",)

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, int] = (6, 16),
                 hidden: tuple[int, int] = (120, 84), activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        in_channels, height = input_shape[0], input_shape[1]
        padding = 2 if height < 28 else 0
        act = nn.ReLU if activation == "relu" else nn.Tanh
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], kernel_size=5, padding=padding), act(), nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], kernel_size=5, padding=padding), act(), nn.MaxPool2d(2),
        )
        flat = _flat_size(self.features, input_shape)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden[0]), act(), nn.Dropout(dropout),
            nn.Linear(hidden[0], hidden[1]), act(), nn.Dropout(dropout), nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [B, num_classes] for images [B, C, H, W]."""
        return self.classifier(self.features(x))


class AlexNet(nn.Module):
    """Five conv layers (three max-pooled) and a dropout-regularised three-layer head.

    `width` scales every layer (1.0 is the paper's 96-256-384-384-256 conv / 4096 fc); batch norm replaces
    the paper's local response normalisation (set batch_norm=false for the original). The first
    convolution is 11x11 stride 4 only on inputs of 64 pixels or more; smaller inputs get 3x3 stride 1,
    and pooling stops once the feature map is 1 pixel wide, so digits, MNIST and CIFAR-10 all fit.
    """

    accepts = ("image_classification",)

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, fc_size: int = 4096,
                 dropout: float = 0.5, batch_norm: bool = True) -> None:
        super().__init__()
        self.batch_norm = batch_norm
        in_channels, size = input_shape[0], min(input_shape[1], input_shape[2])
        c1, c2, c3, c4, c5 = (max(8, int(c * width)) for c in (96, 256, 384, 384, 256))
        large = size >= 64
        layers = self._conv(in_channels, c1, kernel_size=11 if large else 3, stride=4 if large else 1,
                            padding=2 if large else 1)
        size = (size + 4 - 11) // 4 + 1 if large else size
        size = self._pool(layers, size)
        layers += self._conv(c1, c2, kernel_size=5, padding=2)
        size = self._pool(layers, size)
        layers += self._conv(c2, c3, kernel_size=3, padding=1)
        layers += self._conv(c3, c4, kernel_size=3, padding=1)
        layers += self._conv(c4, c5, kernel_size=3, padding=1)
        self._pool(layers, size)
        self.features = nn.Sequential(*layers)
        flat = _flat_size(self.features, input_shape)
        fc = max(16, int(fc_size * width))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, fc), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Linear(fc, num_classes),
        )

    def _conv(self, in_channels: int, out_channels: int, **kwargs: int) -> list[nn.Module]:
        """Convolution, batch norm (in place of the paper's local response normalisation) and ReLU."""
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, bias=not self.batch_norm, **kwargs)]
        if self.batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        return [*layers, nn.ReLU(inplace=True)]

    @staticmethod
    def _pool(layers: list[nn.Module], size: int) -> int:
        """Append a 3x3/2 max-pool (2x2/2 on small maps) while the map is wider than 1 pixel; return the new size."""
        if size >= 7:
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            return (size - 3) // 2 + 1
        if size >= 2:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            return size // 2
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [B, num_classes] for images [B, C, H, W]."""
        return self.classifier(self.features(x))
