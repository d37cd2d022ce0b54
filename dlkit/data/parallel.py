"""Sequence-to-sequence data: parallel text files, Hugging Face translation sets, and a synthetic default.

Batches: {"src_ids", "src_mask", "tgt_ids", "tgt_mask", "index"} padded to the longest sequence; targets are framed
[BOS] ... [EOS]. Preparing streams the pairs: it counts them (and cuts validation and test sets out of the training
pairs when the source has none), trains the tokenizer on the training pairs (one shared vocabulary, or one for each
side), and stores every pair's ids and its reference text as written (for BLEU) in a token store.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dlkit.data.base import BatchDict, DataModule, split_assignment
from dlkit.data.progress import preparing
from dlkit.data.ragged import Ragged, Strings, clip_rows, frame_rows, pad_rows
from dlkit.data.spec import DataSpec
from dlkit.data.store import Store, StoreWriter, prepared
from dlkit.data.tables import read_pairs
from dlkit.data.tokenizers import encode_rows, fingerprint, readable, save_for_clients, special_ids, train_tokenizer
from dlkit.errors import DlkitError, UsageError

SPLITS = ("train", "val", "test")
ENCODE_ROWS = 16384
# what a source yields: chunks of {"src": [...], "tgt": [...]}
Source = Callable[[], Iterator[dict[str, list[str]]]]


class PairRows(Dataset):
    """Source and framed target ids of one split, and the reference texts as written (`raw_targets`, for BLEU)."""

    def __init__(self, src: Ragged, tgt: Ragged, pad_id: int, raw_targets: Strings | None = None) -> None:
        self.src, self.tgt, self.pad_id, self.raw_targets = src, tgt, pad_id, raw_targets

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, index: int) -> tuple[list[int], list[int], int]:
        return self.src.row(index).tolist(), self.tgt.row(index).tolist(), index

    def __getitems__(self, indices: list[int]) -> BatchDict:
        rows = np.asarray(indices, dtype=np.int64)
        batch = BatchDict(index=torch.from_numpy(rows))
        for name, column in (("src", self.src), ("tgt", self.tgt)):
            ids, lengths = column.padded(rows, self.pad_id)
            batch[f"{name}_ids"] = torch.from_numpy(ids)
            batch[f"{name}_mask"] = torch.from_numpy((np.arange(ids.shape[1]) < lengths[:, None]).astype(np.int64))
        return batch


class Seq2SeqDataModule(DataModule):
    """Subclasses give the (source, target) pairs of each split; this class tokenizes, splits, stores and
    batches them."""

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
        self.store: Store | None = None

    def sources(self) -> dict[str, Source]:
        raise NotImplementedError

    def source_id(self) -> Any:
        raise NotImplementedError

    def empty(self, split: str) -> str:
        """The message for a split without pairs."""
        if split == "train":
            return f"{type(self).__name__}: the training split is empty"
        return f"{type(self).__name__}: the {split} split is empty (too few examples?)"

    def store_key(self) -> str:
        return fingerprint("seq2seq", self.source_id(), self.settings, self.shared_vocab, *self._normalizer_version(),
                           self.max_length, self.fractions, self.split_seed)

    def _normalizer_version(self) -> list[str]:
        """Cased tokenizers stopped stripping accents: a new key for them (uncased ones are unchanged)."""
        strip = self.settings.get("strip_accents")
        cased_keeps = not self.settings.get("lowercase", True) and not strip
        return ["cased-keeps-accents"] if cased_keeps else []

    def prepare(self) -> tuple[Store, bool]:
        """The token store of these pairs (built now if needed); (store, whether it was built now)."""
        return prepared(self.cache_dir, self.store_key(), self._build, describe=f"data of {type(self).__name__}")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from tokenizers import Tokenizer

        self.store, _ = self.prepare()
        folder = self.store.folder
        target = Tokenizer.from_file(str(folder / "tokenizer.json"))
        source = Tokenizer.from_file(str(folder / "src_tokenizer.json")) if not self.shared_vocab else target
        self._use_tokenizers(source, target)
        self.train_set, self.val_set, self.test_set = (
            PairRows(self.store.ragged(split, "src"), self.store.ragged(split, "tgt"), self.pad_id,
                     self.store.strings(split, "raw")) for split in SPLITS)
        # longest framed target ([BOS] ... [EOS]) of the training split: the default decoding limit
        lengths = self.train_set.tgt.lengths()
        longest = int(lengths.max()) if len(lengths) else self.max_length + 2
        self._spec = DataSpec(
            kind=self.kind, src_vocab_size=self.src_tokenizer.get_vocab_size(),
            tgt_vocab_size=self.tgt_tokenizer.get_vocab_size(), pad_id=self.pad_id, bos_id=self.bos_id,
            eos_id=self.eos_id, max_length=self.max_length + 2, tokenizer_path=str(folder / "tokenizer.json"),
            extra={"share_embeddings": self.shared_vocab, "longest_target": longest,
                   "src_tokenizer_path": str(folder / ("tokenizer.json" if self.shared_vocab
                                                       else "src_tokenizer.json"))},
        )

    # -- preparing the store ---------------------------------------------------------------------------
    def _build(self, writer: StoreWriter) -> dict[str, Any]:
        sources = self.sources()
        with preparing() as show:
            counts = {}
            for name, source in sources.items():
                progress = show(f"Reading {name} pairs")
                for chunk in source():
                    progress.advance(len(chunk["src"]))
                counts[name] = progress.rows
            missing = [name for name in ("val", "test") if name not in counts]
            cut = [self.fractions[0] if name == "val" else self.fractions[1] for name in missing]
            parts = split_assignment(counts["train"], (1.0 - sum(cut), *cut), self.split_seed) if missing else None
            self._check_sizes(counts, parts, missing)
            train = int((parts == 0).sum()) if parts is not None else counts["train"]
            if self.shared_vocab:
                source = target = self._train(sources["train"], parts, ("src", "tgt"), show, train)
            else:
                source = self._train(sources["train"], parts, ("src",), show, train)
                target = self._train(sources["train"], parts, ("tgt",), show, train)
                source.save(str(writer.folder / "src_tokenizer.json"))
            target.save(str(writer.folder / "tokenizer.json"))
            ids = special_ids(target)
            for name, source_rows in sources.items():
                route = ["train", *missing] if name == "train" and parts is not None else [name]
                self._encode(source_rows, writer, (source, target, ids["bos"], ids["eos"]), route,
                             parts if len(route) > 1 else None, show(f"Encoding {name} pairs", counts[name]))
        for name in SPLITS:
            writer.empty_split(name)
        return {"source": self.source_id(), "pairs": counts}

    def _check_sizes(self, counts: dict[str, int], parts: np.ndarray | None, missing: list[str]) -> None:
        sizes = dict(counts)
        if parts is not None:
            sizes.update({"train": int((parts == 0).sum())})
            sizes.update({name: int((parts == k).sum()) for k, name in enumerate(missing, 1)})
        for name in SPLITS:
            if not sizes.get(name):
                raise DlkitError(self.empty(name))

    def _train(self, train: Source, parts: np.ndarray | None, sides: tuple[str, ...], show: Any, rows: int):
        progress = show("Training the tokenizer" + ("" if len(sides) == 2 else f" ({sides[0]})"), rows)

        def texts() -> Iterator[list[str]]:
            start = 0
            for chunk in train():
                keep = parts[start:start + len(chunk["src"])] == 0 if parts is not None else None
                start += len(chunk["src"])
                for side in sides:
                    yield chunk[side] if keep is None else [t for t, k in zip(chunk[side], keep.tolist()) if k]
                progress.advance(len(chunk["src"]) if keep is None else int(keep.sum()))

        return train_tokenizer(texts(), length=rows, **self.settings)

    def _encode(self, source: Source, writer: StoreWriter, coding: tuple[Any, Any, int, int], route: list[str],
                parts: np.ndarray | None, progress: Any) -> None:
        src_tokenizer, tgt_tokenizer, bos, eos = coding
        start = 0
        for chunk in source():
            for begin in range(0, len(chunk["src"]), ENCODE_ROWS):
                sources, targets = chunk["src"][begin:begin + ENCODE_ROWS], chunk["tgt"][begin:begin + ENCODE_ROWS]
                src = Ragged.of(*clip_rows(*encode_rows(src_tokenizer, sources)[:2], self.max_length))
                tgt_ids, tgt_lengths = clip_rows(*encode_rows(tgt_tokenizer, targets)[:2], self.max_length)
                tgt = Ragged.of(*frame_rows(tgt_ids, tgt_lengths, bos, eos))
                span = slice(start, start + len(sources))
                where = parts[span] if parts is not None else np.zeros(len(sources), dtype=np.int8)
                for number, split in enumerate(route):
                    chosen = np.flatnonzero(where == number)
                    if len(chosen):
                        writer.ragged(split, "src", *src.gather(chosen))
                        writer.ragged(split, "tgt", *tgt.gather(chosen))
                        writer.strings(split, "raw", [targets[i] for i in chosen.tolist()])
                start += len(sources)
                progress.advance(len(sources), written=int(src.offsets[-1] + tgt.offsets[-1]) * 4)

    def references(self, stage: str) -> Sequence[str] | None:
        """The target sentences of a split as written (BLEU is scored against them, not against decoded ids)."""
        rows: PairRows = self.split_set(stage)
        return rows.raw_targets

    def examples(self, stage: str, indices: list[int]) -> list[str]:
        """The rows' source sentences as the model reads them (the stored ids decoded, cut to max_length)."""
        rows: PairRows = self.split_set(stage)
        return [readable(self.src_tokenizer, rows.src.row(i).tolist()) for i in indices]

    # -- prediction ------------------------------------------------------------------------------------
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
        """Take the tokenizers and the target's [PAD], [BOS] and [EOS] ids."""
        self.src_tokenizer, self.tgt_tokenizer = source, target
        ids = special_ids(target)
        self.pad_id, self.bos_id, self.eos_id = ids["pad"], ids["bos"], ids["eos"]

    def encode_inputs(self, raw: list[str]) -> dict[str, torch.Tensor]:
        """Source sentences as a batch (targets empty: the model decodes them)."""
        ids, lengths = clip_rows(*encode_rows(self.src_tokenizer, raw)[:2], self.max_length)
        src = pad_rows(ids, lengths, self.pad_id)
        mask = (np.arange(src.shape[1]) < lengths[:, None]).astype(np.int64)
        return {"src_ids": torch.from_numpy(src), "src_mask": torch.from_numpy(mask)}

    def overlong(self, raw: list[str]) -> list[int | None]:
        limit, lengths = self.max_length, encode_rows(self.src_tokenizer, raw)[1]
        return [limit if limit is not None and int(n) > limit else None for n in lengths]

    def client_preprocessing(self, out_dir: Path) -> dict[str, Any]:
        """The source tokenizer (truncating to max_length and padding) and the target one that decodes; one file
        when the vocabulary is shared."""
        source = "tokenizer.json" if self.src_tokenizer is self.tgt_tokenizer else "src_tokenizer.json"
        specials = save_for_clients(self.src_tokenizer, self.pad_id, out_dir / source, self.max_length)
        if source != "tokenizer.json":
            save_for_clients(self.tgt_tokenizer, self.pad_id, out_dir / "tokenizer.json")
        return {"input": "text", "source_tokenizer": source, "target_tokenizer": "tokenizer.json",
                "max_length": self.max_length, "special_tokens": specials,
                "steps": (f"encodings = Tokenizer.from_file('{source}').encode_batch(sources); src_ids = [e.ids], "
                          "src_mask = [e.attention_mask] for e in encodings, as int64 [batch, sequence] (truncated "
                          "to max_length and padded to the longest as dlkit does)")}

    def decode(self, ids: list[int]) -> str:
        """Target ids (BOS/EOS/padding dropped) back to text."""
        kept = [i for i in ids if i not in (self.pad_id, self.bos_id)]
        if self.eos_id in kept:
            kept = kept[: kept.index(self.eos_id)]
        return self.tgt_tokenizer.decode(kept)


