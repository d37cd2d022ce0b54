"""Texts laid out by class: a folder per class holding text files (IMDB's `train/pos/*.txt`), or a file per class
(the movie-review set's `rt-polarity.pos` / `.neg`); one text per file or one per line. Streamed, never read whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlkit.data.tables import Chunk, check_encoding, chunks_of, not_encoded
from dlkit.data.text import Source, TextClassificationDataModule
from dlkit.errors import UsageError

CHUNK_ROWS = 65536
PER = ("file", "line")


class TextFolderDataModule(TextClassificationDataModule):
    """`root`: a folder with one sub-folder per class, named after its label (optional `val_root` / `test_root`
    laid out the same way); or `files`: each label's file (or files, or a glob). `text_per`: `file` (a whole file
    is one text) or `line` (each non-empty line is one); null: file for folders, line for files."""

    def __init__(self, root: str | None = None, val_root: str | None = None, test_root: str | None = None,
                 files: dict[str, Any] | None = None, classes: list[str] | None = None, pattern: str = "*",
                 text_per: str | None = None, encoding: str = "utf-8", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if root and files:
            raise UsageError("data.root and data.files are two ways to give the texts: set one of them.")
        if not root and not files:
            raise UsageError("data=text_folder needs data.root=FOLDER (a sub-folder per class, e.g. pos/ and neg/) "
                             "or data.files={LABEL: FILE, ...} (e.g. {pos: rt-polarity.pos, neg: rt-polarity.neg}).")
        if text_per not in (None, *PER):
            raise UsageError(f"data.text_per={text_per!r}: choose file (a file is one text) or line (a line is one).")
        check_encoding(encoding)
        self.roots = {"train": root, "val": val_root, "test": test_root}
        self.label_files = {str(k): v for k, v in (files or {}).items()}
        self.classes, self.pattern, self.encoding = (list(classes) if classes else None), pattern, encoding
        self.text_per = text_per or ("file" if root else "line")

    # -- what the texts are ------------------------------------------------------------------------------
    def class_files(self, split: str) -> dict[str, list[Path]]:
        """Each label's files for a split (checked: every label has at least one)."""
        if self.label_files:
            return {label: _files_of(label, value) for label, value in self.label_files.items()} \
                if split == "train" else {}
        root = self.roots[split]
        if not root:
            return {}
        key = "root" if split == "train" else f"{split}_root"
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise UsageError(f"data.{key}={root} is not a folder: give the folder holding one sub-folder per class.")
        found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        labels = self.classes or found
        absent = [label for label in labels if label not in found]
        if absent:
            raise UsageError(f"data.{key}={root} has no sub-folder {absent[0]!r} (data.classes); it has: "
                             f"{', '.join(found) or 'none'}.")
        if len(labels) < 2:
            raise UsageError(f"data.{key}={root} holds {len(labels)} class folder(s) ({', '.join(labels) or 'none'}): "
                             "put each class's texts in a sub-folder named after it (pos/, neg/, ...).")
        by_label = {}
        for label in labels:
            paths = sorted(p for p in (folder / label).rglob(self.pattern)
                           if p.is_file() and not p.name.startswith("."))
            if not paths:
                raise UsageError(f"data.{key}={root}: the class folder {label}/ has no files matching "
                                 f"data.pattern={self.pattern!r}.")
            by_label[label] = paths
        return by_label

    def sources(self) -> dict[str, Source]:
        sources = {}
        for split in ("train", "val", "test"):
            files = self.class_files(split)
            if files:
                sources[split] = lambda files=files: self._chunks(files)
        return sources

    def _chunks(self, files: dict[str, list[Path]]) -> Iterator[Chunk]:
        return chunks_of(self._texts(files), ("text", "label"), CHUNK_ROWS)

    def _texts(self, files: dict[str, list[Path]]) -> Iterator[tuple[str, str]]:
        for label, paths in files.items():
            for path in paths:
                try:
                    with open(path, encoding=self.encoding) as handle:
                        if self.text_per == "file":
                            text = " ".join(handle.read().split())
                            if text:
                                yield text, label
                            continue
                        for line in handle:
                            if line.strip():
                                yield line.strip(), label
                except UnicodeDecodeError as err:
                    raise not_encoded(path, self.encoding, err) from err

    def empty(self, split: str) -> str:
        if split == "train":
            return "data=text_folder: no texts were found (every file is empty)."
        return super().empty(split)

    def source_id(self) -> Any:
        """Every file by path, size and time (one digest for a folder of many), and how it is read."""
        digest = hashlib.sha256()
        for split in ("train", "val", "test"):
            for label, paths in self.class_files(split).items():
                for path in paths:
                    stat = path.stat()
                    digest.update(f"{split}\0{label}\0{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return [digest.hexdigest(), self.text_per, self.encoding]


def _files_of(label: str, value: Any) -> list[Path]:
    """The files data.files gives one label: a path, a glob, or a list of either."""
    given = [value] if isinstance(value, str) else [str(v) for v in value]
    paths: list[Path] = []
    for entry in given:
        path = Path(entry).expanduser()
        matches = sorted(path.parent.glob(path.name)) if any(c in path.name for c in "*?[") else \
            ([path] if path.is_file() else [])
        if not matches:
            raise UsageError(f"data.files.{label}={entry}: no such file.")
        paths += matches
    return paths
