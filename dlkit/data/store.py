"""Token stores: a dataset's encoded splits on disk, written once per (files, settings) and memory-mapped by every
process that trains on them.

    <cache_dir>/stores/<key>/
        manifest.json            what the store holds: splits, columns with their dtypes, rows and file sizes
        <split>.<column>.values  ragged columns (token ids of each row): every row's values, one after another
        <split>.<column>.offsets where each row starts (int64, rows + 1 of them)
        <split>.<column>.bin     fixed columns (a label per row)
        tokenizer.json ...       whatever the datamodule keeps beside the ids

The manifest also holds each column's statistics, counted while it was written (tokens and length percentiles of
ragged columns, value counts of integer fixed columns), so that describing a store reads no column.

The files are plain little-endian arrays that numpy maps (np.memmap): opening a store costs milliseconds and no
memory, whatever its size, and a batch is gathered from the maps without Python lists. A store is built in a
temporary folder and renamed into place when complete, under a lock that makes every other process (DDP ranks,
parallel runs) wait and then map the same files; a store whose files do not match its manifest (truncated, half
copied) is rebuilt with a warning, never used.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from dlkit.data.progress import human_size
from dlkit.data.ragged import Mapped, Ragged, Strings

log = logging.getLogger("dlkit")
FORMAT = 2
MANIFEST = "manifest.json"
SPILLS = "spills"  # the scratch columns of a build, inside the folder being built
COUNTED = 1 << 16  # integer fixed columns whose values all lie below this are counted value by value


class DamagedStore(Exception):
    """A store folder whose files do not match its manifest."""


# -- reading --------------------------------------------------------------------------------------------------------
class Store:
    """An opened store: its manifest and the columns of each split, memory-mapped."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder, self.manifest = folder, manifest

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def rows(self, split: str) -> int:
        return int(self.manifest["splits"][split]["rows"])

    def has(self, split: str, column: str) -> bool:
        return column in self.manifest["splits"][split]["columns"]

    def ragged(self, split: str, column: str) -> Ragged:
        spec = self.manifest["splits"][split]["columns"][column]
        values = Mapped(self.folder / f"{split}.{column}.values", spec["dtype"], int(spec["values"]))
        return Ragged(values, Mapped(self.folder / f"{split}.{column}.offsets", "int64", self.rows(split) + 1))

    def strings(self, split: str, column: str) -> Strings:
        return Strings(self.ragged(split, column))

    def fixed(self, split: str, column: str) -> Mapped:
        spec = self.manifest["splits"][split]["columns"][column]
        return Mapped(self.folder / f"{split}.{column}.bin", spec["dtype"], self.rows(split))

    def size(self) -> int:
        """Bytes on disk."""
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())


