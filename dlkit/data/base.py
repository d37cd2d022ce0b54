"""Shared pieces of the datamodules: loader settings and splitting."""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

from dlkit.data.spec import DataSpec


def loader_kwargs(num_workers: int | None, pin_memory: bool | None) -> dict:
    """Sensible DataLoader defaults: workers kept alive between epochs, memory pinned when a GPU is there."""
    workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if num_workers is None else num_workers
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    return {"num_workers": workers, "pin_memory": pin, "persistent_workers": workers > 0}


class Batch(tuple):
    """A whole batch that a dataset gathered at once in `__getitems__`; `collate` passes it through."""


def collate(items: Any) -> Any:
    """torch's default_collate, except for a Batch, which already is one (a plain tuple of its tensors)."""
    return tuple(items) if isinstance(items, Batch) else default_collate(items)


def split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[list[int]]:
    """Shuffled indices cut into parts of the given fractions (the last takes the rest), reproducibly."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    parts, start = [], 0
    for fraction in fractions[:-1]:
        size = int(round(fraction * n))
        parts.append(order[start:start + size])
        start += size
    parts.append(order[start:])
    return parts


def complete_splits(splits: dict[str, list], val_fraction: float, test_fraction: float, seed: int,
                    owner: str) -> dict[str, list]:
    """Train, val and test lists: the ones a source lacks are cut out of train; none may end up empty."""
    from dlkit.errors import DlkitError

    train = splits.get("train") or []
    if not train:
        raise DlkitError(f"{owner}: the training split is empty")
    missing = [name for name in ("val", "test") if not splits.get(name)]
    if missing:
        cut = [val_fraction if name == "val" else test_fraction for name in missing]
        parts = split_indices(len(train), (1.0 - sum(cut), *cut), seed)
        splits = dict(splits, train=[train[i] for i in parts[0]])
        splits.update({name: [train[i] for i in part] for name, part in zip(missing, parts[1:])})
    for name in ("train", "val", "test"):
        if not splits[name]:
            raise DlkitError(f"{owner}: the {name} split is empty (too few examples?)")
    return splits


def split(dataset: Dataset, fractions: tuple[float, ...], seed: int) -> list[Dataset]:
    """Split a dataset into Subsets of the given fractions, reproducibly."""
    return [Subset(dataset, part) for part in split_indices(len(dataset), fractions, seed)]


class EpochShuffle(Sampler[int]):
    """A random order that depends only on (seed, epoch): Lightning calls set_epoch before every epoch, so a
    resumed run sees exactly the batches the uninterrupted run would have seen."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())

    def __len__(self) -> int:
        return self.size


class ResumableLoader(DataLoader):
    """A training DataLoader that can resume mid-epoch: its state is the number of batches handed out this epoch.

    Lightning saves that state in every checkpoint and loads it back on resume; the next pass then reads and drops
    that many batches, so a run resumed from a mid-epoch checkpoint trains on the batches it had not seen yet.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._served, self._skip, self._skip_epoch = 0, 0, None

    def _epoch(self) -> int | None:
        """The epoch the sampler was set to (Lightning calls set_epoch before every epoch)."""
        for sampler in (self.batch_sampler, self.sampler):
            epoch = getattr(sampler, "epoch", None)
            if isinstance(epoch, int):
                return epoch
        return None

    def __iter__(self):
        # skip only within the epoch the state was saved in: a state saved after an epoch's last batch (with
        # trainer.limit_train_batches, fewer than len(self)) is followed by a new epoch, which starts at its beginning
        skip = self._skip if self._skip_epoch == self._epoch() else 0
        self._served, self._skip = 0, 0
        for number, batch in enumerate(super().__iter__()):
            if number < skip:
                continue
            self._served = number + 1
            yield batch

    def state_dict(self) -> dict[str, int | None]:
        return {"batches": self._served, "epoch": self._epoch()}

    def load_state_dict(self, state: dict[str, int | None]) -> None:
        served = int(state.get("batches") or 0)
        self._skip = served if served < len(self) else 0
        self._skip_epoch = state.get("epoch", self._epoch())


class DataModule(pl.LightningDataModule):
    """A LightningDataModule that states its kind and, after setup, its DataSpec."""

    kind: str = ""

    def __init__(self, batch_size: int = 64, num_workers: int | None = 0, pin_memory: bool | None = None) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.loader_kwargs = loader_kwargs(num_workers, pin_memory)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._spec: DataSpec | None = None
        self.collate_fn: Any = collate
        # the seed dlkit set before building the data: shuffling follows it, epoch by epoch
        self.shuffle_seed = torch.initial_seed() % 2**31

    @property
    def spec(self) -> DataSpec:
        """What the data produces; available after setup()."""
        if self._spec is None:
            raise RuntimeError(f"{type(self).__name__}.spec is known only after setup()")
        return self._spec

    def inference_state(self) -> dict[str, Any] | None:
        """What predict needs from the data besides the spec (tokenizers as JSON text, normalisation, ...), as
        plain str/int/float/list/dict values that checkpoints carry; None: this datamodule cannot be restored."""
        return None

    def restore(self, state: dict[str, Any], spec: DataSpec) -> None:
        """Become ready to encode inputs from inference_state() and the spec, without reading any data."""
        raise NotImplementedError(f"{type(self).__name__} cannot be restored without its data")

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: setup() has not been called")
        sampler = EpochShuffle(len(dataset), self.shuffle_seed) if shuffle else None
        # the loader's own generator: creating an iterator never draws from the global RNG
        generator = torch.Generator().manual_seed(self.shuffle_seed)
        loader = ResumableLoader if shuffle else DataLoader
        return loader(dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate_fn,
                      generator=generator, **self.loader_kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
