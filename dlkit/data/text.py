"""Text classification datamodules: files (CSV/TSV/JSON Lines/Parquet) and a synthetic default (Hugging Face
datasets: hf_text.py).

All share `TextClassificationDataModule`. Preparing the data streams each source three times in chunks, never
holding its rows: a first pass counts the rows and their labels (and cuts validation and test sets out of the
training rows when the source has none), a second trains the tokenizer on the training rows (or loads the one
`tokenizer.path` names), a third encodes every row with the tokenizer (framing and truncation included, every core
at work) into a token store (dlkit.data.store), written once per (files, settings). Training reads batches out of
the memory-mapped store, padded to their longest text, optionally bucketed by length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dlkit.data.base import Batch, BucketSampler, DataModule, fold_assignment, split_assignment
from dlkit.data.progress import preparing
from dlkit.data.ragged import Ragged
from dlkit.data.spec import DataSpec
from dlkit.data.store import Spill, Store, StoreWriter, prepared
from dlkit.data.tables import Chunk, read_columns
from dlkit.data.tokenizers import (
    CLIENT_ENCODING,
    cut_rows,
    encode_rows,
    fingerprint,
    frame,
    load_tokenizer,
    readable,
    save_for_clients,
    special_ids,
    train_tokenizer,
    with_settings,
)
from dlkit.errors import DlkitError, UsageError

SPLITS = ("train", "val", "test")
# rows the tokenizer encodes in one call
ENCODE_ROWS = 16384
# what a source yields: chunks of {"text": [...], "label": [...]} (and "pair": [...] for sentence pairs)
Source = Callable[[], Iterator[Chunk]]


class TextRows(Dataset):
    """Token ids (and segment ids of sentence pairs) and label indices of one split; a batch is gathered from them
    at once (`__getitems__`) and padded to its longest text."""

    def __init__(self, ids: Ragged, labels: np.ndarray | Any, pad_id: int, types: Ragged | None = None) -> None:
        self.ids, self.labels, self.pad_id, self.types = ids, labels, pad_id, types

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        return self.ids.lengths()

    def __getitem__(self, index: int) -> tuple[list[int], list[int] | None, int]:
        """One row: (token ids, segment ids or None, label index)."""
        types = self.types.row(index).tolist() if self.types is not None else None
        return self.ids.row(index).tolist(), types, int(self.labels[index])

    def __getitems__(self, indices: list[int]) -> Batch:
        """({input_ids, attention_mask, token_type_ids} [B, T], labels [B]) of many rows."""
        rows = np.asarray(indices, dtype=np.int64)
        ids, lengths = self.ids.padded(rows, self.pad_id)
        mask = np.arange(ids.shape[1]) < lengths[:, None]
        types = self.types.padded(rows, 0, ids.shape[1])[0] if self.types is not None else np.zeros_like(ids)
        inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask.astype(np.int64)),
                  "token_type_ids": torch.from_numpy(types)}
        return Batch((inputs, torch.from_numpy(np.asarray(self.labels[rows], dtype=np.int64))))


class TextClassificationDataModule(DataModule):
    """Subclasses give the rows of each split (`sources`) and what identifies them (`source_id`); this class
    prepares, stores and batches them."""

    kind = "text_classification"
    # whether rows have a second text (sentence-pair tasks): those are always framed [CLS] a [SEP] b [SEP]
    pairs = False

    def __init__(self, batch_size: int = 64, tokenizer: dict[str, Any] | None = None, max_length: int | None = 256,
                 add_special_tokens: bool = False, bucketing: bool = False, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, split_seed: int = 0, cache_dir: str | None = None,
                 num_workers: int | None = 0, pin_memory: bool | None = None, folds: int | None = None,
                 fold: int | None = None) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if (folds is None) != (fold is None) or (folds is not None and not (folds >= 2 and 0 <= fold < folds)):
            raise UsageError(f"cv.folds={folds} cv.fold={fold}: cross-validation needs folds >= 2 and a fold in "
                             "0 .. folds - 1 (cv.folds=10 runs every fold).")
        self.folds, self.fold = folds, fold
        self.tokenizer_settings = with_settings({"kind": "word", "vocab_size": 30000, "min_frequency": 1,
                                                 "lowercase": True, "path": None}, tokenizer)
        self.max_length, self.add_special_tokens, self.bucketing = max_length, add_special_tokens, bucketing
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.cache_dir = cache_dir or str(Path.home() / ".cache" / "dlkit" / "cache")
        self.tokenizer = None
        self.labels: list[str] = []
        self.store: Store | None = None

    # -- what subclasses provide ------------------------------------------------------------------------
    def sources(self) -> dict[str, Source]:
        """The rows of 'train' and, when the source has them, 'val' and 'test'."""
        raise NotImplementedError

    def source_id(self) -> Any:
        """What identifies the rows for the store's key (files with sizes and times, or settings)."""
        raise NotImplementedError

    def empty(self, split: str) -> str:
        """The message for a split without rows."""
        if split == "train":
            return f"{type(self).__name__}: the training split is empty"
        return f"{type(self).__name__}: the {split} split is empty (too few examples?)"

    @property
    def framed(self) -> bool:
        """Whether texts are framed [CLS] ... [SEP] (asked for, or sentence pairs)."""
        return self.add_special_tokens or self.pairs

    # -- setup -----------------------------------------------------------------------------------------
    def store_key(self) -> str:
        """The store's name: every input that changes the ids (the files by path, size and time)."""
        folds = [self.folds, self.fold] if self.folds else []  # (absent without cross-validation: old keys stay)
        return fingerprint("text-classification", self.source_id(), self.tokenizer_settings, self.max_length,
                           self.framed, self.val_fraction, self.test_fraction, self.split_seed, *folds)

    def prepare(self) -> tuple[Store, bool]:
        """The token store of this data (built now if needed); (store, whether it was built now)."""
        return prepared(self.cache_dir, self.store_key(), self._build, describe=f"data of {type(self).__name__}")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.store, _ = self.prepare()
        from tokenizers import Tokenizer

        self.tokenizer_file = str(self.store.folder / "tokenizer.json")
        self.labels = list(self.store.manifest["labels"])
        self._use_tokenizer(Tokenizer.from_file(self.tokenizer_file))
        self.train_set, self.val_set, self.test_set = (self._rows(self.store, split) for split in SPLITS)
        self._spec = DataSpec(kind=self.kind, num_classes=len(self.labels), class_names=self.labels,
                              vocab_size=self.tokenizer.get_vocab_size(), pad_id=self.pad_id,
                              mask_id=special_ids(self.tokenizer)["mask"], max_length=self.max_length,
                              tokenizer_path=self.tokenizer_file)

    def _rows(self, store: Store, split: str) -> TextRows:
        types = store.ragged(split, "types") if store.has(split, "types") else None
        return TextRows(store.ragged(split, "ids"), store.fixed(split, "label"), self.pad_id, types)

    # -- preparing the store ---------------------------------------------------------------------------
    def _build(self, writer: StoreWriter) -> dict[str, Any]:
        sources = self.sources()
        with preparing() as show:
            counted = {name: _count(source, writer.spill(name), show(f"Reading {name} rows"))
                       for name, source in sources.items()}
            missing = [name for name in ("val", "test") if name not in counted]
            cut = [self.val_fraction if name == "val" else self.test_fraction for name in missing]
            # which split each training row goes to (0: train, k: missing[k - 1]); None: all of them to train
            if self.folds:
                missing = self._fold_splits(counted)
                parts = fold_assignment(counted["train"][0], self.folds, self.fold, self.val_fraction,
                                        self.split_seed)
            else:
                parts = split_assignment(counted["train"][0].count, (1.0 - sum(cut), *cut), self.split_seed) \
                    if missing else None
            labels = self._labels(counted, parts, missing)
            tokenizer = self._tokenizer(sources["train"], parts, show)
            frame(tokenizer, self.max_length, self.framed)
            tokenizer.save(str(writer.folder / "tokenizer.json"))
            for name, source in sources.items():
                route = ["train", *missing] if name == "train" and parts is not None else [name]
                codes, names = counted[name]
                remap = np.array([labels.index(n) if n in labels else -1 for n in names], dtype=np.int32)
                self._encode(source, writer, tokenizer, route, parts if len(route) > 1 else None,
                             codes, remap, show(f"Encoding {name} rows", codes.count))
        for name in SPLITS:
            writer.empty_split(name)
        return {"labels": labels, "source": self.source_id()}

    def _fold_splits(self, counted: dict[str, Any]) -> list[str]:
        """The splits a fold cuts out of the training rows; a given validation or test set cannot be cut too."""
        given = [name for name in ("val", "test") if name in counted]
        if given:
            raise UsageError(f"cv.folds={self.folds} cuts the test (and validation) rows out of the training data, "
                             f"but the data has its own {given[0]} split: drop it (e.g. data.{given[0]}_file).")
        return ["val", "test"]

    def _labels(self, counted: dict[str, tuple[Spill, list[str]]], parts: np.ndarray | None,
                missing: list[str]) -> list[str]:
        """The label names of the training rows, sorted; every split non-empty and labelled with them."""
        codes, names = counted["train"]
        if not codes.count:
            raise DlkitError(self.empty("train"))
        # how many training-file rows of each label code each split got (a row of it per split, train first)
        by_split = codes.counts(len(names), parts, 1 + len(missing))
        labels = sorted(names[c] for c in np.flatnonzero(by_split[0]))
        for name in ("val", "test"):
            if name in counted:
                own, known = counted[name]
                present = own.counts(len(known))[0]
            else:
                known, present = names, by_split[1 + missing.index(name)]
            if not present.sum():
                raise DlkitError(self.empty(name))
            unseen = sorted({known[c] for c in np.flatnonzero(present)} - set(labels))
            if unseen:
                raise DlkitError(f"label {unseen[0]!r} appears in the {name} split but never in train: every label "
                                 "needs training examples.")
        return labels

    def _tokenizer(self, train: Source, parts: np.ndarray | None, show: Any):
        """The configured tokenizer: loaded from tokenizer.path, or trained on the training rows' texts."""
        settings = dict(self.tokenizer_settings)
        path = settings.pop("path")
        if path:
            return load_tokenizer(path, lowercase=settings["lowercase"])
        rows = int((parts == 0).sum()) if parts is not None else None
        progress = show("Training the tokenizer", rows)

        def texts() -> Iterator[list[str]]:
            start = 0
            for chunk in train():
                keep = parts[start:start + len(chunk["text"])] == 0 if parts is not None else None
                start += len(chunk["text"])
                for column in ("text", "pair"):
                    if column in chunk:
                        values = chunk[column]
                        yield values if keep is None else [v for v, k in zip(values, keep.tolist()) if k]
                progress.advance(len(chunk["text"]) if keep is None else int(keep.sum()))

        return train_tokenizer(texts(), length=rows, **settings)

    def _encode(self, source: Source, writer: StoreWriter, tokenizer: Any, route: list[str],
                parts: np.ndarray | None, codes: Spill, remap: np.ndarray, progress: Any) -> None:
        """Encode a source's rows and append them to the splits of `route` (by `parts` when there are several), each
        with its label (`remap` of its label code)."""
        start = 0
        for chunk in source():
            for begin in range(0, len(chunk["text"]), ENCODE_ROWS):
                texts = chunk["text"][begin:begin + ENCODE_ROWS]
                pairs = chunk["pair"][begin:begin + ENCODE_ROWS] if self.pairs else None
                ids, lengths, types = encode_rows(tokenizer, texts, pairs, self.framed)
                rows = Ragged.of(ids, lengths)
                typed = Ragged(types, rows.offsets) if types is not None else None
                span = slice(start, start + len(texts))
                labels = remap[codes.read(start, start + len(texts))]
                where = parts[span] if parts is not None else np.zeros(len(texts), dtype=np.int8)
                for number, split in enumerate(route):
                    chosen = np.flatnonzero(where == number)
                    if not len(chosen):
                        continue
                    writer.ragged(split, "ids", *rows.gather(chosen))
                    if typed is not None:
                        writer.ragged(split, "types", *typed.gather(chosen))
                    writer.fixed(split, "label", labels[chosen])
                start += len(texts)
                progress.advance(len(texts), written=int(lengths.sum()) * 4)

    # -- loaders ---------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        if not self.bucketing:
            return super().train_dataloader()
        sampler = BucketSampler(self.train_set.lengths(), self.batch_size, seed=self.shuffle_seed)
        return self._loader(self.train_set, shuffle=True, sampler=sampler)

    # -- prediction ------------------------------------------------------------------------------------
    def inference_state(self) -> dict[str, Any] | None:
        """The tokenizer (as JSON text) and the labels: all predict needs besides the spec."""
        return {"tokenizer": self.tokenizer.to_str(), "labels": list(self.labels)} if self.tokenizer else None

    def restore(self, state: dict[str, Any], spec: DataSpec) -> None:
        from tokenizers import Tokenizer

        self._use_tokenizer(Tokenizer.from_str(state["tokenizer"]))
        self.labels = list(state["labels"])
        self._spec = spec

    def _use_tokenizer(self, tokenizer: Any) -> None:
        """Take the tokenizer (framing and truncating as this data does, see tokenizers.frame) and its [PAD] id
        (0 when it has none)."""
        self.tokenizer = frame(tokenizer, self.max_length, self.framed)
        pad = special_ids(tokenizer)["pad"]
        self.pad_id = pad if pad is not None else 0

    def encode_inputs(self, raw: list[str]) -> dict[str, torch.Tensor]:
        """A batch of model inputs for raw texts (a tab separates the two texts of a pair)."""
        ids, lengths, types = encode_rows(self.tokenizer, *self._split_pairs(raw), self.framed)
        rows = Ragged.of(ids, lengths)
        rows = TextRows(rows, np.zeros(len(raw), dtype=np.int64), self.pad_id,
                        Ragged(types, rows.offsets) if types is not None else None)
        inputs, _ = rows.__getitems__(list(range(len(raw))))
        return inputs

    def overlong(self, raw: list[str]) -> list[int | None]:
        cut = cut_rows(self.tokenizer, *self._split_pairs(raw), self.framed)
        return [self.max_length if c else None for c in cut]

    def examples(self, stage: str, indices: list[int]) -> list[str]:
        """The rows' texts as the model reads them: the stored ids decoded (lowercased, cut to max_length, unknown
        words as the tokenizer's unknown token); a pair's two texts joined by " | "."""
        rows: TextRows = self.split_set(stage)
        shown = []
        for index in indices:
            ids = rows.ids.row(index)
            if rows.types is None:
                shown.append(readable(self.tokenizer, ids.tolist()))
                continue
            types = rows.types.row(index)
            shown.append(" | ".join(readable(self.tokenizer, ids[types == part].tolist()) for part in (0, 1)))
        return shown

    def _split_pairs(self, raw: list[str]) -> tuple[list[str], list[str] | None]:
        """(first texts, second texts of pairs or None) of raw inputs: a tab separates the texts of a pair."""
        texts = [line.split("\t", 1) for line in raw]
        return [t[0] for t in texts], [t[1] if len(t) > 1 else "" for t in texts] if self.pairs else None

    def client_preprocessing(self, out_dir: Path) -> dict[str, Any]:
        """The tokenizer.json (framing, truncation and padding included) and how to call it."""
        specials = save_for_clients(self.tokenizer, self.pad_id, out_dir / "tokenizer.json")
        return {"input": "text", "tokenizer": "tokenizer.json", "max_length": self.max_length,
                "sentence_pairs": self.pairs, "framed": self.framed, "special_tokens": specials,
                "steps": CLIENT_ENCODING}


