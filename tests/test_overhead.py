"""The per-step savings of issue 9 keep every value: epoch metrics and losses, batches, progress."""

from __future__ import annotations

import torch
from omegaconf import open_dict
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from dlkit import runner
from dlkit.build import build_datamodule, build_task, build_trainer


def _built(tmp_path, *overrides: str):
    cfg = runner.prepare(["logger=csv", "callbacks=minimal", f"paths.output_dir={tmp_path}", *overrides]).cfg
    with open_dict(cfg):
        cfg.paths.run_dir = str(tmp_path)
    datamodule = build_datamodule(cfg)
    return cfg, datamodule, build_task(cfg, datamodule), build_trainer(cfg)


def test_epoch_metrics_equal_torchmetrics_over_every_prediction(tmp_path):
    # batch 4: 45 validation batches, so predictions reach the metrics in more than one chunk
    _, datamodule, task, trainer = _built(tmp_path, "data.batch_size=4")
    [result] = trainer.validate(task, datamodule=datamodule, verbose=False)
    task.eval()
    with torch.no_grad():
        logits = torch.cat([task(x) for x, _ in datamodule.val_dataloader()])
    labels = torch.cat([y for _, y in datamodule.val_dataloader()])
    assert result["val/acc"] == multiclass_accuracy(logits, labels, 10, average="micro").item()
    assert result["val/f1"] == multiclass_f1_score(logits, labels, 10, average="macro").item()
    # a second pass starts from fresh metric states
    [again] = trainer.validate(task, datamodule=datamodule, verbose=False)
    assert again["val/acc"] == result["val/acc"]


def test_image_batches_are_gathered_at_once_with_the_values_of_per_row_collation():
    from torch.utils.data import DataLoader, default_collate

    from dlkit.data.base import Batch, collate
    from dlkit.data.vision import ImageTensors

    images, labels = torch.randn(10, 1, 4, 4), torch.arange(10)
    plain = ImageTensors(images, labels)
    assert isinstance(plain.__getitems__([3, 1]), Batch)
    gathered = list(DataLoader(plain, batch_size=4, shuffle=False, collate_fn=collate))
    rows = list(DataLoader([plain[i] for i in range(10)], batch_size=4, collate_fn=default_collate))
    for (x, y), (x_ref, y_ref) in zip(gathered, rows, strict=True):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref) and x.dtype == x_ref.dtype
    # augmented rows keep their own random draw each
    assert isinstance(ImageTensors(images, labels, hflip=True).__getitems__([3, 1]), list)


