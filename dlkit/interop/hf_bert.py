"""BERT checkpoints in: Hugging Face folders and hub models, and dlkit runs, loaded into dlkit's BERT modules.

`model.pretrained` names one. Before the run, pin_pretrained() pins the model config down to the checkpoint's
architecture and the data to its tokenizer; build_model() then builds the module at that size and load() fills it
with the checkpoint's weights (Hugging Face names are dlkit's, see models/bert.py).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlkit.errors import DlkitError, UsageError
from dlkit.models.bert import ARCHITECTURE_KEYS, BertClassifier, BertForPreTraining
from dlkit.runs.checkpoints import dlkit_checkpoint
from dlkit.runs.query import find_run

log = logging.getLogger("dlkit")

def pin_pretrained(model_cfg: Any, output_dir: str | Path, max_length: int | None) -> dict[str, Any]:
    """For model.pretrained: the data settings its checkpoint needs (its tokenizer and casing, at most as many
    tokens as it has positions), after pinning the model config down to what is loaded.

    A run id or `latest` becomes the run folder (resolved now, before this run's own folder exists), and the
    checkpoint's sizes replace the configured ones, so the run's config.yaml says which model was trained.
    """
    pretrained = model_cfg.get("pretrained")
    if not pretrained:
        return {}
    resolved = resolve_pretrained(pretrained, output_dir)
    info = pretrained_info(resolved)
    model_cfg["pretrained"] = resolved
    for key, value in info["sizes"].items():
        if key in model_cfg:
            model_cfg[key] = value
    settings: dict[str, Any] = {"tokenizer": {"path": info["tokenizer"], "lowercase": info["lowercase"]}}
    positions = info["sizes"].get("max_position_embeddings")
    if positions and (max_length is None or max_length > positions):
        settings["max_length"] = positions
    return settings


def architecture(ref: str, vocab_size: int) -> dict[str, Any]:
    """The constructor arguments of the module that loads `ref`: the checkpoint's sizes, vocab_size and pad_id
    (the data's vocabulary must fit in it)."""
    info = pretrained_info(resolve_pretrained(ref))
    if vocab_size > info["vocab_size"]:
        raise UsageError(f"model.pretrained={ref} knows {info['vocab_size']} tokens but the data has {vocab_size}: "
                         f"the data must use the checkpoint's tokenizer (data.tokenizer.path={info['tokenizer']}).")
    return {**info["sizes"], "vocab_size": info["vocab_size"], "pad_id": info["pad_id"]}


def load(model: nn.Module, ref: str) -> dict[str, Any]:
    """Fill a BertClassifier or BertForPreTraining with the weights of `ref` (heads it lacks start fresh); the
    model settings that rebuild this architecture without model.pretrained (kept in checkpoints, so that predict
    works after the pretrained folder is gone)."""
    if isinstance(model, BertClassifier):
        _load_classifier(model, ref)
    elif isinstance(model, BertForPreTraining):
        state = {k: v for k, v in pretrained_state(ref).items() if not k.startswith("classifier.")}
        fresh = load_weights(model, state, ref, optional=("cls.predictions.", "cls.seq_relationship.", "bert.pooler."))
        if fresh:
            log.info("model.pretrained=%s has no %s weights: they start fresh", ref, ", ".join(fresh))
    else:
        raise UsageError(f"model.pretrained={ref}: {type(model).__name__} loads no pretrained checkpoint; "
                         "BERT models do (model=bert, bert_pretrain, ...).")
    config = model.bert.hf_config()
    return {"pretrained": None, "vocab_size": config["vocab_size"], "pad_id": config["pad_token_id"],
            **{k: config[k] for k in ARCHITECTURE_KEYS}}


def _load_classifier(model: BertClassifier, ref: str) -> None:
    num_classes = model.classifier.out_features
    state = {k: v for k, v in pretrained_state(ref).items() if not k.startswith("cls.")}
    head = state.get("classifier.weight")
    if head is not None and head.shape[0] != num_classes:
        log.info("model.pretrained=%s classifies into %d labels, the data has %d: the classifier head starts "
                 "fresh", ref, head.shape[0], num_classes)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    elif head is not None:
        log.info("model.pretrained=%s: its classifier head (%d labels) is loaded too", ref, num_classes)
    fresh = load_weights(model, state, ref, optional=("classifier.", "bert.pooler."))
    if "bert.pooler" in fresh:
        log.info("model.pretrained=%s has no pooler weights: the pooler starts fresh", ref)


HF_FILES = ["config.json", "*.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json", "tokenizer_config.json"]
OLD_NORM_NAMES = {"gamma": "LayerNorm.weight", "beta": "LayerNorm.bias"}
RUN_ID = re.compile(r"(?:\d{4}-\d{2}-\d{2}/)?(?:\d{2}-\d{2}-\d{2}-)?[0-9a-f]{6}")


def resolve_pretrained(ref: str | Path, output_dir: str | Path = "outputs") -> str:
    """model.pretrained as loadable: an existing folder or file as an absolute path, a dlkit run id (9af716) or
    `latest` as its run folder under output_dir; anything else (a Hugging Face hub name) unchanged."""
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
    model = BertForPreTraining(info["vocab_size"], pad_id=info["pad_id"], **info["sizes"], **dropouts)
    load(model, str(ref))
    return model
