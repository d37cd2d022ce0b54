"""Masked-LM + next-sentence pre-training data (BERT) from a raw corpus of any size, or a synthetic corpus made in
code.

Corpus format: one sentence per line, a blank line between documents (a document written on one line is cut into
sentences). Preparing streams the file: it counts the documents, trains the tokenizer on the training documents'
sentences, and stores every sentence's token ids with its document (dlkit.data.store). Nothing lists the pairs:
an example is a sentence that has a successor in its document, and its partner is drawn when the batch is made,
from (seed, epoch, example): half the time the next sentence (NSP label 0), half the time a sentence of another
document (label 1), anew every epoch for training, fixed for validation and test. Masking is dynamic too: every
batch chooses 15% of its tokens anew, of which 80% become [MASK], 10% a random token and 10% stay unchanged.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dlkit.data.base import Batch, DataModule, EpochShuffle, split_assignment
from dlkit.data.progress import preparing
from dlkit.data.ragged import Ragged, pad_rows
from dlkit.data.spec import DataSpec
from dlkit.data.store import Store, StoreWriter, prepared
from dlkit.data.tokenizers import (
    CLIENT_ENCODING,
    cut_rows,
    encode_rows,
    fingerprint,
    frame,
    load_tokenizer,
    save_for_clients,
    special_ids,
    train_tokenizer,
    with_settings,
)
from dlkit.errors import UsageError

Document = list[str]
SPLITS = ("train", "val", "test")
# sentences the tokenizer encodes in one call
ENCODE_SENTENCES = 16384


class MaskingCollator:
    """Masks a batch: 15% of real, non-special tokens chosen; 80/10/10 [MASK] / random / kept."""

    def __init__(self, mask_id: int, vocab_size: int, special: set[int], probability: float = 0.15):
        self.mask_id, self.vocab_size = mask_id, vocab_size
        self.special, self.probability = torch.tensor(sorted(special)), probability

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        ids, attention, types, nsp = batch
        candidates = attention.bool() & ~torch.isin(ids, self.special)
        chosen = (torch.rand(ids.shape) < self.probability) & candidates
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        roll = torch.rand(ids.shape)
        masked = ids.clone()
        masked[chosen & (roll < 0.8)] = self.mask_id
        randomised = chosen & (roll >= 0.8) & (roll < 0.9)
        masked[randomised] = torch.randint(0, self.vocab_size, (int(randomised.sum()),))
        return {"input_ids": masked, "attention_mask": attention, "token_type_ids": types, "mlm_labels": labels,
                "nsp_labels": nsp}


def _uniform(seed: int, epoch: np.ndarray, item: np.ndarray, stream: int) -> np.ndarray:
    """Numbers in [0, 1) that depend only on (seed, epoch, item, stream): splitmix64 of the four, vectorised."""
    with np.errstate(over="ignore"):
        x = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + epoch.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
             + item.astype(np.uint64) * np.uint64(0x94D049BB133111EB) + np.uint64(stream))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class SentencePairs(Dataset):
    """Next-sentence examples of one split: the sentences with a successor in their document. An index given by
    EpochItems carries its epoch (epoch * len + example), which decides the partners of that epoch."""

    def __init__(self, sentences: Ragged, documents: np.ndarray, seed: int, max_length: int, cls: int, sep: int,
                 pad: int) -> None:
        self.sentences, self.seed, self.max_length = sentences, seed, max_length
        self.cls, self.sep, self.pad = cls, sep, pad
        documents = np.asarray(documents)
        self.document = documents
        self.examples = np.flatnonzero(documents[:-1] == documents[1:]) if len(documents) > 1 else np.zeros(0, int)
        starts = np.flatnonzero(np.r_[True, documents[1:] != documents[:-1]]) if len(documents) else np.zeros(0, int)
        self.starts, self.counts = starts, np.diff(np.r_[starts, len(documents)])

    def __len__(self) -> int:
        return len(self.examples)

    def pairs(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sentence A, sentence B, NSP label) of examples given with their epoch (epoch * len + example)."""
        indices = np.asarray(indices, dtype=np.int64)
        epoch, item = np.divmod(indices, max(1, len(self.examples)))
        first = self.examples[item]
        random_partner = _uniform(self.seed, epoch, item, 0) >= 0.5
        documents = len(self.starts)
        other = (self.document[first] + 1 + (_uniform(self.seed, epoch, item, 1) * (documents - 1)).astype(np.int64)) \
            % documents
        within = (_uniform(self.seed, epoch, item, 2) * self.counts[other]).astype(np.int64)
        second = np.where(random_partner, self.starts[other] + within, first + 1)
        return first, second, random_partner.astype(np.int64)

    def __getitems__(self, indices: list[int]) -> Batch:
        """(input_ids, attention_mask, token_type_ids [B, T], nsp_labels [B]): [CLS] A [SEP] B [SEP], the longer
        sentence shortened first until the pair fits max_length."""
        first, second, labels = self.pairs(np.asarray(indices))
        rows, types = [], []
        for a, b in zip(first.tolist(), second.tolist()):
            left, right = _fit(self.sentences.row(a), self.sentences.row(b), self.max_length - 3)
            rows.append(np.concatenate([[self.cls], left, [self.sep], right, [self.sep]]))
            types.append(len(left) + 2)
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        ids = pad_rows(np.concatenate(rows), lengths, self.pad)
        positions = np.arange(ids.shape[1])
        attention = (positions < lengths[:, None]).astype(np.int64)
        segments = ((positions >= np.array(types)[:, None]) & (attention == 1)).astype(np.int64)
        return Batch((torch.from_numpy(ids), torch.from_numpy(attention), torch.from_numpy(segments),
                      torch.from_numpy(labels)))