def test_text_batches_equal_row_by_row_padding():
    import random

    from dlkit.data.text import TextRows

    def reference(items, pad_id):  # the row-by-row padding the collator used to do
        longest = max(1, max(len(i[0]) for i in items))
        ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
        mask, types = torch.zeros_like(ids), torch.zeros_like(ids)
        for row, (seq, segments, _) in enumerate(items):
            ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
            if segments is not None:
                types[row, : len(segments)] = torch.as_tensor(segments)
        return ids, mask, types

    import numpy as np

    from dlkit.data.ragged import Ragged

    rng = random.Random(0)
    for pairs in (False, True):
        rows = [[rng.randrange(1, 50) for _ in range(rng.randrange(0, 12))] for _ in range(16)]
        items = [(r, [0] * (len(r) // 2) + [1] * (len(r) - len(r) // 2) if pairs else None, rng.randrange(3))
                 for r in rows]
        lengths = np.array([len(r) for r in rows])
        ids_of = Ragged.of(np.array([v for r in rows for v in r], dtype=np.int32), lengths)
        types_of = Ragged.of(np.array([v for i in items for v in (i[1] or [])], dtype=np.int8), lengths) if pairs \
            else None
        dataset = TextRows(ids_of, np.array([i[2] for i in items]), 7, types_of)
        inputs, labels = dataset.__getitems__(list(range(len(rows))))
        ids, mask, types = reference(items, 7)
        assert torch.equal(inputs["input_ids"], ids) and torch.equal(inputs["attention_mask"], mask)
        assert torch.equal(inputs["token_type_ids"], types) and labels.tolist() == [i[2] for i in items]
        assert inputs["input_ids"].dtype == inputs["attention_mask"].dtype == inputs["token_type_ids"].dtype
    empty = TextRows(Ragged.of(np.zeros(0, dtype=np.int32), np.array([0])), np.array([0]), 0)
    only_empty, _ = empty.__getitems__([0])
    assert only_empty["input_ids"].shape == (1, 1) and only_empty["attention_mask"].sum() == 0


def test_progress_bar_skips_updates_within_its_interval_but_always_shows_the_last_batch(tmp_path):
    from dlkit.callbacks import ThrottledRichProgressBar

    bar = ThrottledRichProgressBar(update_interval=3600)
    assert [bar._due(i, 5) for i in range(5)] == [True, False, False, False, True]
    assert all(ThrottledRichProgressBar(update_interval=0)._due(i, 5) for i in range(5))

    cfg, datamodule, task, _ = _built(tmp_path, "trainer.max_epochs=1", "trainer.limit_val_batches=2")
    bar = ThrottledRichProgressBar(update_interval=3600, leave=True)
    trainer = build_trainer(cfg, extra_callbacks=[bar])
    trainer.fit(task, datamodule=datamodule)
    assert trainer.progress_bar_callback is bar
    assert bar.train_progress_bar.completed == bar.train_progress_bar.total == 20


def test_fused_null_picks_fused_kernels_only_for_cuda_parameters_without_clipping(tmp_path):
    from types import SimpleNamespace

    for name in ("adam", "adamw", "adamw_finetune", "sgd"):
        cfg = runner.prepare([f"optimizer={name}", f"paths.output_dir={tmp_path}"]).cfg
        assert "fused" in cfg.optimizer and cfg.optimizer.fused is None, name
    _, _, task, trainer = _built(tmp_path)
    task._trainer = trainer
    optimizer = task.configure_optimizers()  # CPU: torch's own default, exactly as without the key
    assert optimizer.defaults["fused"] is None and optimizer.defaults["foreach"] is None

    cuda = [SimpleNamespace(device=torch.device("cuda"), is_floating_point=lambda: True)] * 2
    assert task._fused_choice(cuda) == {"fused": True}
    cpu = SimpleNamespace(device=torch.device("cpu"), is_floating_point=lambda: True)
    assert task._fused_choice([*cuda, cpu]) == {}
    task._trainer = SimpleNamespace(gradient_clip_val=1.0)
    assert task._fused_choice(cuda) == {}
    task._trainer = None
    task.optimizer_factory.keywords["fused"] = False  # an explicit choice is passed through untouched
    assert task._fused_choice(cuda) == {}


def test_channels_last_keeps_weights_and_image_batches_nhwc_with_the_same_outputs(tmp_path):
    cfg, datamodule, task, trainer = _built(tmp_path, "model=lenet", "channels_last=true", "trainer.max_epochs=1",
                                            "trainer.limit_train_batches=3", "trainer.limit_val_batches=1")
    convs = [m for m in task.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1]
    assert task.channels_last and convs
    nhwc = torch.channels_last
    assert all(c.weight.is_contiguous(memory_format=nhwc) and not c.weight.is_contiguous() for c in convs)
    images, labels = next(iter(datamodule.train_dataloader()))
    moved, same_labels = task.on_after_batch_transfer((images, labels), 0)
    assert moved.is_contiguous(memory_format=torch.channels_last) and same_labels is labels
    batch = {"x": torch.randn(2, 3, 4, 4), "ids": torch.ones(2, 3, 4, 4).long()}
    rgb, ids = task.on_after_batch_transfer(batch, 0).values()
    assert rgb.is_contiguous(memory_format=nhwc) and not rgb.is_contiguous() and ids.is_contiguous()
    _, _, plain, _ = _built(tmp_path, "model=lenet")
    plain.load_state_dict(task.state_dict())
    assert torch.allclose(task(moved), plain(images), atol=1e-5)
    trainer.fit(task, datamodule=datamodule)  # trains end to end


def test_matmul_precision_is_set_for_the_run_and_checked(tmp_path):
    import pytest

    from dlkit.errors import UsageError
    from dlkit.training import train

    with pytest.raises(UsageError, match="matmul_precision=fast: choose highest, high, medium, or null"):
        runner.prepare(["matmul_precision=fast", f"paths.output_dir={tmp_path}"])
    cfg = runner.prepare(["matmul_precision=high", "fit=false", "test=false", "logger=csv", "callbacks=minimal",
                          f"paths.output_dir={tmp_path}"]).cfg
    with open_dict(cfg):
        cfg.paths.run_dir = str(tmp_path)
    before = torch.get_float32_matmul_precision()
    try:
        train(cfg)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_every_data_config_sets_workers_and_pinned_memory(tmp_path):
    import inspect

    from hydra.utils import get_class

    from dlkit.config import compose, config_groups
    from dlkit.data.base import DataModule

    for option in config_groups()["data"]:
        node = compose([f"data={option.name}"]).data  # the loader block's keys and the option's own
        assert "num_workers" in node and node.pin_memory is None, option.name
        cls = get_class(node._target_)
        assert issubclass(cls, DataModule)
        # the key reaches DataModule: named by the class or passed on through **kwargs
        assert all("pin_memory" in inspect.signature(c.__init__).parameters or
                   any(p.kind is p.VAR_KEYWORD for p in inspect.signature(c.__init__).parameters.values())
                   for c in cls.__mro__ if issubclass(c, DataModule) and "__init__" in vars(c)), option.name
    _, datamodule, _, _ = _built(tmp_path, "data.pin_memory=true", "data.batch_size=8")
    assert datamodule.train_dataloader().pin_memory is True


def test_epoch_losses_are_batch_size_weighted_means_and_step_losses_reach_the_loggers(tmp_path):
    import csv

    import pytorch_lightning as pl
    import torch.nn.functional as F

    class Losses(pl.Callback):
        """Every training batch's loss and size, as the task computed them."""

        def __init__(self) -> None:
            self.seen: list[tuple[float, int]] = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.seen.append((float(outputs["loss"]), len(batch[1])))

    # batch 100: the last batch of each split is smaller, so an unweighted mean would differ
    cfg, datamodule, task, _ = _built(tmp_path, "data.batch_size=100", "trainer.max_epochs=1",
                                      "trainer.log_every_n_steps=3")
    losses = Losses()
    trainer = build_trainer(cfg, [losses])
    trainer.fit(task, datamodule=datamodule)
    total = sum(size for _, size in losses.seen)
    expected = sum(loss * size for loss, size in losses.seen) / total
    assert abs(float(trainer.callback_metrics["train/loss_epoch"]) - expected) < 1e-6
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    logged = {int(r["step"]): float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")}
    for step in range(2, len(losses.seen), 3):  # every log_every_n_steps-th step, with that step's own loss
        assert abs(logged[step] - losses.seen[step][0]) < 1e-6
    # validation: the weighted mean over the whole split, as Lightning's own epoch mean would be
    [result] = trainer.validate(task, datamodule=datamodule, verbose=False)
    task.eval()
    with torch.no_grad():
        pairs = [(F.cross_entropy(task(x), y).item(), len(y)) for x, y in datamodule.val_dataloader()]
    assert len({size for _, size in pairs}) > 1
    assert abs(result["val/loss"] - sum(v * n for v, n in pairs) / sum(n for _, n in pairs)) < 1e-6


def test_a_training_step_calls_only_the_callback_hooks_that_do_something(tmp_path, monkeypatch):
    import pytorch_lightning.trainer.call as call

    calls: list[tuple[str, str]] = []
    original = call._call_callback_hooks

    def counting(trainer, hook_name, *args, **kwargs):  # what Lightning's loop calls: each callable hook
        if trainer.training and not trainer.sanity_checking:
            calls.extend((hook_name, type(c).__name__) for c in trainer.callbacks if callable(getattr(c, hook_name)))
        return original(trainer, hook_name, *args, **kwargs)

    monkeypatch.setattr(call, "_call_callback_hooks", counting)
    # the default callbacks (progress bar, both checkpoints, early stopping, LR monitor, summary, epoch seeder)
    _, datamodule, task, trainer = _built(tmp_path, "callbacks=default", "trainer.max_epochs=1",
                                          "trainer.limit_train_batches=6", "trainer.limit_val_batches=1")
    assert len(trainer.callbacks) == 7
    trainer.fit(task, datamodule=datamodule)
    per_step = [c for c in calls if c[0] in ("on_train_batch_start", "on_train_batch_end", "on_before_backward",
                                             "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad")]
    # 5 calls per step (42 before the inherited empty hooks were skipped): the hooks these callbacks override
    assert len(per_step) == 6 * 5
    expected = {("on_train_batch_start", "LastCheckpoint"), ("on_train_batch_start", "LearningRateMonitor"),
                ("on_train_batch_end", "LastCheckpoint"), ("on_train_batch_end", "ModelCheckpoint"),
                ("on_train_batch_end", "ThrottledRichProgressBar")}
    assert set(per_step) == expected
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()  # the checkpoint hooks still ran
