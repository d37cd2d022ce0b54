"""Image classification datamodules."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from dlkit.data.base import DataModule, split_indices
from dlkit.data.spec import DataSpec


class DigitsDataModule(DataModule):
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), standardised with train statistics."""

    kind = "image_classification"

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 split_seed: int = 0, normalize: bool = True, num_workers: int | None = 0,
                 pin_memory: bool | None = None) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.fractions = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
        self.split_seed = split_seed
        self.normalize = normalize

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target, dtype=torch.long)
        parts = split_indices(len(labels), self.fractions, self.split_seed)
        if self.normalize:
            train_images = images[parts[0]]
            images = (images - train_images.mean()) / train_images.std()
        self.train_set, self.val_set, self.test_set = (TensorDataset(images[p], labels[p]) for p in parts)
        self._spec = DataSpec(kind=self.kind, num_classes=10, class_names=[str(i) for i in range(10)],
                              input_shape=(1, 8, 8))
