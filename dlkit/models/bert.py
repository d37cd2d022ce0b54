"""BERT (Devlin et al. 2019): a Transformer encoder over token + position + segment embeddings.

Parameter names follow Hugging Face's BertModel / BertForPreTraining one to one (`bert.encoder.layer.0.
attention.self.query.weight`, `cls.predictions.transform.dense.weight`, ...), so their checkpoints load as they
are. Attention runs through torch's scaled_dot_product_attention.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlkit.errors import DlkitError, UsageError


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
                 hidden_dropout_prob: float = 0.1, attention_probs_dropout_prob: float = 0.1) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(vocab_size, hidden_size, max_position_embeddings, type_vocab_size, pad_id,
                                         layer_norm_eps, hidden_dropout_prob)
        self.encoder = BertEncoder(num_hidden_layers, hidden_size=hidden_size, heads=num_attention_heads,
                                   intermediate_size=intermediate_size, eps=layer_norm_eps,
                                   dropout=hidden_dropout_prob, attention_dropout=attention_probs_dropout_prob)
        self.pooler = BertPooler(hidden_size)

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
        return self.decoder(self.transform(hidden)) + self.bias


class BertPreTrainingHeads(nn.Module):
    def __init__(self, hidden_size: int, vocab_size: int, eps: float) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(hidden_size, vocab_size, eps)
        self.seq_relationship = nn.Linear(hidden_size, 2)


class BertForPreTraining(nn.Module):
    """BERT with the masked-LM and next-sentence heads: (MLM logits [B, T, V], NSP logits [B, 2])."""

    accepts = ("masked_lm",)

    def __init__(self, vocab_size: int, pad_id: int = 0, **config: Any) -> None:
        super().__init__()
        self.bert = BertModel(vocab_size, pad_id=pad_id, **config)
        hidden, eps = self.bert.pooler.dense.in_features, self.bert.embeddings.LayerNorm.eps
        self.cls = BertPreTrainingHeads(hidden, vocab_size, eps)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tied, as in the paper

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        return self.cls.predictions(hidden), self.cls.seq_relationship(pooled)


HF_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_dropout_prob",
                  "attention_probs_dropout_prob")


HF_FILES = ["config.json", "*.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json", "tokenizer_config.json"]


def hf_folder(ref: str | Path) -> Path:
    """The local folder of a Hugging Face BERT: `ref` itself when it is a folder, else the hub model named `ref`.

    Hub models are downloaded once into the Hugging Face cache (HF_HOME); with HF_HUB_OFFLINE=1 the cached
    copy is used without asking the network.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    name = str(ref)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UsageError(f"model.pretrained={ref}: no such folder; give a Hugging Face model folder, a hub name "
                         "(bert-base-uncased) or a dlkit run.")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise UsageError(f"model.pretrained={ref} is not a local folder; hub names need huggingface_hub: "
                         "pip install 'dlkit[hf]'.") from err
    try:
        return Path(snapshot_download(name, allow_patterns=HF_FILES))
    except Exception as err:  # noqa: BLE001 - the hub fails in many ways (offline, unknown name, no access)
        raise DlkitError(f"model.pretrained={ref}: could not get it from the Hugging Face hub "
                         f"({type(err).__name__}). Check the name, or download it once online and give its folder."
                         ) from err


def load_hf_pretraining(ref: str | Path) -> BertForPreTraining:
    """A BertForPreTraining from a Hugging Face folder or hub name (config.json + safetensors or .bin weights)."""
    folder = hf_folder(ref)
    config = json.loads((folder / "config.json").read_text())
    model = BertForPreTraining(pad_id=config.get("pad_token_id", 0),
                               **{k: config[k] for k in HF_CONFIG_KEYS if k in config})
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
    else:
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    state = {k if k.startswith(("bert.", "cls.")) else f"bert.{k}": v for k, v in state.items()}
    state.setdefault("cls.predictions.decoder.weight", state["bert.embeddings.word_embeddings.weight"])
    state.pop("cls.predictions.decoder.bias", None)  # the same tensor as cls.predictions.bias in HF
    state.pop("bert.embeddings.position_ids", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # a BertModel checkpoint has no pre-training heads: those stay freshly initialised
    has_heads = any(k.startswith("cls.") for k in state if k != "cls.predictions.decoder.weight")
    missing = [k for k in missing if has_heads or not k.startswith("cls.")]
    if missing or unexpected:
        raise ValueError(f"{folder}: weights do not match BERT (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


class BertClassifier(nn.Module):
    """BERT fine-tuning for single sentences or pairs: dropout + linear on the pooled [CLS] output.

    `pretrained` is a Hugging Face folder (config.json, weights, vocab.txt) whose encoder and vocabulary are
    used; without it the encoder starts from scratch at the given size.
    """

    accepts = ("text_classification",)
    """`pretrained` may also be a dlkit pre-training run folder or .ckpt (model=bert_pretrain)."""

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int = 0, pretrained: str | None = None,
                 classifier_dropout: float = 0.1, **config: Any) -> None:
        super().__init__()
        if pretrained and dlkit_checkpoint(pretrained) is not None:
            self.bert = load_dlkit_encoder(pretrained)
        elif pretrained:
            self.bert = load_hf_pretraining(pretrained).bert
        else:
            self.bert = BertModel(vocab_size, pad_id=pad_id, **config)
        self.dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Linear(self.bert.pooler.dense.out_features, num_classes)

    @staticmethod
    def data_settings(model_cfg: Any) -> dict[str, Any]:
        """What the data must use with this model: the checkpoint's own vocabulary and [CLS]/[SEP] framing."""
        settings: dict[str, Any] = {"add_special_tokens": True}
        pretrained = model_cfg.get("pretrained")
        if pretrained:
            checkpoint = dlkit_checkpoint(pretrained)
            path = checkpoint["dlkit"]["spec"]["tokenizer_path"] if checkpoint else str(hf_folder(pretrained))
            settings["tokenizer"] = {"path": path, "lowercase": True}
        return settings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        _, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(pooled))


def dlkit_checkpoint(ref: str | Path) -> dict[str, Any] | None:
    """The checkpoint of a dlkit run folder (best, else last) or .ckpt file; None for anything else."""
    path = Path(ref).expanduser()
    if path.is_dir():
        found = sorted((path / "checkpoints").glob("best-*.ckpt")) or sorted((path / "checkpoints").glob("last.ckpt"))
        if not found:
            return None
        path = found[-1]
    if path.suffix != ".ckpt" or not path.is_file():
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint if "dlkit" in checkpoint else None


def load_dlkit_encoder(ref: str | Path) -> BertModel:
    """The BERT encoder of a dlkit pre-training run, with its trained weights."""
    checkpoint = dlkit_checkpoint(ref)
    if checkpoint is None:
        raise ValueError(f"{ref} is not a dlkit run or checkpoint")
    sizes = {k: v for k, v in checkpoint["dlkit"]["config"]["model"].items() if k in HF_CONFIG_KEYS}
    spec = checkpoint["dlkit"]["spec"]
    encoder = BertModel(spec["vocab_size"], pad_id=spec["pad_id"], **sizes)
    prefix = "model.bert."
    encoder.load_state_dict({k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)})
    return encoder