def _count(source: Source, codes: Spill, progress: Any) -> tuple[Spill, list[str]]:
    """(each row's label as a code, spilled to `codes`; the label of each code) of a source, in one pass."""
    index: dict[str, int] = {}
    for chunk in source():
        labels = chunk["label"]
        codes.append(np.fromiter((index.setdefault(v, len(index)) for v in labels), dtype=np.int32, count=len(labels)))
        progress.advance(len(labels))
    return codes, list(index)


# -- sources ---------------------------------------------------------------------------------------------
class TextFilesDataModule(TextClassificationDataModule):
    """Texts and labels from CSV, TSV, JSON Lines or Parquet files: a train file, optional validation and test
    files. Files of any size: they are streamed, never read whole."""

    def __init__(self, train_file: str, val_file: str | None = None, test_file: str | None = None,
                 text_column: str | int = "text", label_column: str | int = "label",
                 text_pair_column: str | int | None = None, format: str | None = None,  # noqa: A002 - the config key
                 header: bool = True, encoding: str = "utf-8", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        self.columns = (text_column, label_column, text_pair_column)
        self.pairs = text_pair_column is not None
        self.file_format, self.header, self.encoding = format, header, encoding

    def sources(self) -> dict[str, Source]:
        if not self.files["train"]:
            raise UsageError("data=text_files needs data.train_file=PATH (CSV, TSV, JSON Lines or Parquet).")
        names = [str(c) for c in self.columns if c is not None]
        keys = ["text", "label", "pair"][:len(names)]
        sources = {}
        for split, path in self.files.items():
            if not path:
                continue
            file = Path(path).expanduser()
            read_columns(file, names, self.file_format, self.header, self.encoding)  # checked now, not later

            def rows(file: Path = file) -> Iterator[Chunk]:
                for chunk in read_columns(file, names, self.file_format, self.header, self.encoding):
                    yield {key: chunk[name] for key, name in zip(keys, names)}

            sources[split] = rows
        return sources

    def empty(self, split: str) -> str:
        path = self.files.get(split)
        if split == "train" or not path:
            return super().empty(split)
        return (f"data.{split}_file {path} has no rows: fill it, or drop data.{split}_file to split the {split} set "
                "off the training data.")

    def source_id(self) -> Any:
        # header/encoding only when not the defaults, so existing keys stay valid
        reading = {k: v for k, v in (("header", self.header), ("encoding", self.encoding))
                   if v != {"header": True, "encoding": "utf-8"}[k]}
        return [str(Path(p).expanduser()) for p in self.files.values() if p] + [self.columns] + (
            [reading] if reading else [])
