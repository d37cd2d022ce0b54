"""What a datamodule produces: the contract between data, models and tasks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["image_classification", "text_classification", "seq2seq", "masked_lm"]
KINDS: tuple[str, ...] = ("image_classification", "text_classification", "seq2seq", "masked_lm")


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
