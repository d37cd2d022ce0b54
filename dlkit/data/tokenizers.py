"""Tokenizers from the `tokenizers` library: trained on a training split (cached on disk) or loaded.

Trained tokenizers put their special tokens first, so [PAD] is id 0. Loaded ones (a BERT vocab.txt or a
tokenizer.json) keep their own ids: always ask `special_ids(tokenizer)` rather than assume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]"]
KINDS = ("word", "wordpiece", "bpe")
# the tokens that frame or pad a text: left out when ids are shown to a person (see readable)
FRAMING = ("[PAD]", "[CLS]", "[SEP]", "[BOS]", "[EOS]")


CLEANERS = ("kim2014",)


def _kim2014() -> list[normalizers.Normalizer]:
    """Kim (2014)'s text cleaning (`clean_str` of his CNN_sentence code), as normalizer steps: every character but
    letters, digits and ( ) , ! ? ' ` becomes a space; the clitics 's 've n't 're 'd 'll and the marks , ! ( ) ?
    become tokens of their own (the words are then split at whitespace only)."""
    steps = [normalizers.Replace(Regex(r"[^A-Za-z0-9(),!?'`]"), " ")]
    steps += [normalizers.Replace(clitic, f" {clitic}") for clitic in ("'s", "'ve", "n't", "'re", "'d", "'ll")]
    steps += [normalizers.Replace(mark, f" {mark} ") for mark in (",", "!", "(", ")", "?")]
    return steps


def _normalizer(lowercase: bool, strip_accents: bool | None = None,
                clean: str | None = None) -> normalizers.Normalizer:
    """NFC text; lowercased and accent-stripped (NFD + StripAccents) as BERT uncased does. Accents are only
    stripped with lowercasing unless strip_accents says otherwise, so cased output keeps its umlauts. `clean`:
    a published cleaning first (kim2014)."""
    if clean not in (None, *CLEANERS):
        raise ValueError(f"tokenizer clean={clean!r}: choose one of {', '.join(CLEANERS)} or null")
    strip = lowercase if strip_accents is None else strip_accents
    steps: list[normalizers.Normalizer] = _kim2014() if clean == "kim2014" else []  # on the text as written
    steps += [normalizers.NFD(), normalizers.StripAccents()] if strip else [normalizers.NFC()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps)


def with_settings(defaults: dict[str, Any], given: dict[str, Any] | None) -> dict[str, Any]:
    """A datamodule's tokenizer settings: its defaults updated with the config's, a null `clean` left out so that
    stores prepared before that setting existed keep their keys."""
    return {**defaults, **{k: v for k, v in (given or {}).items() if not (k == "clean" and v is None)}}


def new_tokenizer(kind: str, lowercase: bool = True, strip_accents: bool | None = None,
                  clean: str | None = None) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained tokenizer of the given kind and the trainer for it (special tokens first)."""
    if kind == "word":
        tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        # a cleaned text is split at whitespace only: n't and 's stay the tokens the cleaning made
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit() if clean else pre_tokenizers.Whitespace()
        trainer_cls = trainers.WordLevelTrainer
    elif kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer_cls = trainers.WordPieceTrainer
    elif kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer_cls = trainers.BpeTrainer
    else:
        raise ValueError(f"tokenizer kind {kind!r}: choose one of {', '.join(KINDS)}")
    tokenizer.normalizer = _normalizer(lowercase, strip_accents, clean)
    return tokenizer, trainer_cls