# -- sources -----------------------------------------------------------------------------------------------
class ParallelTextDataModule(Seq2SeqDataModule):
    """Your pairs: TSV files (source TAB target) or two aligned files per split; val/test optional."""

    def __init__(self, train_file: str, train_target_file: str | None = None, val_file: str | None = None,
                 val_target_file: str | None = None, test_file: str | None = None,
                 test_target_file: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.files = {"train": (train_file, train_target_file), "val": (val_file, val_target_file),
                      "test": (test_file, test_target_file)}

    def sources(self) -> dict[str, Source]:
        if not self.files["train"][0]:
            raise UsageError("data=parallel_text needs data.train_file=PATH (TSV, or with data.train_target_file).")
        sources = {}
        for name, files in self.files.items():
            if files[0]:
                read_pairs(*files)  # the files are there: checked now, not in the middle of preparing
                sources[name] = lambda files=files: read_pairs(*files)
        return sources

    def empty(self, split: str) -> str:
        path = self.files.get(split, (None,))[0]
        if split == "train" or not path:
            return super().empty(split)
        return (f"data.{split}_file {path} has no pairs: fill it, or drop data.{split}_file to split the {split} set "
                "off the training data.")

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

    def sources(self) -> dict[str, Source]:
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
        sources = {}
        for name, split in self.splits.items():
            if split is None or split not in dataset:
                continue
            part = dataset[split]
            if source not in part.column_names or target not in part.column_names:
                raise UsageError(f"dataset {self.name!r} has no columns {source!r}/{target!r}; columns: "
                                 f"{', '.join(part.column_names)}.")

            def rows(part: Any = part) -> Iterator[dict[str, list[str]]]:
                for batch in part.iter(batch_size=ENCODE_ROWS):
                    yield {"src": [str(t) for t in batch[source]], "tgt": [str(t) for t in batch[target]]}

            sources[name] = rows
        return sources

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

    def sources(self) -> dict[str, Source]:
        def rows() -> Iterator[dict[str, list[str]]]:
            rng = random.Random(self.seed)
            chunk: dict[str, list[str]] = {"src": [], "tgt": []}
            for _ in range(self.num_examples):
                words = rng.choices(WORDS, k=rng.randint(self.min_length, self.max_words))
                chunk["src"].append(" ".join(words))
                chunk["tgt"].append(" ".join(reversed(words)))
            yield chunk

        return {"train": rows}

    def source_id(self) -> Any:
        return ["synthetic_reverse", self.num_examples, self.min_length, self.max_words, self.seed]
