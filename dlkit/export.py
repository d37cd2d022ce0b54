"""Export a trained model to ONNX or TorchScript, with a metadata file saying how to feed it."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlkit.data.spec import model_declares
from dlkit.errors import DlkitError, UsageError, did_you_mean
from dlkit.inference import Loaded

FORMATS = ("onnx", "torchscript", "huggingface")


class _Positional(nn.Module):
    """The model with named tensor inputs turned into positional ones (what exporters trace)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors)))


def example_inputs(loaded: Loaded) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """Input names and one real test batch to trace the model with."""
    batch = next(iter(loaded.datamodule.test_dataloader()))
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    if isinstance(inputs, dict):  # the batch keys the model's forward takes, in its order
        names = [n for n in inspect.signature(loaded.task.model.forward).parameters if n in inputs]
        return names, tuple(inputs[n] for n in names)
    return ["input"], (inputs,)


def _length_axis(name: str) -> str:
    """The name of a tensor's dynamic length: seq2seq sources and targets differ in length."""
    return "target" if name.startswith("tgt") else "sequence"


def output_names(model: nn.Module, outputs: tuple[torch.Tensor, ...]) -> list[str]:
    """One name per output tensor: the model's own `output_names` (ModelContract), else logits / logits_<i>."""
    declared = model_declares(model, "output_names")
    if declared and len(declared) == len(outputs):
        return list(declared)
    return ["logits"] if len(outputs) == 1 else [f"logits_{i}" for i in range(len(outputs))]


def _shape(tensor: torch.Tensor, axes: dict[int, str]) -> list[int | str]:
    """A tensor's shape with its dynamic axes given by name (batch, sequence, ...)."""
    return [axes.get(axis, size) for axis, size in enumerate(tensor.shape)]


# the packages each format needs beyond dlkit's own dependencies, and the extra that installs them
NEEDS = {"onnx": (("onnx",), "export")}


def check_format(fmt: str) -> None:
    """Refuse an unknown export format, or one whose packages are not installed (before any model is loaded and
    any folder is made)."""
    import importlib

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: choose one of {', '.join(FORMATS)}.{did_you_mean(fmt, FORMATS)}")
    modules, extra = NEEDS.get(fmt, ((), ""))
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UsageError(f"--format {fmt} needs the {module} package, which is not installed: "
                             f"pip install 'dlkit[{extra}]'") from err


