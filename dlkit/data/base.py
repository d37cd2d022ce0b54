"""Shared pieces of the datamodules: loader settings, splitting, epoch-seeded samplers and the resumable loader."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, default_collate

from dlkit.data.spec import DataSpec

if TYPE_CHECKING:
    from dlkit.data.store import Store


def loader_kwargs(num_workers: int | None, pin_memory: bool | None) -> dict:
    """Sensible DataLoader defaults: workers kept alive between epochs, memory pinned when a GPU is there."""
    workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if num_workers is None else num_workers
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    return {"num_workers": workers, "pin_memory": pin, "persistent_workers": workers > 0}


class Batch(tuple):
    """A whole batch that a dataset gathered at once in `__getitems__`; `collate` passes it through."""


class BatchDict(dict):
    """A whole batch of named tensors that a dataset gathered at once; `collate` passes it through."""


def collate(items: Any) -> Any:
    """torch's default_collate, except for a batch a dataset gathered itself (a plain tuple or dict of tensors)."""
    if isinstance(items, Batch):
        return tuple(items)
    if isinstance(items, BatchDict):
        return dict(items)
    return default_collate(items)


def split_assignment(n: int, fractions: tuple[float, ...], seed: int) -> np.ndarray:
    """Which part each of n items falls in (0, 1, ...): a random choice of exactly round(fraction * n) items for every
    part but the last, which takes the rest; the same for the same (n, fractions, seed)."""
    order = np.random.default_rng(seed).permutation(n)
    parts = np.full(n, len(fractions) - 1, dtype=np.int8)
    start = 0
    for part, fraction in enumerate(fractions[:-1]):
        size = int(round(fraction * n))
        parts[order[start:start + size]] = part
        start += size
    return parts


def fold_assignment(codes: Any, folds: int, fold: int, val_fraction: float, seed: int) -> np.ndarray:
    """Which part each row falls in for one fold of a k-fold cross-validation (0: train, 1: validation, 2: test):
    the rows are dealt into `folds` folds label by label (stratified: each fold has each label's share, sizes
    within one row), fold `fold` is the test, and `val_fraction` of the other rows, drawn at random, validate.
    `codes` (a Spill of label codes) is read a block at a time; the same (codes, folds, seed) give the same folds.
    """
    labels = np.concatenate([block for _, block in codes.blocks()]) if codes.count else np.zeros(0, np.int32)
    rng = np.random.default_rng(seed)
    of_fold = np.empty(len(labels), dtype=np.int64)
    dealt = 0  # rows dealt so far: the next label starts where the last one stopped, so folds stay within one row
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        of_fold[rows] = (dealt + np.arange(len(rows))) % folds
        dealt += len(rows)
    parts = np.zeros(len(labels), dtype=np.int8)
    parts[of_fold == fold] = 2
    rest = np.flatnonzero(of_fold != fold)
    parts[rng.choice(rest, size=int(round(val_fraction * len(rest))), replace=False)] = 1
    return parts


def split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[list[int]]:
    """The indices of each part of split_assignment, in order."""
    parts = split_assignment(n, fractions, seed)
    return [np.flatnonzero(parts == part).tolist() for part in range(len(fractions))]


# indices handed out per step of a sampler's iteration (a permutation is turned into Python ints this many at a time)
_SLICE = 65536


class EpochShuffle(Sampler[int]):
    """A random order that depends only on (seed, epoch): Lightning calls set_epoch before every epoch, so a
    resumed run sees exactly the batches the uninterrupted run would have seen. The order is a numpy array, handed
    out a slice at a time (no list of every index)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch, self._start = size, seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start_at(self, position: int) -> None:
        """Begin the next pass at this position of the epoch's order (a mid-epoch resume)."""
        self._start = position

    def __iter__(self) -> Iterator[int]:
        start, self._start = self._start, 0
        order = np.random.default_rng(self.seed + self.epoch).permutation(self.size)
        for begin in range(start, self.size, _SLICE):
            yield from order[begin:begin + _SLICE].tolist()

    def __len__(self) -> int:
        return self.size


