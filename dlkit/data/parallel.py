"""Sequence-to-sequence data: parallel text files, Hugging Face translation sets, and a synthetic default.

Batches: {"src_ids", "src_mask", "tgt_ids", "tgt_mask"} padded to the longest sequence; targets are framed
[BOS] ... [EOS]. Tokenizers are trained on the training split (cached) with a shared or a separate vocabulary.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from dlkit.data.base import DataModule, complete_splits
from dlkit.data.spec import DataSpec
from dlkit.data.text import pad_batch
from dlkit.data.tokenizers import cached_tokenizer, encode, fingerprint, special_ids
from dlkit.errors import DlkitError, UsageError

Pair = tuple[str, str]


class EncodedPairs(Dataset):
    def __init__(self, src: list[list[int]], tgt: list[list[int]], raw_targets: list[str] | None = None) -> None:
        self.src, self.tgt = src, tgt
        self.raw_targets = raw_targets  # the reference texts as written, for BLEU

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, index: int) -> tuple[list[int], list[int], int]:
        return self.src[index], self.tgt[index], index


class PairCollator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[tuple]) -> dict[str, torch.Tensor]:
        src_ids, src_mask = pad_batch([i[0] for i in items], self.pad_id)
        tgt_ids, tgt_mask = pad_batch([i[1] for i in items], self.pad_id)
        batch = {"src_ids": src_ids, "src_mask": src_mask, "tgt_ids": tgt_ids, "tgt_mask": tgt_mask}
        if all(len(i) > 2 for i in items):  # row numbers: the task finds the raw reference texts by them
            batch["index"] = torch.tensor([i[2] for i in items], dtype=torch.long)
        return batch


class Seq2SeqDataModule(DataModule):
    """Subclasses give the (source, target) pairs of each split; this class tokenizes, splits and batches."""

    kind = "seq2seq"

    def __init__(self, batch_size: int = 64, tokenizer: dict[str, Any] | None = None, shared_vocab: bool = True,
                 max_length: int = 128, val_fraction: float = 0.05, test_fraction: float = 0.05,
                 split_seed: int = 0, cache_dir: str | None = None, num_workers: int | None = 0,
                 pin_memory: bool | None = None) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.settings = {"kind": "bpe", "vocab_size": 8000, "min_frequency": 1, "lowercase": False,
                         **(tokenizer or {})}
        self.shared_vocab, self.max_length = shared_vocab, max_length
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed
        self.cache_dir = cache_dir or str(Path.home() / ".cache" / "dlkit" / "cache")

    def load_pairs(self) -> dict[str, list[Pair]]:
        raise NotImplementedError

    def source_id(self) -> Any:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        splits = complete_splits(self.load_pairs(), *self.fractions, self.split_seed, type(self).__name__)
        sources = [s for s, _ in splits["train"]]
        targets = [t for _, t in splits["train"]]
        key = fingerprint(self.source_id(), self.settings, self.shared_vocab, *self._normalizer_version())
        if self.shared_vocab:
            self.src_tokenizer = self.tgt_tokenizer = cached_tokenizer(self.cache_dir, key, sources + targets,
                                                                       **self.settings)
        else:
            self.src_tokenizer = cached_tokenizer(self.cache_dir, key + "-src", sources, **self.settings)
            self.tgt_tokenizer = cached_tokenizer(self.cache_dir, key + "-tgt", targets, **self.settings)
        self._use_tokenizers(self.src_tokenizer, self.tgt_tokenizer)
        self.train_set, self.val_set, self.test_set = (self._encode(splits[n]) for n in ("train", "val", "test"))
        folder = Path(self.cache_dir).expanduser() / "tokenizers"
        # longest framed target ([BOS] ... [EOS]) of the training split: the default decoding limit
        longest = max((len(t) for t in self.train_set.tgt), default=self.max_length + 2)
        self._spec = DataSpec(
            kind=self.kind, src_vocab_size=self.src_tokenizer.get_vocab_size(),
            tgt_vocab_size=self.tgt_tokenizer.get_vocab_size(), pad_id=self.pad_id, bos_id=self.bos_id,
            eos_id=self.eos_id, max_length=self.max_length + 2,
            tokenizer_path=str(folder / f"{key}{'' if self.shared_vocab else '-tgt'}.json"),
            extra={"share_embeddings": self.shared_vocab, "longest_target": longest,
                   "src_tokenizer_path": str(folder / f"{key}{'' if self.shared_vocab else '-src'}.json")},
        )

    def _normalizer_version(self) -> list[str]:
        """Cased tokenizers stopped stripping accents: a new cache key for them (uncased ones are unchanged)."""
        strip = self.settings.get("strip_accents")
        cased_keeps = not self.settings.get("lowercase", True) and not strip
        return ["cased-keeps-accents"] if cased_keeps else []

    def _encode(self, pairs: list[Pair]) -> EncodedPairs:
        src = encode(self.src_tokenizer, [s for s, _ in pairs], max_length=self.max_length)
        tgt = encode(self.tgt_tokenizer, [t for _, t in pairs], max_length=self.max_length)
        return EncodedPairs(src, [[self.bos_id, *t, self.eos_id] for t in tgt], [t for _, t in pairs])

    def inference_state(self) -> dict[str, Any] | None:
        """The target tokenizer as JSON text (and the source one when the vocabularies are separate)."""
        if getattr(self, "tgt_tokenizer", None) is None:
            return None
        state = {"tokenizer": self.tgt_tokenizer.to_str()}
        if self.src_tokenizer is not self.tgt_tokenizer:
            state["src_tokenizer"] = self.src_tokenizer.to_str()
        return state

    def restore(self, state: dict[str, Any], spec: DataSpec) -> None:
        from tokenizers import Tokenizer

        target = Tokenizer.from_str(state["tokenizer"])
        source = Tokenizer.from_str(state["src_tokenizer"]) if "src_tokenizer" in state else target
        self._use_tokenizers(source, target)
        self._spec = spec

    def _use_tokenizers(self, source: Any, target: Any) -> None:
        """Take the tokenizers, the target's [PAD], [BOS] and [EOS] ids, and the collator padding with [PAD]."""
        self.src_tokenizer, self.tgt_tokenizer = source, target
        ids = special_ids(target)
        self.pad_id, self.bos_id, self.eos_id = ids["pad"], ids["bos"], ids["eos"]
        self.collate_fn = PairCollator(self.pad_id)

    def encode_inputs(self, raw: list[str]) -> dict[str, torch.Tensor]:
        """Source sentences as a batch (targets empty: the model decodes them)."""
        src = encode(self.src_tokenizer, raw, max_length=self.max_length)
        src_ids, src_mask = pad_batch(src, self.pad_id)
        return {"src_ids": src_ids, "src_mask": src_mask}

    def decode(self, ids: list[int]) -> str:
        """Target ids (BOS/EOS/padding dropped) back to text."""
        kept = [i for i in ids if i not in (self.pad_id, self.bos_id)]
        if self.eos_id in kept:
            kept = kept[: kept.index(self.eos_id)]
        return self.tgt_tokenizer.decode(kept)