def export(loaded: Loaded, fmt: str, out_dir: Path) -> dict[str, Any]:
    """Write model.onnx or model.pt plus model.json (labels, inputs, outputs, and the pre- and post-processing a
    client repeats to get `dlkit predict`'s answers) and any tokenizer.json into out_dir; return the metadata.

    Batch size and sequence lengths stay dynamic; model.json names those axes instead of the traced sizes.
    """
    check_format(fmt)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "huggingface":
        return export_huggingface(loaded, out_dir)
    names, tensors = example_inputs(loaded)
    model = loaded.task.model.eval()
    wrapped = _Positional(model, names).eval() if names != ["input"] else model
    target = out_dir / ("model.onnx" if fmt == "onnx" else "model.pt")
    input_axes = {n: {0: "batch", **({1: _length_axis(n)} if t.dim() == 2 else {})} for n, t in zip(names, tensors)}
    with torch.no_grad():
        output = wrapped(*tensors)
    outputs = tuple(output) if isinstance(output, (tuple, list)) else (output,)
    outs = output_names(model, outputs)
    # per-token outputs ([batch, length, vocab]) follow the length of the last input (the target for seq2seq)
    output_axes = {n: {0: "batch", **({1: _length_axis(names[-1])} if o.dim() == 3 else {})}
                   for n, o in zip(outs, outputs)}
    try:
        if fmt == "onnx":
            torch.onnx.export(wrapped, tensors, str(target), input_names=names, output_names=outs,
                              dynamic_axes={**input_axes, **output_axes}, dynamo=False)
        else:
            torch.jit.save(torch.jit.trace(wrapped, tensors, check_trace=False), str(target))
    except ImportError as err:
        raise UsageError(f"ONNX export needs the onnx packages: pip install 'dlkit[export]' ({err.name}).") from err
    except Exception as err:  # noqa: BLE001 - exporters fail in many ways; say which model and why
        raise DlkitError(f"could not export {type(model).__name__} to {fmt}: {type(err).__name__}: {err}") from err
    if fmt == "onnx":  # the exporter drops inputs the model never reads (token_type_ids of most classifiers)
        import onnx

        kept = {i.name for i in onnx.load(str(target)).graph.input}
        names, tensors = zip(*[(n, t) for n, t in zip(names, tensors) if n in kept])
    spec = loaded.datamodule.spec
    metadata = {
        "format": fmt, "file": target.name, "checkpoint": str(loaded.checkpoint), "kind": spec.kind,
        "labels": spec.class_names,
        "inputs": [{"name": n, "dtype": str(t.dtype).replace("torch.", ""), "shape": _shape(t, input_axes[n])}
                   for n, t in zip(names, tensors)],
        "outputs": [{"name": n, "dtype": str(o.dtype).replace("torch.", ""), "shape": _shape(o, output_axes[n])}
                    for n, o in zip(outs, outputs)],
        "output": outs[0],
        # raw input -> the inputs above, and the outputs -> what `dlkit predict` prints, each step with its numbers
        "preprocessing": loaded.datamodule.client_preprocessing(out_dir),
        "postprocessing": loaded.task.client_postprocessing(),
    }
    (out_dir / "model.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return metadata


def export_huggingface(loaded: Loaded, out_dir: Path) -> dict[str, Any]:
    """A BERT run as a Hugging Face model folder: config.json, model.safetensors and the tokenizer.

    Pre-training runs become BertForPreTraining, fine-tuned classifiers BertForSequenceClassification (with
    their labels); `transformers` loads the folder with from_pretrained, and dlkit with model.pretrained=FOLDER.
    """
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, processors

    from dlkit.models.bert import BertClassifier, BertForPreTraining

    model, spec = loaded.task.model, loaded.datamodule.spec
    if isinstance(model, BertForPreTraining):
        config = {"architectures": ["BertForPreTraining"], **model.bert.hf_config()}
    elif isinstance(model, BertClassifier):
        labels = list(spec.class_names or range(model.classifier.out_features))
        config = {"architectures": ["BertForSequenceClassification"], **model.bert.hf_config(),
                  "id2label": {str(i): str(name) for i, name in enumerate(labels)},
                  "label2id": {str(name): i for i, name in enumerate(labels)}}
    else:
        raise UsageError(f"--format huggingface is for BERT runs, not {type(model).__name__}; "
                         "use --format onnx or torchscript.")
    # the MLM decoder shares the word embeddings (Hugging Face ties them again on load)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "cls.predictions.decoder.weight"}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tokenizer = Tokenizer.from_file(spec.tokenizer_path)
    if tokenizer.token_to_id("[CLS]") is not None and tokenizer.token_to_id("[SEP]") is not None:
        # transformers' tokenizers frame inputs themselves: [CLS] a [SEP] (b [SEP]), as dlkit's data does
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    tokenizer.save(str(out_dir / "tokenizer.json"))
    wordpiece = json.loads(tokenizer.to_str())["model"]["type"] == "WordPiece"
    if wordpiece:  # BERT's own tokenizer reads vocab.txt: one token a line, in id order
        vocab = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
        (out_dir / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    specials = {f"{name}_token": f"[{name.upper()}]" for name in ("pad", "unk", "cls", "sep", "mask")}
    tokenizer_config = {"tokenizer_class": "BertTokenizerFast" if wordpiece else "PreTrainedTokenizerFast",
                        "model_max_length": spec.max_length,
                        **{k: t for k, t in specials.items() if tokenizer.token_to_id(t) is not None}}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
    return {"format": "huggingface", "file": "model.safetensors", "architectures": config["architectures"]}
