"""Rows of different lengths (token ids of texts, sentences) as two flat arrays, values and offsets, in memory or
memory-mapped from a store's files, and the batch operations on them: gather, pad, clip and frame many rows at once
without Python lists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class Mapped:
    """A file of `count` values of `dtype`, memory-mapped when first used. It pickles as its file name, so a
    DataLoader worker process maps the same file instead of receiving a copy of its data."""

    def __init__(self, path: Path, dtype: str, count: int) -> None:
        self.path, self.dtype, self.count = Path(path), np.dtype(dtype), int(count)
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = (np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.count,)) if self.count
                           else np.zeros(0, dtype=self.dtype))
        return self._array

    def __getitem__(self, index: Any) -> Any:
        return self.array[index]

    def __len__(self) -> int:
        return self.count

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.array, dtype=dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "dtype": self.dtype, "count": self.count, "_array": None}


@dataclass
class Ragged:
    """Rows of different lengths: `values` holds every row's items one after another, row i is
    values[offsets[i]:offsets[i + 1]]."""

    values: np.ndarray | Mapped
    offsets: np.ndarray | Mapped

    @classmethod
    def of(cls, flat: np.ndarray, lengths: np.ndarray) -> Ragged:
        """Rows given as their values one after another and their lengths (in memory)."""
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(flat, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(np.asarray(self.offsets))

    def row(self, index: int) -> np.ndarray:
        return np.asarray(self.values[self.offsets[index]:self.offsets[index + 1]])

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the rows' values one after another, their lengths), for many rows at once."""
        indices = np.asarray(indices, dtype=np.int64)
        starts, lengths = self.offsets[indices], self.offsets[indices + 1] - self.offsets[indices]
        within = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return np.asarray(self.values[np.repeat(starts, lengths) + within]), lengths

    def padded(self, indices: np.ndarray, pad: int = 0, longest: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows [B, T] padded with `pad` to the longest, lengths [B]) as int64 arrays."""
        flat, lengths = self.gather(indices)
        return pad_rows(flat, lengths, pad, longest), lengths


def pad_rows(flat: np.ndarray, lengths: np.ndarray, pad: int, longest: int | None = None) -> np.ndarray:
    """Rows given one after another (with their lengths) as one [B, T] int64 array padded with `pad`."""
    width = max(1, int(lengths.max()) if len(lengths) else 1, longest or 0)
    out = np.full((len(lengths), width), pad, dtype=np.int64)
    out[np.arange(width) < lengths[:, None]] = flat
    return out


def clip_rows(flat: np.ndarray, lengths: np.ndarray, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Rows given one after another, each cut to its first `limit` values (None: as they are)."""
    if limit is None or not len(lengths) or int(lengths.max()) <= limit:
        return flat, lengths
    kept = np.minimum(lengths, limit)
    starts = np.cumsum(lengths) - lengths
    within = np.arange(int(kept.sum()), dtype=np.int64) - np.repeat(np.cumsum(kept) - kept, kept)
    return flat[np.repeat(starts, kept) + within], kept


def frame_rows(flat: np.ndarray, lengths: np.ndarray, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows given one after another, each framed as `first` row... `last`."""
    framed = lengths + 2
    out = np.empty(int(framed.sum()), dtype=flat.dtype)
    ends = np.cumsum(framed)
    starts = ends - framed
    out[starts], out[ends - 1] = first, last
    inner = np.ones(len(out), dtype=bool)
    inner[starts], inner[ends - 1] = False, False
    out[inner] = flat
    return out, framed


class Strings:
    """Texts stored as UTF-8 bytes in a Ragged: text i decoded when asked for."""

    def __init__(self, data: Ragged) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> str:
        return self.data.row(index).tobytes().decode("utf-8")
