"""Recurrent text classifiers (Elman RNN, LSTM, GRU) over word embeddings.

Sequences are packed, so padding never enters the recurrence, and pooled over time by the last hidden
state (both directions when bidirectional), the mean or the max of the outputs over real tokens.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RNNClassifier(nn.Module):
    """embedding -> (bi)RNN/LSTM/GRU over packed sequences -> pooling -> dropout -> linear."""

    accepts = ("text_classification",)

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int = 0, cell: str = "lstm",
                 embedding_dim: int = 128, hidden_size: int = 128, num_layers: int = 1, bidirectional: bool = True,
                 dropout: float = 0.3, pooling: str = "last") -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r}: choose one of {', '.join(CELLS)}")
        if pooling not in ("last", "mean", "max"):
            raise ValueError(f"pooling={pooling!r}: choose last, mean or max")
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.rnn = CELLS[cell](embedding_dim, hidden_size, num_layers=num_layers, batch_first=True,
                               bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits [B, num_classes] for token ids [B, T] (attention_mask 1 on real tokens)."""
        lengths = attention_mask.sum(dim=1).clamp(min=1).cpu()
        embedded = self.dropout(self.embedding(input_ids))
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        outputs, hidden = self.rnn(packed)
        if self.pooling == "last":
            h = hidden[0] if isinstance(hidden, tuple) else hidden  # LSTM returns (h, c)
            directions = 2 if self.rnn.bidirectional else 1
            pooled = torch.cat(list(h[-directions:]), dim=-1)  # the last layer, every direction
        else:
            padded, _ = pad_packed_sequence(outputs, batch_first=True, total_length=input_ids.shape[1])
            mask = attention_mask.unsqueeze(-1).bool()
            if self.pooling == "mean":
                pooled = (padded * mask).sum(1) / mask.sum(1).clamp(min=1)
            else:
                pooled = padded.masked_fill(~mask, float("-inf")).amax(1)
        return self.head(self.dropout(pooled))
