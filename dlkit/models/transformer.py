"""The Transformer encoder-decoder of Vaswani et al. 2017, "Attention Is All You Need", written out.

    source ids -> embedding * sqrt(d_model) + positions -> N x [self-attention, Add&Norm, FFN, Add&Norm]
    target ids -> embedding * sqrt(d_model) + positions -> N x [masked self-attention, Add&Norm,
                  encoder-decoder attention, Add&Norm, FFN, Add&Norm] -> linear (tied to the embedding) -> logits

Attention runs through torch's scaled_dot_product_attention (Flash / memory-efficient kernels on GPUs).
Decoding keeps a key/value cache, so each new token costs one position, not the whole prefix again.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Cache = dict[str, torch.Tensor]


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over `heads` subspaces of d_model / heads dimensions each."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} must be divisible by heads={heads}")
        self.heads, self.dropout = heads, dropout
        self.q, self.k, self.v, self.out = (nn.Linear(d_model, d_model) for _ in range(4))

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, heads, T, D/heads]
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None,
                cache: Cache | None = None, static_kv: bool = False) -> torch.Tensor:
        """Attend from query [B, Tq, D] to memory [B, Tk, D]; mask [B, 1, Tq|1, Tk] is True where allowed.

        With a cache: self-attention appends this step's keys/values to the cached ones; cross-attention
        (static_kv) projects the encoder memory once and reuses it.
        """
        q = self._split(self.q(query))
        if cache is not None and static_kv and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k, v = self._split(self.k(memory)), self._split(self.v(memory))
            if cache is not None and not static_kv and "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            if cache is not None:
                cache["k"], cache["v"] = k, v
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                  dropout_p=self.dropout if self.training else 0.0)
        return self.out(attended.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1))


class FeedForward(nn.Sequential):
    """Position-wise FFN: Linear(d_model, d_ff) -> ReLU -> dropout -> Linear(d_ff, d_model)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))


