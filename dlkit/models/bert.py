"""BERT (Devlin et al. 2019): a Transformer encoder over token + position + segment embeddings.

Parameter names follow Hugging Face's BertModel / BertForPreTraining one to one (`bert.encoder.layer.0.
attention.self.query.weight`, `cls.predictions.transform.dense.weight`, ...), so their checkpoints load as they
are (dlkit/interop/hf_bert.py loads them for `model.pretrained`). Attention runs through torch's
scaled_dot_product_attention.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation: Linear and Embedding weights N(0, std) (std = initializer_range), biases zero,
    an Embedding's padding row zero, LayerNorm weight 1 and bias 0.

    Embeddings come last, so a Linear that shares an Embedding's weight (the tied MLM decoder) keeps the zero row.
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, mean=0.0, std=std)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)
    for sub in module.modules():
        if isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, mean=0.0, std=std)
            if sub.padding_idx is not None:
                with torch.no_grad():
                    sub.weight[sub.padding_idx].zero_()


class BertEmbeddings(nn.Module):
    """word + position + token-type embeddings, LayerNorm, dropout."""

    def __init__(self, vocab_size: int, hidden_size: int, max_position_embeddings: int, type_vocab_size: int,
                 pad_id: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_id)
        self.position_embeddings = nn.Embedding(max_position_embeddings, hidden_size)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        summed = (self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
                  + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.LayerNorm(summed))


class BertSelfAttention(nn.Module):
    def __init__(self, hidden_size: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query, self.key, self.value = (nn.Linear(hidden_size, hidden_size) for _ in range(3))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(hidden)), self._split(self.key(hidden)), self._split(self.value(hidden))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return out.transpose(1, 2).reshape(hidden.shape)


class BertSelfOutput(nn.Module):
    """Projection, dropout, then Add&Norm with the sublayer's input (used after attention and after the FFN)."""

    def __init__(self, in_size: int, hidden_size: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, hidden_size: int, heads: int, eps: float, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.self = BertSelfAttention(hidden_size, heads, attention_dropout)
        self.output = BertSelfOutput(hidden_size, hidden_size, eps, dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, mask), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """Self-attention + Add&Norm, then GELU feed-forward + Add&Norm."""

    def __init__(self, hidden_size: int, heads: int, intermediate_size: int, eps: float, dropout: float,
                 attention_dropout: float) -> None:
        super().__init__()
        self.attention = BertAttention(hidden_size, heads, eps, dropout, attention_dropout)
        self.intermediate = BertIntermediate(hidden_size, intermediate_size)
        self.output = BertSelfOutput(intermediate_size, hidden_size, eps, dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, layers: int, **kwargs: Any) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(**kwargs) for _ in range(layers))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden, mask)
        return hidden


