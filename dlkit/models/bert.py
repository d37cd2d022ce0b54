"""BERT (Devlin et al. 2019): a Transformer encoder over token + position + segment embeddings.

Parameter names follow Hugging Face's BertModel / BertForPreTraining one to one (`bert.encoder.layer.0.
attention.self.query.weight`, `cls.predictions.transform.dense.weight`, ...), so their checkpoints load as they
are. Attention runs through torch's scaled_dot_product_attention.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlkit.errors import DlkitError, UsageError

log = logging.getLogger("dlkit")


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

    `pretrained` continues pre-training from a checkpoint, as BertClassifier's does: its sizes and weights
    (heads a checkpoint lacks start fresh); the dropout rates stay those given.
    """

    accepts = ("masked_lm",)

    def __init__(self, vocab_size: int, pad_id: int = 0, pretrained: str | None = None, **config: Any) -> None:
        super().__init__()
        source = _pretrained_source(pretrained, vocab_size) if pretrained else None
        if source is not None:
            vocab_size, pad_id, config = source["vocab_size"], source["pad_id"], {**config, **source["sizes"]}
        self.bert = BertModel(vocab_size, pad_id=pad_id, **config)
        hidden, eps = self.bert.pooler.dense.in_features, self.bert.embeddings.LayerNorm.eps
        self.cls = BertPreTrainingHeads(hidden, vocab_size, eps)
        init_bert_weights(self.cls, self.bert.initializer_range)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tied, as in the paper
        if source is not None:
            state = {k: v for k, v in pretrained_state(source["ref"]).items() if not k.startswith("classifier.")}
            fresh = load_weights(self, state, source["ref"], optional=(
                "cls.predictions.", "cls.seq_relationship.", "bert.pooler."))
            if fresh:
                log.info("model.pretrained=%s has no %s weights: they start fresh", source["ref"], ", ".join(fresh))

    def inference_settings(self) -> dict[str, Any]:
        """Model settings that rebuild this architecture without model.pretrained (see encoder_settings)."""
        return encoder_settings(self.bert)

    @staticmethod
    def data_settings(model_cfg: Any) -> dict[str, Any]:
        """What the data must use with this model: a checkpoint's own vocabulary (see pretrained_settings)."""
        return pretrained_settings(model_cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        return self.cls.predictions(hidden), self.cls.seq_relationship(pooled)


# the sizes that make a checkpoint's architecture (dropout rates are a training choice and stay configurable)
ARCHITECTURE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "initializer_range")
HF_CONFIG_KEYS = ("vocab_size", *ARCHITECTURE_KEYS, "hidden_dropout_prob", "attention_probs_dropout_prob")


HF_FILES = ["config.json", "*.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json", "tokenizer_config.json"]
OLD_NORM_NAMES = {"gamma": "LayerNorm.weight", "beta": "LayerNorm.bias"}
RUN_ID = re.compile(r"(?:\d{4}-\d{2}-\d{2}/)?(?:\d{2}-\d{2}-\d{2}-)?[0-9a-f]{6}")


def encoder_settings(bert: BertModel) -> dict[str, Any]:
    """The model settings that rebuild this encoder's architecture without model.pretrained (kept in checkpoints,
    so predict works after the pretrained folder is gone): its sizes, vocabulary size and padding id."""
    config = bert.hf_config()
    return {"pretrained": None, "vocab_size": config["vocab_size"], "pad_id": config["pad_token_id"],
            **{k: config[k] for k in ARCHITECTURE_KEYS}}


def resolve_pretrained(ref: str | Path, output_dir: str | Path = "outputs") -> str:
    """model.pretrained as loadable: an existing folder or file as an absolute path, a dlkit run id (9af716) or
    `latest` as its run folder under output_dir; anything else (a Hugging Face hub name) unchanged."""
    from dlkit.run_folder import find_run

    path = Path(ref).expanduser()
    if path.exists():
        return str(path.resolve())
    if str(ref) == "latest" or RUN_ID.fullmatch(str(ref)):
        return str(find_run(str(ref), output_dir))
    return str(ref)


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
                         "(bert-base-uncased) or a dlkit run (folder, run id or latest).")
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