class Sublayer(nn.Module):
    """Residual connection with layer norm: Add&Norm after (post-norm, the paper) or norm first (pre-norm)."""

    def __init__(self, d_model: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.norm, self.dropout, self.pre_norm = nn.LayerNorm(d_model), nn.Dropout(dropout), pre_norm

    def forward(self, x: torch.Tensor, fn) -> torch.Tensor:
        if self.pre_norm:
            return x + self.dropout(fn(self.norm(x)))
        return self.norm(x + self.dropout(fn(x)))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(d_model, heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.sublayers = nn.ModuleList(Sublayer(d_model, dropout, pre_norm) for _ in range(2))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.sublayers[0](x, lambda h: self.attention(h, h, mask))
        return self.sublayers[1](x, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.self_attention = MultiHeadAttention(d_model, heads, dropout)
        self.cross_attention = MultiHeadAttention(d_model, heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.sublayers = nn.ModuleList(Sublayer(d_model, dropout, pre_norm) for _ in range(3))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor | None,
                memory_mask: torch.Tensor, cache: dict[str, Cache] | None = None) -> torch.Tensor:
        own = cache.setdefault("self", {}) if cache is not None else None
        cross = cache.setdefault("cross", {}) if cache is not None else None
        x = self.sublayers[0](x, lambda h: self.self_attention(h, h, self_mask, own))
        x = self.sublayers[1](x, lambda h: self.cross_attention(h, memory, memory_mask, cross, static_kv=True))
        return self.sublayers[2](x, self.ffn)


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)); [length, d_model]."""
    position = torch.arange(length).unsqueeze(1)
    rate = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2], table[:, 1::2] = torch.sin(position * rate), torch.cos(position * rate)
    return table


class Embedding(nn.Module):
    """Token embedding scaled by sqrt(d_model) plus sinusoidal (or learned) positions, then dropout."""

    def __init__(self, vocab_size: int, d_model: int, pad_id: int, max_length: int, learned: bool,
                 dropout: float) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.scale = math.sqrt(d_model)
        if learned:
            self.positions = nn.Parameter(torch.randn(max_length, d_model) * 0.02)
        else:
            self.register_buffer("positions", sinusoidal_positions(max_length, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return self.dropout(self.tokens(ids) * self.scale + self.positions[offset:offset + ids.shape[1]])


class Transformer(nn.Module):
    """Encoder-decoder for sequence-to-sequence tasks; teacher-forced forward, greedy and beam decoding."""

    accepts = ("seq2seq",)

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0, bos_id: int = 5, eos_id: int = 6,
                 d_model: int = 256, heads: int = 4, layers: int = 3, d_ff: int = 1024, dropout: float = 0.1,
                 max_length: int = 256, learned_positions: bool = False, pre_norm: bool = False,
                 tie_embeddings: bool = True, share_embeddings: bool = False, spec: Any = None) -> None:
        super().__init__()
        longest = getattr(spec, "max_length", None)  # the data's longest sequence, [BOS]/[EOS] included
        if longest is not None and longest > max_length:
            raise ValueError(f"data.max_length={longest - 2} needs model.max_length >= {longest} (positions for "
                             f"[BOS] and [EOS] too), but model.max_length={max_length}: set "
                             f"model.max_length={longest} or data.max_length<={max_length - 2}")
        self.pad_id, self.bos_id, self.eos_id, self.max_length = pad_id, bos_id, eos_id, max_length
        self.src_embedding = Embedding(src_vocab_size, d_model, pad_id, max_length, learned_positions, dropout)
        self.tgt_embedding = Embedding(tgt_vocab_size, d_model, pad_id, max_length, learned_positions, dropout)
        if share_embeddings:  # one vocabulary for both sides
            self.tgt_embedding.tokens = self.src_embedding.tokens
        self.encoder = nn.ModuleList(EncoderLayer(d_model, heads, d_ff, dropout, pre_norm) for _ in range(layers))
        self.decoder = nn.ModuleList(DecoderLayer(d_model, heads, d_ff, dropout, pre_norm) for _ in range(layers))
        # pre-norm stacks end with a norm of their own; post-norm layers already end normalised
        self.encoder_norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()
        self.generator = nn.Linear(d_model, tgt_vocab_size)
        if tie_embeddings:
            self.generator.weight = self.tgt_embedding.tokens.weight
        for name, parameter in self.named_parameters():
            if parameter.dim() > 1 and "positions" not in name:
                nn.init.xavier_uniform_(parameter)

    # -- the two halves ------------------------------------------------------------------------------------
    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """Encoder states [B, S, D] for source ids [B, S] (src_mask 1 on real tokens)."""
        mask = src_mask.bool()[:, None, None, :]
        x = self.src_embedding(src_ids)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.encoder_norm(x)

    def decode(self, tgt_ids: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
               tgt_mask: torch.Tensor | None = None, cache: list[dict[str, Cache]] | None = None,
               offset: int = 0) -> torch.Tensor:
        """Logits [B, T, V] for target ids [B, T] (with a cache: only the new positions, starting at offset)."""
        memory_mask = src_mask.bool()[:, None, None, :]
        steps = tgt_ids.shape[1]
        total = offset + steps
        # position t may see positions <= t (causal) that are not padding
        causal = torch.ones(steps, total, dtype=torch.bool, device=tgt_ids.device).tril(diagonal=offset)
        self_mask = causal[None, None]
        if tgt_mask is not None:
            self_mask = self_mask & tgt_mask.bool()[:, None, None, :total]
        x = self.tgt_embedding(tgt_ids, offset)
        for index, layer in enumerate(self.decoder):
            x = layer(x, memory, self_mask, memory_mask, cache[index] if cache is not None else None)
        return self.generator(self.decoder_norm(x))

    def forward(self, src_ids: torch.Tensor, src_mask: torch.Tensor, tgt_ids: torch.Tensor,
                tgt_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: logits for every target position given the previous ones."""
        return self.decode(tgt_ids, self.encode(src_ids, src_mask), src_mask, tgt_mask)

    # -- decoding ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def greedy(self, src_ids: torch.Tensor, src_mask: torch.Tensor, max_length: int | None = None,
               use_cache: bool = True) -> torch.Tensor:
        """Most likely next token at each step, until EOS or max_length; [B, T] starting with BOS."""
        max_length = min(max_length or self.max_length, self.max_length)
        memory = self.encode(src_ids, src_mask)
        ids = torch.full((src_ids.shape[0], 1), self.bos_id, dtype=torch.long, device=src_ids.device)
        done = torch.zeros(src_ids.shape[0], dtype=torch.bool, device=src_ids.device)
        cache: list[dict[str, Cache]] | None = [{} for _ in self.decoder] if use_cache else None
        for step in range(max_length - 1):
            if use_cache:
                logits = self.decode(ids[:, -1:], memory, src_mask, cache=cache, offset=step)
            else:
                logits = self.decode(ids, memory, src_mask)
            next_id = logits[:, -1].argmax(-1).masked_fill(done, self.pad_id)
            ids = torch.cat([ids, next_id[:, None]], dim=1)
            done |= next_id == self.eos_id
            if done.all():
                break
        return ids

    @torch.no_grad()
    def beam_search(self, src_ids: torch.Tensor, src_mask: torch.Tensor, beam_size: int = 4,
                    length_penalty: float = 0.6, max_length: int | None = None) -> torch.Tensor:
        """Beam search with the GNMT length penalty ((5 + len) / 6) ** alpha; the best beam per input."""
        max_length = min(max_length or self.max_length, self.max_length)
        batch, device = src_ids.shape[0], src_ids.device
        memory = self.encode(src_ids, src_mask).repeat_interleave(beam_size, dim=0)
        src_mask = src_mask.repeat_interleave(beam_size, dim=0)
        ids = torch.full((batch * beam_size, 1), self.bos_id, dtype=torch.long, device=device)
        scores = torch.full((batch, beam_size), float("-inf"), device=device)
        scores[:, 0] = 0.0  # all beams start identical: keep one until they diverge
        scores = scores.view(-1)
        done = torch.zeros(batch * beam_size, dtype=torch.bool, device=device)
        cache: list[dict[str, Cache]] = [{} for _ in self.decoder]
        for step in range(max_length - 1):
            log_probs = self.decode(ids[:, -1:], memory, src_mask, cache=cache, offset=step)[:, -1].log_softmax(-1)
            vocab = log_probs.shape[-1]
            # a finished beam can only extend itself with padding, at no cost
            log_probs[done] = float("-inf")
            log_probs[done, self.pad_id] = 0.0
            candidates = (scores[:, None] + log_probs).view(batch, beam_size * vocab)
            scores, flat = candidates.topk(beam_size, dim=-1)
            origin = (flat // vocab) + torch.arange(batch, device=device)[:, None] * beam_size
            origin, token, scores = origin.view(-1), (flat % vocab).view(-1), scores.view(-1)
            ids = torch.cat([ids[origin], token[:, None]], dim=1)
            done = done[origin] | (token == self.eos_id)
            for layer_cache in cache:  # follow the beams that survived
                for name in ("self",):
                    layer_cache[name]["k"] = layer_cache[name]["k"][origin]
                    layer_cache[name]["v"] = layer_cache[name]["v"][origin]
            if done.all():
                break
        lengths = ((ids != self.pad_id) & (ids != self.bos_id)).sum(-1).float()
        penalised = (scores / (((5.0 + lengths) / 6.0) ** length_penalty)).view(batch, beam_size)
        best = penalised.argmax(-1) + torch.arange(batch, device=device) * beam_size
        return ids[best]
