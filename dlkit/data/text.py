"""Text classification datamodules: files (CSV/TSV/JSON Lines), Hugging Face datasets, and a synthetic default.

All share `TextClassificationDataModule`: labels indexed from the training split, a tokenizer trained on it
(cached on disk by data and settings) or loaded from `tokenizer.path`, every split encoded in one batched
call, batches padded to their longest text, and an optional length-bucketing sampler.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dlkit.data.base import DataModule, ResumableLoader, complete_splits
from dlkit.data.spec import DataSpec
from dlkit.data.tokenizers import cached_tokenizer, encode, fingerprint, load_tokenizer, special_ids
from dlkit.errors import DlkitError, UsageError


@dataclass
class Example:
    """One labelled text, optionally with a second text (sentence-pair tasks)."""

    text: str
    label: str
    pair: str | None = None


class EncodedTexts(Dataset):
    """Token ids and label indices of one split."""

    def __init__(self, ids: list[list[int]], labels: list[int], type_ids: list[list[int]] | None = None) -> None:
        self.ids, self.labels, self.type_ids = ids, labels, type_ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[list[int], list[int] | None, int]:
        return self.ids[index], self.type_ids[index] if self.type_ids else None, self.labels[index]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence: (ids [B, T], mask [B, T] with 1 on real tokens).

    One tensor is built from the padded lists (not one per row): the collation cost is per batch, not per text.
    """
    lengths = [len(seq) for seq in sequences]
    longest = max(1, max(lengths))
    ids = torch.tensor([[*seq, *[pad_id] * (longest - len(seq))] for seq in sequences], dtype=torch.long)
    mask = (torch.arange(longest) < torch.tensor(lengths).unsqueeze(1)).long()
    return ids, mask