def _fit(a: np.ndarray, b: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop tokens from the end of the longer sequence until both fit in budget (BERT's rule)."""
    budget = max(budget, 0)
    keep_a, keep_b = len(a), len(b)
    while keep_a + keep_b > budget:
        if keep_b > keep_a:
            keep_b -= 1
        else:
            keep_a -= 1
    return a[:keep_a], b[:keep_b]


class EpochItems(EpochShuffle):
    """EpochShuffle whose indices carry their epoch (epoch * size + index), so the dataset can draw that epoch's
    partners in whatever process reads the batch."""

    def __iter__(self) -> Iterator[int]:
        base = self.epoch * self.size
        for index in super().__iter__():
            yield base + index


# after ., ! or ? (and a closing quote or bracket) and before a space; abbreviations ("Mr. Smith") cut too
SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+")


def split_sentences(text: str) -> list[str]:
    """The sentences of a line: a plain rule, cutting after sentence-ending punctuation followed by a space."""
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def read_documents(path: Path) -> Iterator[Document]:
    """The documents (lists of sentences) of a corpus file, one at a time: one sentence per line, blank lines
    between documents; a document written on one line is cut into its sentences."""
    if not path.is_file():
        raise UsageError(f"corpus file {path} does not exist: set data.corpus_file.")
    current: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            text = line.strip()
            if text:
                current.append(text)
            elif current:
                yield split_sentences(current[0]) if len(current) == 1 else current
                current = []
    if current:
        yield split_sentences(current[0]) if len(current) == 1 else current


TOPICS = {
    "weather": ["rain", "sun", "cloud", "wind", "storm", "snow", "cold", "warm"],
    "kitchen": ["bread", "soup", "salt", "oven", "knife", "plate", "cook", "bake"],
    "sport": ["ball", "goal", "team", "match", "coach", "run", "score", "win"],
    "music": ["song", "drum", "piano", "choir", "note", "band", "sing", "play"],
    "garden": ["tree", "leaf", "rose", "grass", "seed", "soil", "bloom", "grow"],
    "travel": ["train", "road", "map", "ticket", "hotel", "bag", "trip", "fly"],
    "school": ["book", "desk", "pen", "class", "test", "learn", "read", "write"],
    "sea": ["wave", "boat", "fish", "shore", "sail", "tide", "swim", "sand"],
}


def synthetic_documents(count: int, seed: int) -> list[Document]:
    """SYNTHETIC documents: each keeps to one topic's words, so the next sentence is predictable.

    A random "next" sentence comes from another topic 7 times in 8, so next-sentence prediction can reach about
    94% accuracy; masked words are predictable from the rest of the sentence's topic.
    """
    rng = random.Random(seed)
    documents = []
    for _ in range(count):
        words = TOPICS[rng.choice(sorted(TOPICS))]
        documents.append([f"the {rng.choice(words)} and the {rng.choice(words)} {rng.choice(['were', 'are'])} "
                          f"{rng.choice(words)}" for _ in range(rng.randint(3, 6))])
    return documents


class CorpusDataModule(DataModule):
    """Sentence pairs with dynamic masking from `corpus_file`, or a synthetic corpus when it is null."""

    kind = "masked_lm"

    def __init__(self, corpus_file: str | None = None, synthetic_documents: int = 600, batch_size: int = 32,
                 max_length: int = 128, tokenizer: dict[str, Any] | None = None, mask_probability: float = 0.15,
                 val_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 0,
                 cache_dir: str | None = None, num_workers: int | None = 0, pin_memory: bool | None = None) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.corpus_file, self.synthetic, self.max_length = corpus_file, synthetic_documents, max_length
        self.settings = with_settings({"kind": "wordpiece", "vocab_size": 8000, "min_frequency": 1,
                                       "lowercase": True, "path": None}, tokenizer)
        self.mask_probability, self.fractions, self.seed = mask_probability, (val_fraction, test_fraction), seed
        self.cache_dir = cache_dir or str(Path.home() / ".cache" / "dlkit" / "cache")
        self.tokenizer = None
        self.store: Store | None = None

    def documents(self) -> Iterator[Document]:
        """Every document of the corpus, in order (each call reads the file anew)."""
        if self.corpus_file:
            return read_documents(Path(self.corpus_file).expanduser())
        return iter(synthetic_documents(self.synthetic, self.seed))

    def store_key(self) -> str:
        settings = dict(self.settings)
        path = settings.pop("path")
        source = self.corpus_file or ["synthetic", self.synthetic, self.seed]
        # a given tokenizer is part of the key: runs from two checkpoints must not share one store
        return fingerprint("corpus", source, settings, *([str(Path(path).expanduser().resolve())] if path else []),
                           self.max_length, self.fractions, self.seed)

    def prepare(self) -> tuple[Store, bool]:
        """The token store of the corpus (built now if needed); (store, whether it was built now)."""
        return prepared(self.cache_dir, self.store_key(), self._build, describe="pre-training corpus")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from tokenizers import Tokenizer

        self.store, _ = self.prepare()
        self.tokenizer_file = str(self.store.folder / "tokenizer.json")
        self._use_tokenizer(Tokenizer.from_file(self.tokenizer_file))
        ids = special_ids(self.tokenizer)
        self.train_set, self.val_set, self.test_set = (
            SentencePairs(self.store.ragged(split, "sentences"), self.store.fixed(split, "document"),
                          self.seed + offset, self.max_length, ids["cls"], ids["sep"], self.pad_id)
            for offset, split in enumerate(SPLITS))
        if len(self.train_set) == 0:
            source = self.corpus_file or "the synthetic corpus"
            raise UsageError(f"the training split of {source} gives no next-sentence pairs: its documents need two "
                             "or more sentences (one per line).")
        self._spec = DataSpec(kind=self.kind, vocab_size=self.tokenizer.get_vocab_size(), pad_id=self.pad_id,
                              mask_id=self.mask_id, max_length=self.max_length, tokenizer_path=self.tokenizer_file)

    def _build(self, writer: StoreWriter) -> dict[str, Any]:
        source = self.corpus_file or "the synthetic corpus"
        with preparing() as show:
            counting = show("Reading documents")
            count, longest = 0, 0
            for document in self.documents():
                count, longest = count + 1, max(longest, len(document))
                counting.advance(1)
            if count < 2:
                raise UsageError(f"corpus file {source} holds {count} document(s): next-sentence pairs need at "
                                 "least two (one sentence per line, a blank line between documents).")
            if longest < 2:
                raise UsageError(f"corpus file {source} gives no next-sentence pairs: none of its {count} "
                                 "documents has two sentences. Write one sentence per line, a blank line between "
                                 "documents, and documents of two or more sentences.")
            parts = split_assignment(count, (1.0 - sum(self.fractions), *self.fractions), self.seed)
            tokenizer = self._tokenizer(parts, show("Training the tokenizer", int((parts == 0).sum())))
            frame(tokenizer, self.max_length, special=True)
            tokenizer.save(str(writer.folder / "tokenizer.json"))
            self._encode(writer, tokenizer, parts, show("Encoding documents", count))
        return {"documents": count}

    def _tokenizer(self, parts: np.ndarray, progress: Any):
        settings = dict(self.settings)
        path = settings.pop("path")
        if path:
            return load_tokenizer(path, settings["lowercase"])

        def sentences() -> Iterator[list[str]]:
            batch: list[str] = []
            for number, document in enumerate(self.documents()):
                if parts[number] == 0:
                    batch += document
                    progress.advance(1)
                if len(batch) >= ENCODE_SENTENCES:
                    yield batch
                    batch = []
            if batch:
                yield batch

        return train_tokenizer(sentences(), **settings)

    def _encode(self, writer: StoreWriter, tokenizer: Any, parts: np.ndarray, progress: Any) -> None:
        """Every sentence's token ids and its document's number (within its split), split by split."""
        pending: dict[int, tuple[list[str], list[int]]] = {0: ([], []), 1: ([], []), 2: ([], [])}
        numbers = [0, 0, 0]  # documents written per split

        def flush(part: int) -> None:
            texts, documents = pending[part]
            if texts:
                ids, lengths, _ = encode_rows(tokenizer, texts)
                writer.ragged(SPLITS[part], "sentences", ids, lengths)
                writer.fixed(SPLITS[part], "document", np.asarray(documents, dtype=np.int32))
                progress.advance(0, written=int(lengths.sum()) * 4)
            pending[part] = ([], [])

        for number, document in enumerate(self.documents()):
            part = int(parts[number])
            pending[part][0].extend(document)
            pending[part][1].extend([numbers[part]] * len(document))
            numbers[part] += 1
            progress.advance(1)
            if len(pending[part][0]) >= ENCODE_SENTENCES:
                flush(part)
        for part in pending:
            flush(part)
        for split in SPLITS:
            writer.empty_split(split)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True, sampler=EpochItems(len(self.train_set), self.shuffle_seed))

    def inference_state(self) -> dict[str, Any] | None:
        """The tokenizer as JSON text: all predict needs besides the spec."""
        return {"tokenizer": self.tokenizer.to_str()} if self.tokenizer is not None else None

    def restore(self, state: dict[str, Any], spec: DataSpec) -> None:
        from tokenizers import Tokenizer

        self._use_tokenizer(Tokenizer.from_str(state["tokenizer"]))
        self._spec = spec

    def _use_tokenizer(self, tokenizer: Any) -> None:
        """Take the tokenizer, its [PAD] and [MASK] ids, and the masking collator built on them."""
        self.tokenizer = frame(tokenizer, self.max_length, special=True)
        ids = special_ids(tokenizer)
        self.pad_id, self.mask_id = ids["pad"], ids["mask"]
        self.collate_fn = MaskingCollator(self.mask_id, tokenizer.get_vocab_size(),
                                          {i for i in ids.values() if i is not None}, self.mask_probability)

    def client_preprocessing(self, out_dir: Path) -> dict[str, Any]:
        """The tokenizer.json (framing, truncation and padding included) and how to call it on texts with [MASK]."""
        specials = save_for_clients(self.tokenizer, self.pad_id, out_dir / "tokenizer.json")
        return {"input": "text", "tokenizer": "tokenizer.json", "max_length": self.max_length, "framed": True,
                "special_tokens": specials, "steps": CLIENT_ENCODING + " Write [MASK] where a token is to be filled."}

    def overlong(self, raw: list[str]) -> list[int | None]:
        return [self.max_length if c else None for c in cut_rows(self.tokenizer, raw, special=True)]

    def encode_inputs(self, raw: list[str]) -> dict[str, torch.Tensor]:
        """Texts with [MASK] tokens, framed [CLS] text [SEP] (nothing else is masked)."""
        ids, lengths, _ = encode_rows(self.tokenizer, raw, special=True)
        input_ids = pad_rows(ids, lengths, self.pad_id)
        attention = (np.arange(input_ids.shape[1]) < lengths[:, None]).astype(np.int64)
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention),
                "token_type_ids": torch.zeros(input_ids.shape, dtype=torch.long)}