def pretrained_info(ref: str | Path) -> dict[str, Any]:
    """What a checkpoint says about itself, without its weights: sizes (BertModel keywords of its architecture),
    vocab_size, pad_id, the tokenizer the data must use and whether it lowercases."""
    checkpoint = dlkit_checkpoint(ref)
    if checkpoint is not None:
        config, spec = checkpoint["dlkit"].get("config") or {}, checkpoint["dlkit"]["spec"]
        model_cfg = config.get("model") or {}
        tokenizer_cfg = (config.get("data") or {}).get("tokenizer") or {}
        return {"ref": str(ref), "sizes": {k: model_cfg[k] for k in ARCHITECTURE_KEYS if k in model_cfg},
                "vocab_size": spec["vocab_size"], "pad_id": spec["pad_id"], "tokenizer": spec["tokenizer_path"],
                "lowercase": bool(tokenizer_cfg.get("lowercase", True))}
    folder = hf_folder(ref)
    if not (folder / "config.json").is_file():
        raise UsageError(f"model.pretrained={ref}: neither a dlkit run with a checkpoint nor a Hugging Face model "
                         "folder (no config.json); give a run folder, run id or latest, or a Hugging Face folder.")
    config = read_json_file(folder / "config.json")
    tokenizer_config = folder / "tokenizer_config.json"
    # vocab.txt alone: lowercased unless tokenizer_config.json says otherwise, as Hugging Face's BertTokenizer
    lowercase = read_json_file(tokenizer_config).get("do_lower_case", True) if tokenizer_config.is_file() \
        else True
    return {"ref": str(ref), "sizes": {k: config[k] for k in ARCHITECTURE_KEYS if k in config},
            "vocab_size": config["vocab_size"], "pad_id": config.get("pad_token_id") or 0, "tokenizer": str(folder),
            "lowercase": bool(lowercase)}


def pretrained_state(ref: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's weights named as in BertForPreTraining / BertClassifier (bert.*, cls.*, classifier.*)."""
    checkpoint = dlkit_checkpoint(ref)
    if checkpoint is not None:
        return {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    folder = hf_folder(ref)
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        raw = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        raw = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise UsageError(f"model.pretrained={ref}: {folder} has no model.safetensors or pytorch_model.bin.")
    state = {}
    for key, value in raw.items():
        # BertModel checkpoints name the encoder's parts without the `bert.` prefix; old ones say gamma/beta
        key = key if key.startswith(("bert.", "cls.", "classifier.")) else f"bert.{key}"
        state[re.sub(r"LayerNorm\.(gamma|beta)$", lambda m: OLD_NORM_NAMES[m.group(1)], key)] = value
    state.setdefault("cls.predictions.decoder.weight", state.get("bert.embeddings.word_embeddings.weight"))
    for key in ("cls.predictions.decoder.bias", "bert.embeddings.position_ids"):  # HF's copy of cls.predictions.bias
        state.pop(key, None)
    return {k: v for k, v in state.items() if v is not None}


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path,
                 optional: tuple[str, ...] = ()) -> list[str]:
    """Load state into model; parts named by the `optional` prefixes may be absent and stay as initialised.

    Returns the optional parts that were absent; anything else missing, unexpected or of another shape is an error.
    """
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    required = [k for k in missing if not k.startswith(optional)]
    if required or unexpected:
        raise ValueError(f"{source}: weights do not match BERT (missing {required[:3]}, unexpected {unexpected[:3]})")
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if wrong:
        raise ValueError(f"{source}: weights do not match BERT ({wrong[0]})")
    model.load_state_dict(state, strict=False)
    return [p.rstrip(".") for p in optional if any(k.startswith(p) for k in missing)]


def read_json_file(path: Path) -> dict[str, Any]:
    """A Hugging Face folder's JSON file; a damaged one is refused naming the file and the place."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        where = f" (line {err.lineno}, column {err.colno}: {err.msg})" if isinstance(err, json.JSONDecodeError) else ""
        raise UsageError(f"{path} is not valid JSON{where}: model.pretrained needs an intact Hugging Face folder "
                         "(download it again).") from err
    if not isinstance(value, dict):
        raise UsageError(f"{path} holds a JSON {type(value).__name__}, not an object: model.pretrained needs an intact "
                         "Hugging Face folder (download it again).")
    return value


def load_hf_pretraining(ref: str | Path) -> BertForPreTraining:
    """A BertForPreTraining from a Hugging Face folder or hub name (config.json + safetensors or .bin weights)."""
    info = pretrained_info(ref)
    config = read_json_file(hf_folder(ref) / "config.json")
    dropouts = {k: config[k] for k in ("hidden_dropout_prob", "attention_probs_dropout_prob") if k in config}
    return BertForPreTraining(info["vocab_size"], pretrained=str(ref), **dropouts)


def _pretrained_source(ref: str, vocab_size: int) -> dict[str, Any]:
    """pretrained_info of ref (a run id or `latest` resolved under ./outputs), its data's vocabulary checked."""
    info = pretrained_info(resolve_pretrained(ref))
    if vocab_size > info["vocab_size"]:
        raise UsageError(f"model.pretrained={ref} knows {info['vocab_size']} tokens but the data has {vocab_size}: "
                         f"the data must use the checkpoint's tokenizer (data.tokenizer.path={info['tokenizer']}).")
    return info


def _config_root(model_cfg: Any) -> Any:
    """The whole config a model config node belongs to (None for a plain dict)."""
    get_root = getattr(model_cfg, "_get_root", None)
    root = get_root() if get_root is not None else None
    return root if root is not None and root is not model_cfg else None


def pretrained_settings(model_cfg: Any) -> dict[str, Any]:
    """For model.pretrained: the data settings its checkpoint needs (its tokenizer and casing, at most as many
    tokens as it has positions), after pinning the model config down to what was loaded.

    A run id or `latest` becomes the run folder (resolved now, before this run's own folder exists), and the
    checkpoint's sizes replace the configured ones, so the run's config.yaml says which model was trained.
    """
    pretrained = model_cfg.get("pretrained")
    if not pretrained:
        return {}
    root = _config_root(model_cfg)
    output_dir = ((root.get("paths") or {}).get("output_dir") if root is not None else None) or "outputs"
    resolved = resolve_pretrained(pretrained, output_dir)
    info = pretrained_info(resolved)
    model_cfg["pretrained"] = resolved
    for key, value in info["sizes"].items():
        if key in model_cfg:
            model_cfg[key] = value
    settings: dict[str, Any] = {"tokenizer": {"path": info["tokenizer"], "lowercase": info["lowercase"]}}
    positions = info["sizes"].get("max_position_embeddings")
    max_length = ((root.get("data") or {}).get("max_length") if root is not None else None)
    if positions and (max_length is None or max_length > positions):
        settings["max_length"] = positions
    return settings


class BertClassifier(nn.Module):
    """BERT fine-tuning for single sentences or pairs: dropout + linear on the pooled [CLS] output.

    `pretrained` is a Hugging Face folder (config.json, weights, vocab.txt or tokenizer.json) or hub name, or a
    dlkit run (folder, .ckpt, run id or `latest`; pre-training or fine-tuning): its encoder, sizes and vocabulary
    are used, and its classifier head too when it has as many labels as the data. Without it the encoder starts
    from scratch at the given size.
    """

    accepts = ("text_classification",)

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int = 0, pretrained: str | None = None,
                 classifier_dropout: float = 0.1, **config: Any) -> None:
        super().__init__()
        source = _pretrained_source(pretrained, vocab_size) if pretrained else None
        if source is not None:
            vocab_size, pad_id, config = source["vocab_size"], source["pad_id"], {**config, **source["sizes"]}
        self.bert = BertModel(vocab_size, pad_id=pad_id, **config)
        self.dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Linear(self.bert.pooler.dense.out_features, num_classes)
        init_bert_weights(self.classifier, self.bert.initializer_range)
        if source is not None:
            self._load(source["ref"], num_classes)

    def _load(self, ref: str, num_classes: int) -> None:
        state = {k: v for k, v in pretrained_state(ref).items() if not k.startswith("cls.")}
        head = state.get("classifier.weight")
        if head is not None and head.shape[0] != num_classes:
            log.info("model.pretrained=%s classifies into %d labels, the data has %d: the classifier head starts "
                     "fresh", ref, head.shape[0], num_classes)
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        elif head is not None:
            log.info("model.pretrained=%s: its classifier head (%d labels) is loaded too", ref, num_classes)
        fresh = load_weights(self, state, ref, optional=("classifier.", "bert.pooler."))
        if "bert.pooler" in fresh:
            log.info("model.pretrained=%s has no pooler weights: the pooler starts fresh", ref)

    def inference_settings(self) -> dict[str, Any]:
        """Model settings that rebuild this architecture without model.pretrained (see encoder_settings)."""
        return encoder_settings(self.bert)

    @staticmethod
    def data_settings(model_cfg: Any) -> dict[str, Any]:
        """What the data must use with this model: [CLS]/[SEP] framing, and a checkpoint's own vocabulary."""
        return {"add_special_tokens": True, **pretrained_settings(model_cfg)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        _, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(pooled))