class TextCollator:
    """Batches of (ids, type_ids, label) into ({input_ids, attention_mask, token_type_ids}, labels)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[tuple[list[int], list[int] | None, int]]) -> tuple[dict, torch.Tensor]:
        ids, mask = pad_batch([item[0] for item in items], self.pad_id)
        if any(item[1] is not None for item in items):  # sentence pairs: segment ids, padded with 0
            type_ids, _ = pad_batch([item[1] or [] for item in items], 0)
            type_ids = torch.nn.functional.pad(type_ids, (0, ids.shape[1] - type_ids.shape[1]))
        else:
            type_ids = torch.zeros_like(ids)
        labels = torch.tensor([item[2] for item in items], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": type_ids}, labels


class BucketSampler(Sampler[list[int]]):
    """Batches of similar lengths (shuffled within buckets of 50 batches, then batch order shuffled) to cut padding."""

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0) -> None:
        self.lengths, self.batch_size, self.shuffle, self.seed, self.epoch = list(lengths), batch_size, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before every epoch: the order depends only on (seed, epoch)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        chunk = self.batch_size * 50
        batches = []
        for start in range(0, len(order), chunk):
            piece = sorted(order[start:start + chunk], key=lambda i: self.lengths[i])
            batches += [piece[i:i + self.batch_size] for i in range(0, len(piece), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


class TextClassificationDataModule(DataModule):
    """Subclasses provide the examples of each split (`load_splits`); this class does the rest."""

    kind = "text_classification"

    def __init__(self, batch_size: int = 64, tokenizer: dict[str, Any] | None = None, max_length: int | None = 256,
                 add_special_tokens: bool = False, bucketing: bool = False, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, split_seed: int = 0, cache_dir: str | None = None,
                 num_workers: int | None = 0, pin_memory: bool | None = None) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.tokenizer_settings = {"kind": "word", "vocab_size": 30000, "min_frequency": 1, "lowercase": True,
                                   "path": None, **(tokenizer or {})}
        self.max_length, self.add_special_tokens, self.bucketing = max_length, add_special_tokens, bucketing
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.cache_dir = cache_dir or str(Path.home() / ".cache" / "dlkit" / "cache")
        self.tokenizer = None
        self.labels: list[str] = []

    # -- what subclasses provide ------------------------------------------------------------------------
    def load_splits(self) -> dict[str, list[Example]]:
        """Examples of 'train' and, when the source has them, 'val' and 'test'."""
        raise NotImplementedError

    def source_id(self) -> Any:
        """What identifies the data for the tokenizer cache (files with sizes and times, or settings)."""
        raise NotImplementedError

    # -- setup -----------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        cache = Path(self.cache_dir).expanduser() / "encoded" / f"{self._encoded_key()}.npz"
        if cache.is_file():  # warm: labels, tokenizer and ids of every split from the cache, no text read
            self.labels, encoded = _load_encoded(cache)
            self.tokenizer = self._tokenizer(None)
        else:
            splits = complete_splits(self.load_splits(), self.val_fraction, self.test_fraction, self.split_seed,
                                     type(self).__name__)
            self.labels = sorted({ex.label for ex in splits["train"]})
            for name in ("val", "test"):
                unseen = sorted({ex.label for ex in splits[name]} - set(self.labels))
                if unseen:
                    raise DlkitError(f"label {unseen[0]!r} appears in the {name} split but never in train: "
                                     "every label needs training examples.")
            self.tokenizer = self._tokenizer([ex.text for ex in splits["train"]] +
                                             [ex.pair for ex in splits["train"] if ex.pair])
            encoded = {name: self._encode(splits[name]) for name in ("train", "val", "test")}
            _save_encoded(cache, self.labels, encoded)
        self._use_tokenizer(self.tokenizer)
        self.train_set, self.val_set, self.test_set = encoded["train"], encoded["val"], encoded["test"]
        self._spec = DataSpec(kind=self.kind, num_classes=len(self.labels), class_names=self.labels,
                              vocab_size=self.tokenizer.get_vocab_size(), pad_id=self.pad_id,
                              mask_id=special_ids(self.tokenizer)["mask"], max_length=self.max_length,
                              tokenizer_path=self.tokenizer_file)

    def _encoded_key(self) -> str:
        return fingerprint("encoded", self.source_id(), self.tokenizer_settings, self.max_length,
                           self.add_special_tokens, self.val_fraction, self.test_fraction, self.split_seed)

    def _tokenizer(self, texts: list[str] | None):
        """The configured tokenizer: loaded from tokenizer.path, or trained on texts (cached; None: from cache)."""
        settings = dict(self.tokenizer_settings)
        path = settings.pop("path")
        if path:
            self.tokenizer_file = str(Path(path))
            tokenizer = load_tokenizer(path, lowercase=settings["lowercase"])
            if Path(path).suffix != ".json":  # keep a tokenizer.json beside the cache for models and predict
                key = fingerprint("loaded", str(Path(path).resolve()), settings["lowercase"])
                self.tokenizer_file = str(Path(self.cache_dir) / "tokenizers" / f"{key}.json")
                Path(self.tokenizer_file).parent.mkdir(parents=True, exist_ok=True)
                tokenizer.save(self.tokenizer_file)
            return tokenizer
        key = fingerprint(self.source_id(), settings)
        self.tokenizer_file = str(Path(self.cache_dir).expanduser() / "tokenizers" / f"{key}.json")
        return cached_tokenizer(self.cache_dir, key, texts, length=len(texts or []), **settings)

    def _encode(self, examples: list[Example]) -> EncodedTexts:
        pairs = [ex.pair or "" for ex in examples] if any(ex.pair for ex in examples) else None
        # sentence pairs are always framed [CLS] a [SEP] b [SEP], so a model can tell the two texts apart
        ids = encode(self.tokenizer, [ex.text for ex in examples], pairs=pairs, max_length=self.max_length,
                     add_special=self.add_special_tokens or pairs is not None)
        sep = special_ids(self.tokenizer)["sep"]
        type_ids = [_segments(seq, sep) for seq in ids] if pairs is not None else None
        index = {label: i for i, label in enumerate(self.labels)}
        return EncodedTexts(ids, [index[ex.label] for ex in examples], type_ids)

    def train_dataloader(self) -> DataLoader:
        if not self.bucketing:
            return super().train_dataloader()
        sampler = BucketSampler([len(s) for s in self.train_set.ids], self.batch_size, seed=self.shuffle_seed)
        return ResumableLoader(self.train_set, batch_sampler=sampler, collate_fn=self.collate_fn, **self.loader_kwargs)

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
        """Take the tokenizer, its [PAD] id (0 when it has none) and the collator padding with it."""
        self.tokenizer = tokenizer
        pad = special_ids(tokenizer)["pad"]
        self.pad_id = pad if pad is not None else 0
        self.collate_fn = TextCollator(self.pad_id)

    def encode_inputs(self, raw: list[str]) -> dict[str, torch.Tensor]:
        """A batch of model inputs for raw texts (a tab separates the two texts of a pair)."""
        texts = [line.split("\t", 1) for line in raw]
        examples = [Example(t[0], self.labels[0], t[1] if len(t) > 1 else None) for t in texts]
        inputs, _ = self.collate_fn([self._encode(examples)[i] for i in range(len(examples))])
        return inputs


def _save_encoded(path: Path, labels: list[str], splits: dict[str, EncodedTexts]) -> None:
    """Store encoded splits as flat arrays (written atomically); loading them back takes milliseconds."""
    arrays: dict[str, np.ndarray] = {"labels_vocab": np.array(labels, dtype=object)}
    for name, data in splits.items():
        arrays[f"{name}_lengths"] = np.array([len(s) for s in data.ids], dtype=np.int64)
        arrays[f"{name}_ids"] = np.fromiter((t for s in data.ids for t in s), dtype=np.int32)
        arrays[f"{name}_labels"] = np.array(data.labels, dtype=np.int64)
        if data.type_ids:
            arrays[f"{name}_types"] = np.fromiter((t for s in data.type_ids for t in s), dtype=np.int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_encoded(path: Path) -> tuple[list[str], dict[str, EncodedTexts]]:
    with np.load(path, allow_pickle=True) as data:
        labels = [str(x) for x in data["labels_vocab"]]
        splits = {}
        for name in ("train", "val", "test"):
            bounds = np.cumsum(data[f"{name}_lengths"])[:-1]
            ids = [a.tolist() for a in np.split(data[f"{name}_ids"], bounds)]
            types = ([a.tolist() for a in np.split(data[f"{name}_types"], bounds)]
                     if f"{name}_types" in data else None)
            splits[name] = EncodedTexts(ids, data[f"{name}_labels"].tolist(), types)
    return labels, splits


def _segments(ids: list[int], sep: int | None) -> list[int]:
    """Segment ids: 0 up to and including the first [SEP], 1 after it."""
    if sep is None or sep not in ids:
        return [0] * len(ids)
    first = ids.index(sep)
    return [0] * (first + 1) + [1] * (len(ids) - first - 1)


# -- sources ---------------------------------------------------------------------------------------------
def read_table(path: Path, text_column: str | int, label_column: str | int, pair_column: str | int | None,
               file_format: str | None = None, header: bool = True, encoding: str = "utf-8") -> list[Example]:
    """Examples from a CSV, TSV or JSON Lines file; a bad row or missing column stops with its location.

    CSV follows RFC 4180 quoting; TSV has no quoting at all (a quote is an ordinary character), so a stray `"`
    cannot swallow the following rows. Without a header row (header=False) columns are named 0, 1, ...
    """
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist: check data.train_file / val_file / test_file.")
    fmt = file_format or {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"{path}: unknown format; name it .csv, .tsv or .jsonl, or set data.format=csv|tsv|jsonl.")
    try:
        with open(path, encoding=encoding, newline="") as handle:
            rows = _json_rows(path, handle) if fmt == "jsonl" else _delimited_rows(path, handle, fmt, header)
    except LookupError as err:
        raise UsageError(f"data.encoding={encoding!r} is not a known text encoding: use utf-8, latin-1, ...") from err
    except UnicodeDecodeError as err:
        hint = "latin-1" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else "utf-8"
        raise UsageError(f"{path} is not {encoding} text (byte {err.object[err.start:err.start + 1]!r} cannot be "
                         f"decoded): set data.encoding={hint} (or the file's encoding).") from err
    text_column, label_column = str(text_column), str(label_column)
    pair_column = str(pair_column) if pair_column is not None else None
    columns = set(rows[0][1]) if rows else set()
    for needed in (text_column, label_column, pair_column):
        if needed is not None and rows and needed not in columns:
            from dlkit.errors import did_you_mean

            no_header = " If the file has no header row: data.header=false and columns by number (0, 1, ...)." \
                if header and fmt != "jsonl" else ""
            raise UsageError(f"{path} has no column {needed!r}.{did_you_mean(needed, columns)} "
                             f"Columns: {', '.join(sorted(columns))}.{no_header}")
    examples = []
    for number, row in rows:
        text, label = row.get(text_column), row.get(label_column)
        if text is None or label is None or (pair_column and row.get(pair_column) is None):
            raise DlkitError(f"{path}: row {number} is missing its {text_column!r} or {label_column!r} value")
        examples.append(Example(str(text), str(label), str(row[pair_column]) if pair_column else None))
    return examples


def _json_rows(path: Path, handle) -> list[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSON Lines file."""
    rows = []
    for number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DlkitError(f"{path}:{number}: not valid JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise DlkitError(f"{path}:{number}: expected a JSON object like {{\"text\": ..., \"label\": ...}}, "
                             f"got a JSON {type(row).__name__}")
        rows.append((number, row))
    return rows


def _delimited_rows(path: Path, handle, fmt: str, header: bool) -> list[tuple[int, dict]]:
    """(row number, {column: value}) of a CSV or TSV file; a row wider than the header is refused."""
    if fmt == "csv":
        reader = csv.reader(handle, delimiter=",")
        fix = "quote text containing commas"
    else:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        fix = "a text cannot contain a TAB in a TSV file"
    records = [(number, fields) for number, fields in enumerate(reader, 1) if fields]
    if not records:
        return []
    if header:
        names, what = records[0][1], "the header has"
        records = records[1:]
    else:
        names, what = [str(i) for i in range(len(records[0][1]))], "the first row has"
    rows = []
    for number, fields in records:
        if len(fields) > len(names):
            raise DlkitError(f"{path} row {number} has {len(fields)} fields, {what} {len(names)} ({fix})")
        rows.append((number, dict(zip(names, fields))))
    return rows


class TextFilesDataModule(TextClassificationDataModule):
    """Texts and labels from CSV, TSV or JSON Lines files: a train file, optional validation and test files."""

    def __init__(self, train_file: str, val_file: str | None = None, test_file: str | None = None,
                 text_column: str | int = "text", label_column: str | int = "label",
                 text_pair_column: str | int | None = None, format: str | None = None,  # noqa: A002 - the config key
                 header: bool = True, encoding: str = "utf-8", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        self.columns = (text_column, label_column, text_pair_column)
        self.file_format, self.header, self.encoding = format, header, encoding

    def load_splits(self) -> dict[str, list[Example]]:
        if not self.files["train"]:
            raise UsageError("data=text_files needs data.train_file=PATH (CSV, TSV or JSON Lines).")
        splits = {}
        for name, path in self.files.items():
            if not path:
                continue
            splits[name] = read_table(Path(path).expanduser(), *self.columns, self.file_format, self.header,
                                      self.encoding)
            if name != "train" and not splits[name]:
                raise DlkitError(f"data.{name}_file {path} has no rows: fill it, or drop data.{name}_file to split "
                                 f"the {name} set off the training data.")
        return splits

    def source_id(self) -> Any:
        # header/encoding only when not the defaults, so existing caches stay valid
        reading = {k: v for k, v in (("header", self.header), ("encoding", self.encoding))
                   if v != {"header": True, "encoding": "utf-8"}[k]}
        return [str(Path(p).expanduser()) for p in self.files.values() if p] + [self.columns] + (
            [reading] if reading else [])


class HFTextDataModule(TextClassificationDataModule):
    """A Hugging Face dataset by name (downloaded on first use into paths.data_dir) or a local dataset folder."""

    def __init__(self, name: str, subset: str | None = None, text_column: str = "text", label_column: str = "label",
                 text_pair_column: str | None = None, train_split: str = "train", val_split: str | None = None,
                 test_split: str | None = "test", data_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not name or not isinstance(name, str):
            raise UsageError("data=hf_text needs data.name: a Hugging Face dataset or a local folder, "
                             "e.g. data.name=imdb or data.name=./my_dataset.")
        self.name, self.subset, self.data_dir = name, subset, data_dir
        self.columns = (text_column, label_column, text_pair_column)
        self.split_names = {"train": train_split, "val": val_split, "test": test_split}

    def prepare_data(self) -> None:
        self._load()

    def _load(self):
        try:
            import datasets
        except ImportError as err:
            raise UsageError(f"Hugging Face dataset {self.name!r} needs the `datasets` package: "
                             "pip install 'dlkit[hf]'") from err
        try:
            return datasets.load_dataset(self.name, self.subset, cache_dir=self.data_dir)
        except (ConnectionError, OSError, ValueError) as err:
            if Path(self.name).exists():
                raise
            raise DlkitError(f"could not load Hugging Face dataset {self.name!r} ({type(err).__name__}); offline, "
                             "point data.name at a local folder of train/test files, or use data=text_files.") from err

    def load_splits(self) -> dict[str, list[Example]]:
        dataset = self._load()
        text, label, pair = self.columns
        splits = {}
        for name, split in self.split_names.items():
            if split is None:
                continue
            if split not in dataset:
                raise UsageError(f"dataset {self.name!r} has no split {split!r}; splits: {', '.join(dataset)}.")
            part = dataset[split]
            missing = [c for c in (text, label, pair) if c and c not in part.column_names]
            if missing:
                raise UsageError(f"dataset {self.name!r} has no column {missing[0]!r}; columns: "
                                 f"{', '.join(part.column_names)}.")
            names = part.features[label].names if hasattr(part.features[label], "names") else None
            labels = [names[v] if names else str(v) for v in part[label]]
            pairs = part[pair] if pair else [None] * len(labels)
            splits[name] = [Example(str(t), lab, p) for t, lab, p in zip(part[text], labels, pairs)]
        return splits

    def source_id(self) -> Any:
        return [self.name, self.subset, self.columns, self.split_names]


# -- the offline default --------------------------------------------------------------------------------
SUBJECTS = ["the movie", "the film", "the plot", "the acting", "the music", "the story", "the ending", "the cast",
            "the script", "the director", "the camera work", "the dialogue"]
POSITIVE = ["good", "great", "wonderful", "excellent", "brilliant", "moving", "superb", "delightful", "fun"]
NEGATIVE = ["bad", "awful", "boring", "terrible", "dull", "weak", "poor", "clumsy", "tedious"]
VERBS = ["was", "is", "seemed", "felt"]
INTENSIFIERS = ["", "", "very", "really", "truly", "quite"]


def synthetic_review(rng: random.Random) -> tuple[str, str]:
    """A made-up review and its label: a clause is positive unless its adjective or a `not` makes it negative,
    and after `but` the second clause decides. Bag-of-words cannot solve it: order and scope matter."""

    def clause() -> tuple[str, bool]:
        positive = rng.random() < 0.5
        negated = rng.random() < 0.5
        words = [rng.choice(SUBJECTS), rng.choice(VERBS), "not" if negated else "", rng.choice(INTENSIFIERS),
                 rng.choice(POSITIVE if positive else NEGATIVE)]
        return " ".join(w for w in words if w), positive != negated

    first, sentiment = clause()
    if rng.random() < 0.5:
        second, sentiment = clause()
        first = f"{first} but {second}"
    return first, "positive" if sentiment else "negative"


class SyntheticSentimentDataModule(TextClassificationDataModule):
    """SYNTHETIC reviews generated in code (negation and `but` clauses), so text models train offline."""

    def __init__(self, num_examples: int = 6000, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_examples, self.seed = num_examples, seed

    def load_splits(self) -> dict[str, list[Example]]:
        rng = random.Random(self.seed)
        return {"train": [Example(*synthetic_review(rng)) for _ in range(self.num_examples)]}

    def source_id(self) -> Any:
        return ["synthetic_sentiment", self.num_examples, self.seed]
