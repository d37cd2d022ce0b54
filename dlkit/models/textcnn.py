"""TextCNN (Kim 2014, "Convolutional Neural Networks for Sentence Classification").

Word embeddings, parallel 1-D convolutions of several widths (3/4/5 with 100 maps each in the paper), ReLU,
max-over-time pooling, dropout 0.5 and a linear layer. Embeddings are `rand` (learned from scratch) by
default, or loaded from a word2vec-text / GloVe file as `static` (frozen) or `non-static` (fine-tuned).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("dlkit")


def vectors_dim(path: str | Path) -> int | None:
    """The dimension of a word2vec-text or GloVe file, from its header or its first vector (None: empty)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle):
            parts = line.rstrip().split(" ")
            if number == 0 and len(parts) == 2 and all(p.isdigit() for p in parts):
                return int(parts[1])  # the "count dim" header of word2vec text files
            if len(parts) > 1:
                return len(parts) - 1
    return None


def load_vectors(path: str | Path, vocab: dict[str, int], dim: int) -> tuple[torch.Tensor, int]:
    """Rows of a word2vec-text or GloVe file for the words of `vocab` (others small random), and the number found."""
    matrix = torch.empty(len(vocab), dim).uniform_(-0.25, 0.25)  # Kim's initialisation of unknown words
    hits = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle):
            parts = line.rstrip().split(" ")
            if number == 0 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # the "count dim" header of word2vec text files
            word, values = parts[0], parts[1:]
            if word in vocab and len(values) == dim:
                matrix[vocab[word]] = torch.tensor([float(v) for v in values])
                hits += 1
    return matrix, hits


@torch.jit.script_if_tracing
def pad_to_width(input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int,
                 pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of texts shorter than the widest filter, padded to its width (longer batches as they are).

    Scripted when traced, so that ONNX and TorchScript exports keep the branch (a plain `if` would be frozen to
    the traced batch's length, and one-token texts would fail in ONNX Runtime).
    """
    if input_ids.shape[1] < width:
        extra = width - input_ids.shape[1]
        input_ids = F.pad(input_ids, [0, extra], value=float(pad_id))
        attention_mask = F.pad(attention_mask, [0, extra], value=0.0)
    return input_ids, attention_mask


class TextCNN(nn.Module):
    """embedding -> conv(k) + ReLU for each width k -> max over time -> concat -> dropout -> linear."""

    accepts = ("text_classification",)

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int = 0, embedding_dim: int = 300,
                 filter_sizes: tuple[int, ...] = (3, 4, 5), num_filters: int = 100, dropout: float = 0.5,
                 embeddings: str = "rand", vectors_path: str | None = None,
                 tokenizer_path: str | None = None, init_range: float | None = None) -> None:
        super().__init__()
        if embeddings not in ("rand", "static", "non-static"):
            raise ValueError(f"embeddings={embeddings!r}: choose rand, static or non-static")
        self.pad_id = pad_id
        self._missing_vectors: str | None = None
        self.filter_sizes = tuple(filter_sizes)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        if init_range is not None:  # Kim's U[-0.25, 0.25] for words without a pre-trained vector (and for rand)
            with torch.no_grad():
                self.embedding.weight.uniform_(-init_range, init_range)
                self.embedding.weight[pad_id] = 0.0
        if embeddings != "rand":
            self._load_pretrained(vectors_path, tokenizer_path, embedding_dim, freeze=embeddings == "static")
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, num_filters, k) for k in self.filter_sizes)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_filters * len(self.filter_sizes), num_classes)

    def _load_pretrained(self, vectors_path: str | None, tokenizer_path: str | None, dim: int, freeze: bool) -> None:
        self.embedding.weight.requires_grad = not freeze
        if not vectors_path:
            raise ValueError("embeddings=static/non-static need model.vectors_path=FILE (word2vec text or GloVe)")
        if not Path(vectors_path).expanduser().is_file():
            # the vectors live in a checkpoint too: predict/eval load them from there; training refuses to start
            log.warning("model.vectors_path=%s does not exist: the embeddings must come from a checkpoint",
                        vectors_path)
            self._missing_vectors = str(vectors_path)
            self._register_load_state_dict_pre_hook(self._weights_loaded)
            return
        if not tokenizer_path:
            raise ValueError("pre-trained vectors need the data's tokenizer (the datamodule gives tokenizer_path)")
        found = vectors_dim(Path(vectors_path).expanduser())
        if found != dim:
            raise ValueError(f"model.vectors_path={vectors_path} holds {found}-d vectors but model.embedding_dim="
                             f"{dim}: set model.embedding_dim={found}")
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab()
        matrix, hits = load_vectors(Path(vectors_path).expanduser(), vocab, dim)
        log.info("TextCNN: %d of %d vocabulary words found in %s (the others start random)", hits, len(vocab),
                 vectors_path)
        if hits == 0:
            log.warning("no vocabulary word is in %s: the 'pre-trained' embeddings are all random", vectors_path)
        matrix[self.pad_id] = 0.0
        self.embedding.weight.data.copy_(matrix)

    def _weights_loaded(self, *_: object, **__: object) -> None:
        self._missing_vectors = None  # the embeddings came from a checkpoint

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits [B, num_classes] for token ids [B, T]; windows over padding never win the max."""
        if self._missing_vectors and self.training:
            raise FileNotFoundError(f"model.vectors_path={self._missing_vectors} does not exist: give a word2vec "
                                    "text or GloVe file to train with pre-trained vectors")
        input_ids, attention_mask = pad_to_width(input_ids, attention_mask, max(self.filter_sizes), self.pad_id)
        # padding contributes zero vectors, as in the paper, whatever id it carries
        x = (self.embedding(input_ids) * attention_mask.unsqueeze(-1)).transpose(1, 2)  # [B, E, T]
        lengths = attention_mask.sum(dim=1, keepdim=True)  # [B, 1]
        pooled = []
        for k, conv in zip(self.filter_sizes, self.convs):
            features = F.relu(conv(x))  # [B, maps, T - k + 1]
            starts = torch.arange(features.shape[2], device=x.device).unsqueeze(0)
            # a window is real when it starts on a real token (short texts keep at least their first window)
            valid = (starts + k <= lengths.clamp(min=k)).unsqueeze(1)
            pooled.append(features.masked_fill(~valid, float("-inf")).amax(dim=2))
        return self.head(self.dropout(torch.cat(pooled, dim=1)))