def open_store(folder: Path) -> Store:
    """A complete store; DamagedStore when its manifest is missing or a file does not have the size it lists."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DamagedStore(f"its {MANIFEST} cannot be read ({err})") from err
    if manifest.get("format") != FORMAT:
        raise DamagedStore(f"it was written in store format {manifest.get('format')}, this dlkit reads {FORMAT}")
    for name, size in manifest.get("files", {}).items():
        path = folder / name
        actual = path.stat().st_size if path.is_file() else None
        if actual != size:
            raise DamagedStore(f"{name} has {actual if actual is not None else 'no'} bytes where {size} were written")
    return Store(folder, manifest)


# -- writing --------------------------------------------------------------------------------------------------------
class StoreWriter:
    """Columns of each split appended chunk by chunk into a folder; finish() writes the manifest."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._splits: dict[str, dict[str, Any]] = {}
        self._handles: dict[str, Any] = {}
        self._counts: dict[tuple[str, str], np.ndarray] = {}  # (split, column): how often each length / value came
        self._uncounted: set[tuple[str, str]] = set()  # fixed columns with a value too large or negative to count

    def _split(self, split: str) -> dict[str, Any]:
        return self._splits.setdefault(split, {"rows": None, "columns": {}})

    def _append(self, name: str, array: np.ndarray) -> None:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = open(self.folder / name, "wb")  # noqa: SIM115 - closed in finish()
        handle.write(np.ascontiguousarray(array).tobytes())

    def _count(self, split: str, column: str, values: np.ndarray) -> None:
        counts = np.bincount(values)
        total = self._counts.get((split, column), np.zeros(0, dtype=np.int64))
        if len(total) < len(counts):
            total = np.concatenate([total, np.zeros(len(counts) - len(total), dtype=np.int64)])
        total[:len(counts)] += counts
        self._counts[split, column] = total

    def ragged(self, split: str, column: str, flat: np.ndarray, lengths: np.ndarray) -> None:
        """Append rows given as their values one after another and their lengths."""
        spec = self._split(split)["columns"].setdefault(column, {"kind": "ragged", "dtype": str(flat.dtype),
                                                                  "values": 0, "rows": 0})
        if spec["rows"] == 0:
            self._append(f"{split}.{column}.offsets", np.zeros(1, dtype=np.int64))
        ends = spec["values"] + np.cumsum(lengths, dtype=np.int64)
        self._append(f"{split}.{column}.offsets", ends)
        self._append(f"{split}.{column}.values", flat.astype(spec["dtype"], copy=False))
        self._count(split, column, np.asarray(lengths, dtype=np.int64))
        spec["values"] += int(lengths.sum())
        spec["rows"] += len(lengths)

    def strings(self, split: str, column: str, texts: Sequence[str]) -> None:
        encoded = [t.encode("utf-8") for t in texts]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        self.ragged(split, column, np.frombuffer(b"".join(encoded), dtype=np.uint8), lengths)

    def fixed(self, split: str, column: str, values: np.ndarray) -> None:
        """Append one value per row (integer columns of small non-negative values, such as labels, are counted)."""
        spec = self._split(split)["columns"].setdefault(column, {"kind": "fixed", "dtype": str(values.dtype),
                                                                  "rows": 0})
        self._append(f"{split}.{column}.bin", values.astype(spec["dtype"], copy=False))
        countable = values.dtype.kind in "iu" and (not len(values) or values.min() >= 0 and values.max() < COUNTED)
        if not countable:
            self._uncounted.add((split, column))
        elif (split, column) not in self._uncounted:
            self._count(split, column, values.astype(np.int64, copy=False))
        spec["rows"] += len(values)

    def empty_split(self, split: str) -> None:
        """A split with no rows (so that readers find it)."""
        self._split(split)

    def spill(self, name: str, dtype: str = "int32") -> Spill:
        """A scratch column for the build (deleted by finish(), never part of the store)."""
        (self.folder / SPILLS).mkdir(exist_ok=True)
        return Spill(self.folder / SPILLS / name, dtype)

    def finish(self, **extra: Any) -> dict[str, Any]:
        """Close every file and write the manifest (rows, columns and their statistics, file sizes, and `extra`)."""
        for handle in self._handles.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self._handles.clear()
        shutil.rmtree(self.folder / SPILLS, ignore_errors=True)
        for name, split in self._splits.items():
            counts = {spec["rows"] for spec in split["columns"].values()}
            if len(counts) > 1:
                raise RuntimeError(f"store split {name}: columns of different lengths {sorted(counts)}")
            split["rows"] = counts.pop() if counts else 0
            for column, spec in split["columns"].items():
                counts = None if (name, column) in self._uncounted else \
                    self._counts.get((name, column), np.zeros(0, dtype=np.int64))
                spec["stats"] = _stats(spec["kind"], counts)
        manifest = {"format": FORMAT, "splits": self._splits, **extra,
                    "files": {p.name: p.stat().st_size for p in sorted(self.folder.iterdir()) if p.is_file()},
                    "created": datetime.now().isoformat(timespec="seconds"),
                    "built_by": f"process {os.getpid()} on {platform.node()}"}
        (self.folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        return manifest


def _stats(kind: str, counts: np.ndarray | None) -> dict[str, Any]:
    """A column's statistics from how often each length (ragged) or value (fixed) came: ragged columns get their
    tokens and the 50th, 90th and 99th percentile and the largest of their lengths (as np.percentile gives them,
    rounded down); counted fixed columns get the count of each value (None: not counted, no statistics)."""
    if kind == "fixed":
        return {"counts": counts.tolist()} if counts is not None else {}
    if not counts.sum():
        return {"tokens": 0}
    lengths = np.arange(len(counts))
    return {"tokens": int((lengths * counts).sum()), **{f"p{q}": _percentile(counts, q) for q in (50, 90, 99)},
            "max": int(lengths[counts > 0][-1])}


def _percentile(counts: np.ndarray, q: float) -> int:
    """np.percentile (linear interpolation) of the values that `counts` counts, rounded down, without them."""
    ends = np.cumsum(counts)
    position = q / 100 * (int(ends[-1]) - 1)
    below = int(position)
    low, high = np.searchsorted(ends, [below, min(below + 1, int(ends[-1]) - 1)], side="right")
    return int(low + (position - below) * (high - low))


class Spill:
    """A column of integers too long to hold in memory while a store is built (a label code per row, say):
    appended chunk by chunk to a file, read back a range at a time."""

    def __init__(self, path: Path, dtype: str = "int32") -> None:
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        self._handle = open(path, "wb")  # noqa: SIM115 - closed by read()

    def append(self, values: np.ndarray) -> None:
        self._handle.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.count += len(values)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Values start..stop-1 (reading them from the file: they never take up memory as a whole)."""
        if not self._handle.closed:
            self._handle.close()
        stop = min(stop, self.count)
        if stop <= start:
            return np.zeros(0, dtype=self.dtype)
        return np.fromfile(self.path, dtype=self.dtype, count=stop - start, offset=start * self.dtype.itemsize)

    def blocks(self, size: int = 1 << 20) -> Iterator[tuple[int, np.ndarray]]:
        """(start, values) of consecutive ranges of `size` values."""
        for start in range(0, self.count, size):
            yield start, self.read(start, start + size)

    def counts(self, values: int, parts: np.ndarray | None = None, splits: int = 1) -> np.ndarray:
        """[splits, values]: how many rows of each value (a label code) went to each split (`parts`: the split of
        each row; None: all to the first), counted a block at a time."""
        counts = np.zeros((splits, values), dtype=np.int64)
        for start, block in self.blocks():
            where = parts[start:start + len(block)] if parts is not None else np.zeros(len(block), dtype=np.int8)
            counts += np.bincount(where.astype(np.int64) * values + block, minlength=counts.size).reshape(counts.shape)
        return counts


@contextmanager
def _locked(path: Path) -> Iterator[bool]:
    """An exclusive lock on `path` (flock; released by the kernel if the holder dies); yields whether it had to wait
    for another process."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            log.info("waiting for another process that prepares %s", path.stem)
            fcntl.flock(handle, fcntl.LOCK_EX)
            waited = True
        try:
            yield waited
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepared(cache_dir: str | Path, key: str, build: Callable[[StoreWriter], dict[str, Any]],
             describe: str = "data") -> tuple[Store, bool]:
    """The store `key` under cache_dir/stores, built by `build` if it is not there (or is damaged); (store, whether
    this call built it).

    `build` appends the columns to the writer it is given and returns the manifest's extra entries. One process
    builds; the others wait on the lock and open the finished store.
    """
    root = Path(cache_dir).expanduser() / "stores"
    folder = root / key
    with _locked(root / f"{key}.lock"):
        if folder.is_dir():
            try:
                store = open_store(folder)
                log.info("using the prepared %s in %s", describe, folder)
                return store, False
            except DamagedStore as err:
                log.warning("the prepared %s in %s is damaged (%s): preparing it again", describe, folder, err)
                _warn(f"The prepared {describe} in {folder} is damaged ({err}): preparing it again.")
                shutil.rmtree(folder)
        for stale in root.glob(f".{key}.*.tmp"):  # left by a builder that died (we hold the lock: nobody builds)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".{key}.{os.getpid()}.tmp"
        tmp.mkdir(parents=True)
        started = time.monotonic()
        try:
            writer = StoreWriter(tmp)
            writer.finish(key=key, **build(writer))
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        store = open_store(folder)
        log.info("prepared the %s in %s: %s in %.1f s", describe, folder, human_size(store.size()),
                 time.monotonic() - started)
        return store, True


def _warn(message: str) -> None:
    from dlkit.ui import console

    console.print(f"[yellow]{message}[/]", highlight=False)


def summary(store: Store) -> dict[str, dict[str, Any]]:
    """Per split: rows, tokens of each ragged column, length percentiles of the first one, label counts (from the
    manifest: no column is read)."""
    labels = store.manifest.get("labels")
    result: dict[str, dict[str, Any]] = {}
    for split, spec in store.manifest["splits"].items():
        info: dict[str, Any] = {"rows": int(spec["rows"])}
        ragged = [(name, column) for name, column in spec["columns"].items()
                  if column["kind"] == "ragged" and name != "raw"]
        for number, (name, column) in enumerate(ragged):
            stats = column["stats"]
            info[f"{name} tokens"] = stats["tokens"]
            if number == 0 and "max" in stats:
                info["lengths"] = {key: stats[key] for key in ("p50", "p90", "p99", "max")}
        if labels is not None and "label" in spec["columns"]:
            counts = spec["columns"]["label"]["stats"]["counts"]
            info["labels"] = {name: int(counts[i]) if i < len(counts) else 0 for i, name in enumerate(labels)}
        result[split] = info
    return result


def stores_of(cache_dir: str | Path) -> Path:
    """The folder holding every store of a cache folder."""
    return Path(cache_dir).expanduser() / "stores"
