"""Sequence-to-sequence: teacher-forced training with label smoothing, decoding, BLEU and exact match."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from dlkit.data.spec import DataSpec
from dlkit.tasks.base import Task

log = logging.getLogger("dlkit")


class Seq2SeqModel(Protocol):
    """What Seq2SeqTask needs of its model (models/transformer.Transformer is one): logits for teacher-forced
    targets, greedy and beam-search decoding, and the longest sequence its positions allow."""

    max_length: int | None

    def __call__(self, src_ids: torch.Tensor, src_mask: torch.Tensor, tgt_ids: torch.Tensor,
                 tgt_mask: torch.Tensor) -> torch.Tensor: ...

    def greedy(self, src_ids: torch.Tensor, src_mask: torch.Tensor, max_length: int | None = None) -> torch.Tensor: ...

    def beam_search(self, src_ids: torch.Tensor, src_mask: torch.Tensor, beam_size: int = 4,
                    length_penalty: float = 0.6, max_length: int | None = None) -> torch.Tensor: ...


class Seq2SeqTask(Task):
    """Batches {src_ids, src_mask, tgt_ids, tgt_mask}; the model gives logits for tgt[:, :-1] -> tgt[:, 1:]."""

    kinds = ("seq2seq",)
    model: Seq2SeqModel

    def __init__(self, model: nn.Module, spec: DataSpec, optimizer: Callable[..., Any],
                 scheduler: Callable[..., dict] | None = None, monitor: str = "val/bleu",
                 label_smoothing: float = 0.1, beam_size: int = 1, length_penalty: float = 0.6,
                 max_decode_length: int | None = None, samples: int = 3, test_beam_size: int | None = None) -> None:
        super().__init__(model, spec, optimizer, scheduler, monitor)
        self.label_smoothing, self.beam_size, self.length_penalty = label_smoothing, beam_size, length_penalty
        self.test_beam_size = test_beam_size
        self.max_decode_length, self.samples = max_decode_length, samples
        self._tokenizer = None
        self._decoded: dict[str, list[tuple[str, str]]] = {}  # stage -> (output, reference) of the epoch

    def tokenizer(self):
        """The target tokenizer: the data's own, as the checkpoint carries it (meta["data"]), else (checkpoints
        written before it did) loaded from the spec's tokenizer file."""
        if self._tokenizer is None:
            from dlkit.data.tokenizers import state_tokenizer

            self._tokenizer = state_tokenizer(self.meta.get("data"), self.spec.tokenizer_path)
        return self._tokenizer

    def text(self, ids: list[int]) -> str:
        kept = [i for i in ids if i not in (self.spec.pad_id, self.spec.bos_id)]
        if self.spec.eos_id in kept:
            kept = kept[: kept.index(self.spec.eos_id)]
        return self.tokenizer().decode(kept)

    def _loss(self, batch: dict[str, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch["tgt_ids"][:, :-1], batch["tgt_ids"][:, 1:]
        logits = self.model(batch["src_ids"], batch["src_mask"], inputs, batch["tgt_mask"][:, :-1])
        smoothing = self.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=self.spec.pad_id, label_smoothing=smoothing)
        real = targets != self.spec.pad_id
        accuracy = ((logits.argmax(-1) == targets) & real).sum() / real.sum().clamp(min=1)
        size = batch["src_ids"].shape[0]
        self.log_mean(stage, "loss", loss, size, prog_bar=True, step=stage == "train")
        self.log_mean(stage, "token_acc", accuracy, size)
        return loss, accuracy

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._loss(batch, "train")[0]

    def decode_limit(self) -> int:
        """Decoding length (with [BOS]): task.max_decode_length, or the longest training target plus a margin.

        Capped by the model's position table; an untrained model otherwise decodes to that cap on every sample.
        """
        cap = self.model.max_length or self.spec.max_length or 256
        if self.max_decode_length:
            return min(int(self.max_decode_length), cap)
        longest = self.spec.extra.get("longest_target") or self.spec.max_length or cap
        return min(int(longest) + max(5, int(longest) // 10), cap)

    def client_postprocessing(self) -> dict[str, Any]:
        """Greedy decoding as Transformer.greedy does it, to the length dlkit decodes to."""
        limit = self.decode_limit()
        return {"output": "logits [batch, target, vocabulary] for the target prefix tgt_ids",
                "bos_id": self.spec.bos_id, "eos_id": self.spec.eos_id, "pad_id": self.spec.pad_id,
                "max_length": limit,
                "steps": (f"tgt_ids = [[bos_id]]; repeat at most max_length - 1 = {limit - 1} times: next = "
                          "argmax(logits[:, -1]) given src_ids, src_mask, tgt_ids and tgt_mask = ones like tgt_ids; "
                          "append next; stop once every row has produced eos_id (after it, a row appends pad_id). "
                          "Text: drop bos_id and pad_id, cut at the first eos_id, target_tokenizer.decode(ids). "
                          "dlkit's beam search (beam_size > 1) is not part of the export.")}

    def _references(self, batch: dict[str, torch.Tensor], stage: str) -> list[str]:
        """The split's reference texts as written (comparable with sacreBLEU on raw references); re-decoded
        target ids when the dataset does not keep them."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        raw = datamodule.references(stage) if datamodule is not None else None
        if raw is not None and "index" in batch:
            return [raw[i] for i in batch["index"].tolist()]
        return [self.text(row) for row in batch["tgt_ids"].tolist()]

    def _decode_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        self._loss(batch, stage)
        hypotheses = self.generate(batch, self.test_beam_size if stage == "test" else None)
        references = self._references(batch, stage)
        self._decoded.setdefault(stage, []).extend(zip(hypotheses, references))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._decode_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._decode_step(batch, "test")

    def end_epoch(self, stage: str) -> None:
        """Log the epoch's loss and token accuracy, then BLEU and exact match of what was decoded."""
        super().end_epoch(stage)
        decoded = self._decoded.pop(stage, [])
        if not decoded or self.trainer.sanity_checking:
            return
        import sacrebleu

        hypotheses, references = [d[0] for d in decoded], [d[1] for d in decoded]
        bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
        exact = sum(h == r for h, r in zip(hypotheses, references)) / len(decoded)
        self.log(f"{stage}/bleu", bleu, sync_dist=True)
        self.log(f"{stage}/exact_match", exact, sync_dist=True)
        for hypothesis, reference in list(zip(hypotheses, references))[: self.samples]:
            log.info("%s sample | output: %s | reference: %s", stage, hypothesis, reference)

    def generate(self, batch: dict[str, torch.Tensor], beam_size: int | None = None,
                 length_penalty: float | None = None, max_length: int | None = None) -> list[str]:
        """Decoded target texts: greedy with beam_size 1, beam search otherwise."""
        beam = beam_size or self.beam_size
        limit = max_length or self.decode_limit()
        if beam == 1:
            ids = self.model.greedy(batch["src_ids"], batch["src_mask"], max_length=limit)
        else:
            ids = self.model.beam_search(batch["src_ids"], batch["src_mask"], beam_size=beam,
                                         length_penalty=length_penalty or self.length_penalty, max_length=limit)
        return [self.text(row) for row in ids.tolist()]

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        """What a report of a split needs of a batch (dlkit.reporting): each source decoded as the test decodes it,
        and its row in the split (`index`, which finds its reference and source text)."""
        return {"outputs": self.generate(batch, self.test_beam_size), "index": batch["index"]}

    def predict_batch(self, batch: dict[str, torch.Tensor], beam_size: int | None = None,
                      length_penalty: float | None = None, max_length: int | None = None,
                      **_: Any) -> list[dict[str, Any]]:
        """One translation per source sentence."""
        return [{"translation": text} for text in self.generate(batch, beam_size, length_penalty, max_length)]