class BertPooler(nn.Module):
    """tanh(dense(hidden state of [CLS]))."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    """The encoder: (sequence output [B, T, H], pooled [CLS] output [B, H])."""

    def __init__(self, vocab_size: int, hidden_size: int = 768, num_hidden_layers: int = 12,
                 num_attention_heads: int = 12, intermediate_size: int = 3072, max_position_embeddings: int = 512,
                 type_vocab_size: int = 2, pad_id: int = 0, layer_norm_eps: float = 1e-12,
                 hidden_dropout_prob: float = 0.1, attention_probs_dropout_prob: float = 0.1,
                 initializer_range: float = 0.02) -> None:
        super().__init__()
        self.initializer_range = initializer_range
        self.embeddings = BertEmbeddings(vocab_size, hidden_size, max_position_embeddings, type_vocab_size, pad_id,
                                         layer_norm_eps, hidden_dropout_prob)
        self.encoder = BertEncoder(num_hidden_layers, hidden_size=hidden_size, heads=num_attention_heads,
                                   intermediate_size=intermediate_size, eps=layer_norm_eps,
                                   dropout=hidden_dropout_prob, attention_dropout=attention_probs_dropout_prob)
        self.pooler = BertPooler(hidden_size)
        init_bert_weights(self, initializer_range)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask.bool()[:, None, None, :]  # every query may attend to every real token
        hidden = self.encoder(self.embeddings(input_ids, token_type_ids), mask)
        return hidden, self.pooler(hidden)

    def hf_config(self) -> dict[str, Any]:
        """This encoder's sizes as a Hugging Face BertConfig dict (what config.json holds)."""
        embeddings, first = self.embeddings, self.encoder.layer[0]
        return {
            "model_type": "bert", "vocab_size": embeddings.word_embeddings.num_embeddings,
            "hidden_size": embeddings.word_embeddings.embedding_dim, "num_hidden_layers": len(self.encoder.layer),
            "num_attention_heads": first.attention.self.heads,
            "intermediate_size": first.intermediate.dense.out_features,
            "max_position_embeddings": embeddings.position_embeddings.num_embeddings,
            "type_vocab_size": embeddings.token_type_embeddings.num_embeddings,
            "layer_norm_eps": embeddings.LayerNorm.eps, "hidden_dropout_prob": embeddings.dropout.p,
            "attention_probs_dropout_prob": first.attention.self.dropout, "hidden_act": "gelu",
            "position_embedding_type": "absolute", "pad_token_id": embeddings.word_embeddings.padding_idx or 0,
            "initializer_range": self.initializer_range,
        }


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """Masked-LM head: transform, then the (tied) word-embedding matrix and an output bias."""

    def __init__(self, hidden_size: int, vocab_size: int, eps: float) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(hidden_size, eps)
        self.decoder = nn.Linear(hidden_size, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # one fused matmul-and-add (addmm): adding the bias afterwards is another pass over [tokens, vocab]
        return F.linear(self.transform(hidden), self.decoder.weight, self.bias)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, hidden_size: int, vocab_size: int, eps: float) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(hidden_size, vocab_size, eps)
        self.seq_relationship = nn.Linear(hidden_size, 2)


class BertForPreTraining(nn.Module):
    """BERT with the masked-LM and next-sentence heads: (MLM logits [B, T, V], NSP logits [B, 2]).

    `model.pretrained` continues pre-training from a checkpoint, as BertClassifier's does: its sizes and weights
    (heads a checkpoint lacks start fresh); the dropout rates stay those given.
    """

    accepts = ("masked_lm",)
    output_names = ("mlm_logits", "nsp_logits")

    def __init__(self, vocab_size: int, pad_id: int = 0, **config: Any) -> None:
        super().__init__()
        self.bert = BertModel(vocab_size, pad_id=pad_id, **config)
        hidden, eps = self.bert.pooler.dense.in_features, self.bert.embeddings.LayerNorm.eps
        self.cls = BertPreTrainingHeads(hidden, vocab_size, eps)
        init_bert_weights(self.cls, self.bert.initializer_range)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tied, as in the paper

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        return self.cls.predictions(hidden), self.cls.seq_relationship(pooled)


# the sizes that make a checkpoint's architecture (dropout rates are a training choice and stay configurable)
ARCHITECTURE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "initializer_range")


class BertClassifier(nn.Module):
    """BERT fine-tuning for single sentences or pairs: dropout + linear on the pooled [CLS] output.

    `model.pretrained` is a Hugging Face folder (config.json, weights, vocab.txt or tokenizer.json) or hub name, or
    a dlkit run (folder, .ckpt, run id or `latest`; pre-training or fine-tuning): its encoder, sizes and vocabulary
    are used, and its classifier head too when it has as many labels as the data. Without it the encoder starts
    from scratch at the given size.
    """

    accepts = ("text_classification",)
    # texts are framed [CLS] ... [SEP], as in pre-training
    data_settings = {"add_special_tokens": True}

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int = 0, classifier_dropout: float = 0.1,
                 **config: Any) -> None:
        super().__init__()
        self.bert = BertModel(vocab_size, pad_id=pad_id, **config)
        self.dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Linear(self.bert.pooler.dense.out_features, num_classes)
        init_bert_weights(self.classifier, self.bert.initializer_range)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        _, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(pooled))