def dlkit_checkpoint(ref: str | Path) -> dict[str, Any] | None:
    """The checkpoint of a dlkit run folder (its best, else last) or .ckpt file; None for anything else."""
    from dlkit.run_folder import best_checkpoint, torch_load_lazily

    path = Path(ref).expanduser()
    if path.is_dir():
        found = best_checkpoint(path / "checkpoints")
        if found is None:
            return None
        path = found
    if path.suffix != ".ckpt" or not path.is_file():
        return None
    checkpoint = torch_load_lazily(path)
    return checkpoint if isinstance(checkpoint, dict) and "dlkit" in checkpoint else None


def load_dlkit_encoder(ref: str | Path) -> BertModel:
    """The BERT encoder of a dlkit run (pre-training or fine-tuning), with its trained weights."""
    if dlkit_checkpoint(ref) is None:
        raise ValueError(f"{ref} is not a dlkit run or checkpoint")
    return BertForPreTraining(0, pretrained=str(ref)).bert


def bert_adamw(params: Any, lr: float = 3e-5, weight_decay: float = 0.01, no_decay_1d: bool = True,
               **kwargs: Any) -> torch.optim.AdamW:
    """AdamW for BERT's fine-tuning recipe: with no_decay_1d, the 1-D parameters (biases, LayerNorm weights, the
    masked-LM output bias) get no weight decay, only the weight matrices and embeddings do."""
    params = list(params)
    if not no_decay_1d or (params and isinstance(params[0], dict)):  # groups given by the caller: as they are
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kwargs)
    groups = [{"params": [p for p in params if p.dim() > 1], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=weight_decay, **kwargs)
