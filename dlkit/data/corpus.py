"""Masked-LM + next-sentence pre-training data (BERT) from a raw corpus, or a synthetic corpus made in code.

Corpus format: one sentence per line, a blank line between documents (a document written on one line is cut
into sentences). Each example is a sentence pair [CLS] A [SEP] B [SEP]: half the time B follows A in its document
(NSP label 0), half the time B is a sentence from another document (label 1). Masking is dynamic: every batch
chooses 15% of the tokens anew, of which 80% become [MASK], 10% a random token and 10% stay unchanged.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from dlkit.data.base import DataModule, complete_splits
from dlkit.data.spec import DataSpec
from dlkit.data.text import pad_batch
from dlkit.data.tokenizers import cached_tokenizer, encode, fingerprint, load_tokenizer, special_ids
from dlkit.errors import DlkitError, UsageError

Document = list[str]


class SentencePairs(Dataset):
    def __init__(self, ids: list[list[int]], types: list[list[int]], nsp: list[int]) -> None:
        self.ids, self.types, self.nsp = ids, types, nsp

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[list[int], list[int], int]:
        return self.ids[index], self.types[index], self.nsp[index]


class MaskingCollator:
    """Pads a batch and masks it: 15% of real, non-special tokens chosen; 80/10/10 [MASK] / random / kept."""

    def __init__(self, pad_id: int, mask_id: int, vocab_size: int, special: set[int], probability: float = 0.15):
        self.pad_id, self.mask_id, self.vocab_size = pad_id, mask_id, vocab_size
        self.special, self.probability = torch.tensor(sorted(special)), probability

    def __call__(self, items: list[tuple[list[int], list[int], int]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_batch([i[0] for i in items], self.pad_id)
        types, _ = pad_batch([i[1] for i in items], 0)
        candidates = mask.bool() & ~torch.isin(ids, self.special)
        chosen = (torch.rand(ids.shape) < self.probability) & candidates
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        roll = torch.rand(ids.shape)
        masked = ids.clone()
        masked[chosen & (roll < 0.8)] = self.mask_id
        randomised = chosen & (roll >= 0.8) & (roll < 0.9)
        masked[randomised] = torch.randint(0, self.vocab_size, (int(randomised.sum()),))
        return {"input_ids": masked, "attention_mask": mask, "token_type_ids": types, "mlm_labels": labels,
                "nsp_labels": torch.tensor([i[2] for i in items], dtype=torch.long)}


# after ., ! or ? (and a closing quote or bracket) and before a space; abbreviations ("Mr. Smith") cut too
SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+")


def split_sentences(text: str) -> list[str]:
    """The sentences of a line: a plain rule, cutting after sentence-ending punctuation followed by a space."""
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def read_corpus(path: Path) -> list[Document]:
    """Documents (lists of sentences) from a file: one sentence per line, blank lines between documents.

    A document written on one line (one document per line, blank lines between) is cut into its sentences.
    """
    if not path.is_file():
        raise UsageError(f"corpus file {path} does not exist: set data.corpus_file.")
    documents, current = [], []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            documents.append(split_sentences(current[0]) if len(current) == 1 else current)
            current = []
    if len(documents) < 2:
        raise UsageError(f"corpus file {path} holds {len(documents)} document(s): next-sentence pairs need at least "
                         "two (one sentence per line, a blank line between documents).")
    if all(len(d) < 2 for d in documents):
        raise UsageError(f"corpus file {path} gives no next-sentence pairs: none of its {len(documents)} documents "
                         "has two sentences. Write one sentence per line, a blank line between documents, and "
                         "documents of two or more sentences.")
    return documents


def sentence_pairs(documents: list[Document], seed: int) -> list[tuple[str, str, int]]:
    """(A, B, label) for every sentence with a successor: label 0 when B is the next sentence, 1 when random.

    The random B comes from another document drawn by offset (one draw, whatever the number of documents).
    """
    if len(documents) < 2:
        raise DlkitError("next-sentence pairs need at least two documents (separate them with a blank line)")
    rng = random.Random(seed)
    pairs = []
    for index, document in enumerate(documents):
        for position in range(len(document) - 1):
            if rng.random() < 0.5:
                pairs.append((document[position], document[position + 1], 0))
            else:
                other = documents[(index + rng.randrange(1, len(documents))) % len(documents)]
                pairs.append((document[position], rng.choice(other), 1))
    return pairs


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
        self.settings = {"kind": "wordpiece", "vocab_size": 8000, "min_frequency": 1, "lowercase": True,
                         "path": None, **(tokenizer or {})}
        self.mask_probability, self.fractions, self.seed = mask_probability, (val_fraction, test_fraction), seed
        self.cache_dir = cache_dir or str(Path.home() / ".cache" / "dlkit" / "cache")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        documents = (read_corpus(Path(self.corpus_file).expanduser()) if self.corpus_file
                     else synthetic_documents(self.synthetic, self.seed))
        splits = complete_splits({"train": documents}, *self.fractions, self.seed, type(self).__name__)
        settings = dict(self.settings)
        path = settings.pop("path")
        source = self.corpus_file or ["synthetic", self.synthetic, self.seed]
        # a given tokenizer is part of the key: runs from two checkpoints must not share (and overwrite) one file
        key = fingerprint(source, settings, *([str(Path(path).expanduser().resolve())] if path else []))
        self.tokenizer_file = str(Path(self.cache_dir).expanduser() / "tokenizers" / f"{key}.json")
        if path:
            self.tokenizer = load_tokenizer(path, settings["lowercase"])
            Path(self.tokenizer_file).parent.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(self.tokenizer_file)
        else:
            sentences = [s for d in splits["train"] for s in d]
            self.tokenizer = cached_tokenizer(self.cache_dir, key, sentences, **settings)
        self._use_tokenizer(self.tokenizer)
        self.train_set, self.val_set, self.test_set = (self._pairs(splits[n], offset)
                                                       for offset, n in enumerate(("train", "val", "test")))
        if len(self.train_set) == 0:
            source = self.corpus_file or "the synthetic corpus"
            raise UsageError(f"the training split of {source} gives no next-sentence pairs: its documents need two "
                             "or more sentences (one per line).")
        self._spec = DataSpec(kind=self.kind, vocab_size=self.tokenizer.get_vocab_size(), pad_id=self.pad_id,
                              mask_id=self.mask_id, max_length=self.max_length, tokenizer_path=self.tokenizer_file)

    def _pairs(self, documents: list[Document], offset: int) -> SentencePairs:
        pairs = sentence_pairs(documents, self.seed + offset) if len(documents) > 1 else []
        ids = encode(self.tokenizer, [a for a, _, _ in pairs], pairs=[b for _, b, _ in pairs],
                     max_length=self.max_length, add_special=True)
        sep = special_ids(self.tokenizer)["sep"]
        types = [[0] * (seq.index(sep) + 1) + [1] * (len(seq) - seq.index(sep) - 1) for seq in ids]
        return SentencePairs(ids, types, [label for _, _, label in pairs])

    def inference_state(self) -> dict[str, Any] | None:
        """The tokenizer as JSON text: all predict needs besides the spec."""
        tokenizer = getattr(self, "tokenizer", None)
        return {"tokenizer": tokenizer.to_str()} if tokenizer is not None else None

    def restore(self, state: dict[str, Any], spec: DataSpec) -> None:
        from tokenizers import Tokenizer

        self._use_tokenizer(Tokenizer.from_str(state["tokenizer"]))
        self._spec = spec

    def _use_tokenizer(self, tokenizer: Any) -> None:
        """Take the tokenizer, its [PAD] and [MASK] ids, and the masking collator built on them."""
        self.tokenizer = tokenizer
        ids = special_ids(tokenizer)
        self.pad_id, self.mask_id = ids["pad"], ids["mask"]
        self.collate_fn = MaskingCollator(self.pad_id, self.mask_id, tokenizer.get_vocab_size(),
                                          {i for i in ids.values() if i is not None}, self.mask_probability)

    def encode_inputs(self, raw: list[str]) -> dict[str, torch.Tensor]:
        """Texts with [MASK] tokens, framed [CLS] text [SEP] (nothing else is masked)."""
        ids = encode(self.tokenizer, raw, max_length=self.max_length, add_special=True)
        input_ids, mask = pad_batch(ids, self.pad_id)
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(input_ids)}