def train_tokenizer(texts: Iterable[str], kind: str = "word", vocab_size: int = 30000, min_frequency: int = 1,
                    lowercase: bool = True, length: int | None = None, strip_accents: bool | None = None,
                    clean: str | None = None) -> Tokenizer:
    """Train a tokenizer on an iterable of texts (strip_accents null: strip them when lowercasing)."""
    tokenizer, trainer_cls = new_tokenizer(kind, lowercase, strip_accents, clean)
    trainer = trainer_cls(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                          show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    return tokenizer


def load_tokenizer(path: str | Path, lowercase: bool = True) -> Tokenizer:
    """Load a tokenizer.json, a BERT vocab.txt, or a folder holding either."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in ("tokenizer.json", "vocab.txt"):
            if (path / name).is_file():
                return load_tokenizer(path / name, lowercase)
        raise FileNotFoundError(f"{path} holds neither tokenizer.json nor vocab.txt")
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    if path.suffix == ".json":
        return Tokenizer.from_file(str(path))
    tokenizer = Tokenizer(models.WordPiece.from_file(str(path), unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None if lowercase else False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    # [MASK], [CLS] ... written in a text stay one token, as in BERT's own tokenizer
    tokenizer.add_special_tokens([t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is not None])
    return tokenizer


def readable(tokenizer: Tokenizer, ids: list[int]) -> str:
    """Token ids as the text a person reads: the framing and padding left out, unknown words shown as [UNK] and
    masks as [MASK] (the tokenizer's decode would drop them with the other special tokens)."""
    framing = {tokenizer.token_to_id(token) for token in FRAMING} - {None}
    return tokenizer.decode([i for i in ids if i not in framing], skip_special_tokens=False)


def state_tokenizer(state: dict | None, path: str | None) -> Tokenizer:
    """A task's (target) tokenizer: from the JSON text in a checkpoint's data state (DataModule.inference_state),
    else from its file (checkpoints written before they carried the state)."""
    text = (state or {}).get("tokenizer")
    if text:
        return Tokenizer.from_str(text)
    if not path:
        raise FileNotFoundError("the checkpoint carries no tokenizer and names no tokenizer file")
    return Tokenizer.from_file(path)


def special_ids(tokenizer: Tokenizer) -> dict[str, int | None]:
    """Ids of the special tokens this tokenizer knows: pad, unk, cls, sep, mask, bos, eos (None if absent)."""
    return {token.strip("[]").lower(): tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}


def fingerprint(*parts: object) -> str:
    """A short stable hash of settings and data identity: existing files count by path, size and mtime."""

    def identity(part: object) -> object:
        if isinstance(part, (list, tuple)):
            return [identity(p) for p in part]
        if isinstance(part, dict):
            return {str(k): identity(v) for k, v in part.items()}
        if isinstance(part, (str, Path)) and str(part) and Path(part).is_file():
            stat = Path(part).stat()
            return f"{Path(part).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        return part

    return hashlib.sha256(json.dumps(identity(parts), sort_keys=True, default=str).encode()).hexdigest()[:16]


def frame(tokenizer: Tokenizer, max_length: int | None, special: bool) -> Tokenizer:
    """Make the tokenizer itself produce what a model is fed: [CLS] a [SEP] (b [SEP]) framing with segment ids
    when `special`, and truncation to max_length tokens (framing included; of a pair, the longer text loses tokens
    first, BERT's rule). Its own `encode` is then the whole encoding, for training, predict and exported files."""
    if special:
        ids = special_ids(tokenizer)
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", ids["cls"]), ("[SEP]", ids["sep"])])
    else:
        tokenizer.post_processor = None
    if max_length:
        tokenizer.enable_truncation(max_length, strategy="longest_first")
    else:
        tokenizer.no_truncation()
    return tokenizer


def save_for_clients(tokenizer: Tokenizer, pad_id: int, path: Path, max_length: int | None = None) -> dict[str, int]:
    """Write a copy of the tokenizer that a client's `encode_batch(texts)` turns into exactly dlkit's model inputs:
    framed and truncated as it is (see frame(); `max_length` truncates one that is not), padded to the longest
    text with `pad_id`. Returns the special token ids it knows."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    if max_length:
        copy.enable_truncation(max_length)
    copy.enable_padding(pad_id=pad_id, pad_token=copy.id_to_token(pad_id) or "[PAD]")
    copy.save(str(path))
    return {name: index for name, index in special_ids(copy).items() if index is not None}


# how a client encodes texts with the tokenizer.json of an export (model.json's preprocessing.steps)
CLIENT_ENCODING = ("encodings = Tokenizer.from_file(tokenizer).encode_batch(texts) (sentence pairs: a list of "
                   "(text, text_pair)); input_ids = [e.ids], attention_mask = [e.attention_mask], token_type_ids = "
                   "[e.type_ids] for e in encodings, as int64 [batch, sequence]. The file frames, truncates to "
                   "max_length and pads to the longest text exactly as dlkit does.")


def cut_rows(tokenizer: Tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None,
             special: bool = False) -> list[bool]:
    """Whether the tokenizer (truncating as frame() set it) cuts tokens off each text (or pair of texts)."""
    return [bool(e.overflowing) for e in tokenizer.encode_batch(_batch(texts, pairs), add_special_tokens=special)]


def _batch(texts: Sequence[str], pairs: Sequence[str] | None) -> list[Any]:
    """What the tokenizer's batch calls take: the texts, or (text, text_pair) tuples."""
    return list(zip(texts, pairs)) if pairs is not None else list(texts)


def encode_rows(tokenizer: Tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None,
                special: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(token ids of every text one after another [int32], each text's length, segment ids [int8] of pairs), from
    one parallel call of the tokenizer (framed and truncated by it, see frame())."""
    batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    encodings = batch(_batch(texts, pairs), add_special_tokens=special)
    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    total = int(lengths.sum())
    ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=total)
    types = (np.fromiter(chain.from_iterable(e.type_ids for e in encodings), dtype=np.int8, count=total)
             if pairs is not None else None)
    return ids, lengths, types
