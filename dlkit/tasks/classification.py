"""Classification of images or texts: cross-entropy loss, accuracy and macro F1 per split.

The metrics are fed predicted labels in chunks of batches and logged once per epoch: per step they cost one
argmax and a list append, instead of a torchmetrics update plus two `self.log` calls of Metric objects (the
largest per-step cost of training small models, issue 9). The values are the same: the metric states are
integer counts, whatever the chunking. The loss is summed the same way (Task.log_mean).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from dlkit.data.spec import DataSpec
from dlkit.tasks.base import Task

STAGES = ("train", "val", "test")
# batches of predictions held before one metric update
CHUNK = 32


class ClassificationTask(Task):
    """Batches are (inputs, labels); inputs are a tensor or a dict of tensors given to the model by name."""

    kinds = ("image_classification", "text_classification")

    def __init__(self, model: nn.Module, spec: DataSpec, optimizer: Callable[..., Any],
                 scheduler: Callable[..., dict] | None = None, monitor: str = "val/acc",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(model, spec, optimizer, scheduler, monitor)
        self.label_smoothing = label_smoothing
        metrics = MetricCollection({
            "acc": MulticlassAccuracy(spec.num_classes, average="micro"),
            "f1": MulticlassF1Score(spec.num_classes, average="macro"),
        }, compute_groups=False)  # each metric keeps its own states: a mid-epoch checkpoint saves and restores them
        # ModuleDict keys must not shadow nn.Module attributes such as `train`
        self.metrics = nn.ModuleDict({f"{stage}_": metrics.clone(prefix=f"{stage}/") for stage in STAGES})
        # (predicted labels, labels) of the batches not yet given to the metrics, and whether any were this epoch
        self._pending: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {stage: [] for stage in STAGES}
        self._seen = dict.fromkeys(STAGES, False)

    def forward(self, inputs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits for a batch of inputs."""
        return self.model(**inputs) if isinstance(inputs, dict) else self.model(inputs)

    def _step(self, batch: tuple[Any, torch.Tensor], stage: str) -> torch.Tensor:
        inputs, labels = batch
        logits = self(inputs)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing if stage == "train" else 0.0)
        # the label torchmetrics would take from the logits (top-1 along the class dimension)
        self._pending[stage].append((logits.detach().argmax(dim=1), labels))
        self._seen[stage] = True
        if len(self._pending[stage]) >= CHUNK:
            self._update_metrics(stage)
        self.log_mean(stage, "loss", loss, labels.shape[0], prog_bar=True, step=stage == "train")
        return loss

    def _update_metrics(self, stage: str) -> None:
        pending = self._pending[stage]
        if pending:
            predictions, labels = zip(*pending)
            self.metrics[f"{stage}_"].update(torch.cat(predictions), torch.cat(labels))
            pending.clear()

    def end_epoch(self, stage: str) -> None:
        """Log the epoch's loss, accuracy and F1 (computed across processes by torchmetrics); reset them."""
        super().end_epoch(stage)
        if not self._seen[stage]:
            return
        self._update_metrics(stage)
        metrics = self.metrics[f"{stage}_"]
        # the values are already the same on every process: "max" keeps them exact where a mean could round
        self.log_dict(metrics.compute(), prog_bar=stage != "train", sync_dist=True, reduce_fx="max")
        metrics.reset()
        self._seen[stage] = False

    def training_epoch_state(self) -> dict[str, Any]:
        """The loss sums and the training metrics' states (integer counts) of the epoch so far."""
        self._update_metrics("train")
        states = {name: dict(metric.metric_state) for name, metric in self.metrics["train_"].items(keep_base=True)}
        return {**super().training_epoch_state(), "metrics": states, "seen": self._seen["train"]}

    def load_training_epoch_state(self, state: dict[str, Any]) -> None:
        super().load_training_epoch_state(state)
        for name, metric in self.metrics["train_"].items(keep_base=True):
            for key, value in state.get("metrics", {}).get(name, {}).items():
                setattr(metric, key, value.to(self.device))
        self._seen["train"] = bool(state.get("seen"))

    def training_step(self, batch: tuple[Any, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Any, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Any, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def client_postprocessing(self) -> dict[str, Any]:
        return {"output": "logits [batch, classes]",
                "steps": "probabilities = softmax(logits, axis=-1); label = labels[argmax(probabilities)]"}

    def predict_batch(self, inputs: torch.Tensor | dict[str, torch.Tensor], top_k: int = 1,
                      **_: Any) -> list[dict[str, Any]]:
        """Label and probability per input (and the top-k labels when top_k > 1)."""
        probabilities = self(inputs).softmax(dim=-1)
        names = self.spec.class_names or [str(i) for i in range(probabilities.shape[1])]
        values, indices = probabilities.topk(min(top_k, probabilities.shape[1]), dim=-1)
        records = []
        for row_values, row_indices in zip(values.tolist(), indices.tolist()):
            record: dict[str, Any] = {"label": names[row_indices[0]], "probability": round(row_values[0], 6)}
            if top_k > 1:
                record["top"] = [{"label": names[i], "probability": round(v, 6)}
                                 for v, i in zip(row_values, row_indices)]
            records.append(record)
        return records

    def predict_step(self, batch: tuple[Any, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """What a report of a split needs of a batch (dlkit.reporting): class probabilities [B, classes] in float32
        and the labels [B]."""
        inputs, labels = batch
        return {"probabilities": self(inputs).float().softmax(dim=-1), "labels": labels}