# -- sources -----------------------------------------------------------------------------------------------
def read_pairs(path: str | Path, target_path: str | Path | None = None) -> list[Pair]:
    """Pairs from a TSV file (source TAB target per line) or from two line-aligned files."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist.")
    if target_path is not None:
        target_path = Path(target_path).expanduser()
        if not target_path.is_file():
            raise UsageError(f"data file {target_path} does not exist.")
        sources = path.read_text(encoding="utf-8").splitlines()
        targets = target_path.read_text(encoding="utf-8").splitlines()
        if len(sources) != len(targets):
            raise DlkitError(f"{path} has {len(sources)} lines but {target_path} has {len(targets)}: not aligned.")
        return list(zip(sources, targets))
    pairs = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(row) < 2:
                raise DlkitError(f"{path}:{number}: expected source TAB target")
            pairs.append((row[0], row[1]))
    return pairs


class ParallelTextDataModule(Seq2SeqDataModule):
    """Your pairs: TSV files (source TAB target) or two aligned files per split; val/test optional."""

    def __init__(self, train_file: str, train_target_file: str | None = None, val_file: str | None = None,
                 val_target_file: str | None = None, test_file: str | None = None,
                 test_target_file: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.files = {"train": (train_file, train_target_file), "val": (val_file, val_target_file),
                      "test": (test_file, test_target_file)}

    def load_pairs(self) -> dict[str, list[Pair]]:
        if not self.files["train"][0]:
            raise UsageError("data=parallel_text needs data.train_file=PATH (TSV, or with data.train_target_file).")
        pairs = {}
        for name, files in self.files.items():
            if files[0]:
                pairs[name] = read_pairs(*files)
                if name != "train" and not pairs[name]:
                    raise DlkitError(f"data.{name}_file {files[0]} has no pairs: fill it, or drop data.{name}_file "
                                     f"to split the {name} set off the training data.")
        return pairs

    def source_id(self) -> Any:
        return [[str(Path(f).expanduser()) for f in files if f] for files in self.files.values()]


class HFTranslationDataModule(Seq2SeqDataModule):
    """A Hugging Face translation dataset (e.g. Multi30k) by name or a local folder; downloads on first use."""

    def __init__(self, name: str, source_column: str, target_column: str, subset: str | None = None,
                 train_split: str = "train", val_split: str | None = "validation", test_split: str | None = "test",
                 data_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not name or not isinstance(name, str):
            raise UsageError("data=hf_translation needs data.name: a Hugging Face dataset or a local folder, e.g. "
                             "data.name=bentrevett/multi30k data.source_column=de data.target_column=en.")
        self.name, self.subset, self.data_dir = name, subset, data_dir
        self.columns = (source_column, target_column)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}

    def load_pairs(self) -> dict[str, list[Pair]]:
        try:
            import datasets
        except ImportError as err:
            raise UsageError("data=hf_translation needs `datasets`: pip install 'dlkit[hf]'") from err
        try:
            dataset = datasets.load_dataset(self.name, self.subset, cache_dir=self.data_dir)
        except (ConnectionError, OSError, ValueError) as err:
            raise DlkitError(f"could not load Hugging Face dataset {self.name!r} ({type(err).__name__}); offline, "
                             "point data.name at a local folder, or use data=parallel_text.") from err
        source, target = self.columns
        pairs = {}
        for name, split in self.splits.items():
            if split is None or split not in dataset:
                continue
            part = dataset[split]
            if source not in part.column_names or target not in part.column_names:
                raise UsageError(f"dataset {self.name!r} has no columns {source!r}/{target!r}; columns: "
                                 f"{', '.join(part.column_names)}.")
            pairs[name] = list(zip(part[source], part[target]))
        return pairs

    def source_id(self) -> Any:
        return [self.name, self.subset, self.columns, self.splits]


WORDS = [f"{letter}{digit}" for letter in "abcdefghjk" for digit in "123"]


class SyntheticReverseDataModule(Seq2SeqDataModule):
    """SYNTHETIC task made in code: output the input tokens in reverse order (lengths min..max)."""

    def __init__(self, num_examples: int = 12000, min_length: int = 3, max_words: int = 10, seed: int = 0,
                 **kwargs: Any) -> None:
        kwargs.setdefault("tokenizer", {"kind": "word"})
        super().__init__(**kwargs)
        self.num_examples, self.min_length, self.max_words, self.seed = num_examples, min_length, max_words, seed

    def load_pairs(self) -> dict[str, list[Pair]]:
        rng = random.Random(self.seed)
        pairs = []
        for _ in range(self.num_examples):
            words = rng.choices(WORDS, k=rng.randint(self.min_length, self.max_words))
            pairs.append((" ".join(words), " ".join(reversed(words))))
        return {"train": pairs}

    def source_id(self) -> Any:
        return ["synthetic_reverse", self.num_examples, self.min_length, self.max_words, self.seed]
