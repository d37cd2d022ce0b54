"""BERT pre-training: masked-LM loss plus next-sentence-prediction loss, summed as in the paper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlkit.data.spec import DataSpec
from dlkit.tasks.base import Task


class PretrainingTask(Task):
    """Batches {input_ids, attention_mask, token_type_ids, mlm_labels (-100 unmasked), nsp_labels}."""

    kinds = ("masked_lm",)

    def __init__(self, model: nn.Module, spec: DataSpec, optimizer: Callable[..., Any],
                 scheduler: Callable[..., dict] | None = None, monitor: str = "val/loss") -> None:
        super().__init__(model, spec, optimizer, scheduler, monitor)
        self._tokenizer = None

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        mlm_logits, nsp_logits = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        labels = batch["mlm_labels"]
        mlm_loss = F.cross_entropy(mlm_logits.reshape(-1, mlm_logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        nsp_loss = F.cross_entropy(nsp_logits, batch["nsp_labels"])
        loss = mlm_loss + nsp_loss
        chosen = labels != -100
        mlm_acc = (mlm_logits.argmax(-1)[chosen] == labels[chosen]).float().mean() if chosen.any() else torch.zeros(())
        nsp_acc = (nsp_logits.argmax(-1) == batch["nsp_labels"]).float().mean()
        size = labels.shape[0]
        self.log_mean(stage, "loss", loss, size, prog_bar=True, step=stage == "train")
        for name, value in (("mlm_loss", mlm_loss), ("nsp_loss", nsp_loss), ("mlm_acc", mlm_acc),
                            ("nsp_acc", nsp_acc)):
            self.log_mean(stage, name, value, size)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """What a report of a split needs of a batch (dlkit.reporting): at each masked position the label and the
        five most likely ids (`mlm_top` [M, 5]) and the label's loss; the NSP probabilities [B, 2] and labels."""
        mlm_logits, nsp_logits = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        labels = batch["mlm_labels"]
        chosen = labels != -100
        logits, targets = mlm_logits[chosen].float(), labels[chosen]
        return {"mlm_top": logits.topk(min(5, logits.shape[-1]), dim=-1).indices, "mlm_labels": targets,
                "mlm_loss": F.cross_entropy(logits, targets, reduction="none"),
                "nsp_probabilities": nsp_logits.float().softmax(dim=-1), "nsp_labels": batch["nsp_labels"]}

    def client_postprocessing(self) -> dict[str, Any]:
        return {"output": "mlm_logits [batch, sequence, vocabulary], nsp_logits [batch, 2]",
                "steps": ("at each position whose input id is the [MASK] id: probabilities = softmax(mlm_logits[b, "
                          "position]); the fills are the top-k ids, as tokens of tokenizer.json (id_to_token)")}

    def predict_batch(self, batch: dict[str, torch.Tensor], top_k: int = 5, **_: Any) -> list[dict[str, Any]]:
        """The top-k fills of every [MASK] in each input."""
        if self._tokenizer is None:
            from dlkit.data.tokenizers import state_tokenizer

            self._tokenizer = state_tokenizer(self.meta.get("data"), self.spec.tokenizer_path)
        logits, _ = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        records = []
        for row, ids in enumerate(batch["input_ids"]):
            fills = []
            for position in (ids == self.spec.mask_id).nonzero().flatten().tolist():
                probabilities = logits[row, position].softmax(-1)
                values, tokens = probabilities.topk(min(max(1, top_k), probabilities.shape[-1]))
                fills.append([{"token": self._tokenizer.id_to_token(t), "probability": round(v, 6)}
                              for v, t in zip(values.tolist(), tokens.tolist())])
            records.append({"fills": fills})
        return records
