"""The contracts between data, models and tasks: what a datamodule produces (DataSpec) and what dlkit reads from a
model class besides its constructor and forward (ModelContract)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol


@dataclass
class DataSpec:
    """Shapes, vocabulary and labels of a dataset; a model's constructor takes the fields it names.

    Batches by kind:
      image_classification: (images [B, C, H, W] float, labels [B] long)
      text_classification:  ({"input_ids", "attention_mask", "token_type_ids"} [B, T] long, labels [B])
      seq2seq:              {"src_ids", "src_mask", "tgt_ids", "tgt_mask"} [B, T] long (tgt has BOS ... EOS)
      masked_lm:            {"input_ids", "attention_mask", "token_type_ids", "mlm_labels", "nsp_labels"}
    """

    kind: str
    num_classes: int | None = None
    class_names: list[str] | None = None
    input_shape: tuple[int, ...] | None = None
    vocab_size: int | None = None
    pad_id: int = 0
    src_vocab_size: int | None = None
    tgt_vocab_size: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    mask_id: int | None = None
    max_length: int | None = None
    tokenizer_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what goes into checkpoints and metadata files)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataSpec:
        """A spec back from as_dict() (as checkpoints store it); unknown keys are ignored."""
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        if known.get("input_shape") is not None:
            known["input_shape"] = tuple(known["input_shape"])
        return cls(**known)


class ModelContract(Protocol):
    """What dlkit reads from a model class (a plain nn.Module) besides its constructor and forward; each is an
    optional class attribute, read with model_declares().

    accepts:       the data kinds it trains on (DataSpec.kind); empty: any. A mismatch is refused before any work.
    data_settings: settings merged into the data config (BERT: {"add_special_tokens": True}, [CLS] ... [SEP]).
    output_names:  the names of the tensors forward returns, for exports (default logits, logits_<i>).

    The constructor takes the DataSpec fields it names (num_classes, input_shape, vocab_size, pad_id, ...) and
    `spec` for the whole spec.
    """

    accepts: ClassVar[tuple[str, ...]]
    data_settings: ClassVar[dict[str, Any]]
    output_names: ClassVar[tuple[str, ...]]


MODEL_DEFAULTS: dict[str, Any] = {"accepts": (), "data_settings": {}, "output_names": ()}


def model_declares(model: Any, name: str) -> Any:
    """What a model class (or instance) declares as `name` of ModelContract, or the default when it does not."""
    if name not in MODEL_DEFAULTS:
        raise KeyError(f"{name!r} is not part of ModelContract ({', '.join(MODEL_DEFAULTS)})")
    return getattr(model, name, MODEL_DEFAULTS[name])