class BucketSampler(Sampler[list[int]]):
    """Batches of similar lengths (sorted within buckets of 50 batches, then the batch order shuffled) to cut padding;
    the order depends only on (seed, epoch)."""

    def __init__(self, lengths: Sequence[int] | np.ndarray, batch_size: int, shuffle: bool = True,
                 seed: int = 0) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed, self.epoch, self._start = batch_size, shuffle, seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before every epoch."""
        self.epoch = epoch

    def start_at(self, batch: int) -> None:
        """Begin the next pass at this batch of the epoch (a mid-epoch resume)."""
        self._start = batch

    def __iter__(self) -> Iterator[list[int]]:
        start, self._start = self._start, 0
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        chunk, batches = self.batch_size * 50, []
        for begin in range(0, len(order), chunk):
            piece = order[begin:begin + chunk]
            piece = piece[np.argsort(self.lengths[piece], kind="stable")]
            batches += np.split(piece, range(self.batch_size, len(piece), self.batch_size))
        turn = rng.permutation(len(batches)) if self.shuffle else range(len(batches))
        for number in list(turn)[start:]:
            yield batches[number].tolist()

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


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

    def _fast_forward(self, batches: int) -> bool:
        """Tell dlkit's own sampler to begin `batches` batches into the epoch (no batch is read to be dropped);
        False when the sampler is another (Lightning's distributed one wraps ours under DDP)."""
        if hasattr(self.batch_sampler, "start_at"):
            self.batch_sampler.start_at(batches)
            return True
        if isinstance(self.batch_sampler, BatchSampler) and hasattr(self.sampler, "start_at"):
            self.sampler.start_at(batches * self.batch_sampler.batch_size)
            return True
        return False

    def __iter__(self):
        # skip only within the epoch the state was saved in: a state saved after an epoch's last batch (with
        # trainer.limit_train_batches, fewer than len(self)) is followed by a new epoch, which starts at its beginning
        skip = self._skip if self._skip_epoch == self._epoch() else 0
        self._served, self._skip = 0, 0
        first = skip if skip and self._fast_forward(skip) else 0
        for number, batch in enumerate(super().__iter__(), start=first):
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
    """A LightningDataModule that states its kind and, after setup, its DataSpec.

    What dlkit asks of a datamodule beyond Lightning's hooks, all declared here: `kind` (the DataSpec kind it
    produces); `prepare()`, its token store built ahead of training; `inference_state()` / `restore()`, what
    predict needs carried in the checkpoint; `encode_inputs()`, raw inputs as a batch; `client_preprocessing()`,
    the same encoding written down for programs outside dlkit (exports); `references()`, the texts a split's
    predictions are scored against; `examples()`, a split's rows as a person looks at them.
    """

    kind: ClassVar[str] = ""

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

    def prepare(self) -> tuple[Store, bool] | None:
        """The token store of this data, built now if needed: (store, whether it was built now); None for data that
        keeps no store (images)."""
        return None

    def encode_inputs(self, raw: list[str]) -> Any:
        """A batch of model inputs for raw inputs (texts; image paths or image bytes), as `dlkit predict` and
        `dlkit serve` feed them."""
        raise NotImplementedError(f"predict does not support {type(self).__name__} yet")

    def overlong(self, raw: list[str]) -> list[int | None]:
        """For each raw input that encode_inputs() cuts to the model's limit, the tokens it keeps; None for the
        others (images: always None)."""
        return [None] * len(raw)

    def client_preprocessing(self, out_dir: Path) -> dict[str, Any]:
        """What a program outside dlkit needs to turn raw inputs into model inputs exactly as encode_inputs() does:
        writes the files it needs into out_dir (a tokenizer.json) and returns the `preprocessing` entry of an
        export's model.json (the steps, with every number they use)."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its inputs for exports yet")

    def references(self, stage: str) -> Sequence[str] | None:
        """The texts a split's generated outputs are scored against, as written (seq2seq); None: none kept."""
        return None

    def split_set(self, stage: str) -> Dataset:
        """The dataset of a split ('train', 'val' or 'test'), after setup()."""
        dataset = {"train": self.train_set, "val": self.val_set, "test": self.test_set}.get(stage)
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: no {stage} split (has setup() been called?)")
        return dataset

    def examples(self, stage: str, indices: list[int]) -> list[str] | list[np.ndarray]:
        """Rows of a split as a person looks at them (`dlkit report`): each text as the model reads it (its tokens
        decoded, the two texts of a pair joined by " | "), or each image as uint8 [H, W, C] pixels."""
        raise NotImplementedError(f"{type(self).__name__} does not show its examples yet")

    def _loader(self, dataset: Dataset | None, shuffle: bool, sampler: Sampler | None = None) -> DataLoader:
        """A loader of the dataset: for training (shuffle) resumable, in an order EpochShuffle draws from the seed
        and the epoch (or the given sampler's: a sampler of batches, such as BucketSampler, or of indices)."""
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: setup() has not been called")
        if shuffle and sampler is None:
            sampler = EpochShuffle(len(dataset), self.shuffle_seed)
        batches = {"batch_sampler": sampler} if isinstance(sampler, BucketSampler) else {
            "batch_size": self.batch_size, "sampler": sampler}
        # the loader's own generator: creating an iterator never draws from the global RNG (that would shift the
        # random draws of the training, dropout's, between a run and its resumed copy)
        generator = torch.Generator().manual_seed(self.shuffle_seed)
        loader = ResumableLoader if shuffle else DataLoader
        return loader(dataset, **batches, collate_fn=self.collate_fn, generator=generator, **self.loader_kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
