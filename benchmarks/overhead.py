"""Training overhead: steady-state steps/s of `dlkit train` against a hand-written PyTorch loop doing the same work.

    python benchmarks/overhead.py [--repeats 5] [--threads 1] [--cases mlp lenet textcnn mlp_b32]

dlkit runs through the CLI's own path (`runner.prepare` composes and checks the config, `runner.run_job` makes
the run folder and calls `training.train`) with the default callbacks: Rich progress bar (rendered as on a
terminal, to /dev/null), checkpoints, early stopping (patience raised so every epoch runs), learning-rate
monitor, model summary. Two logger set-ups: `logger=csv` (metrics.csv only) and the default `logger=wandb`
(W&B offline + metrics.csv). The plain loop builds the same model class from the same config and data spec,
reads the same in-memory training tensors, and runs zero_grad / forward / cross-entropy / backward / step with
the same optimizer and batch size, shuffling every epoch, nothing else (no metrics, no logging, no validation).

Steady state: the first `warmup` epochs are skipped; in the measured epochs the time between consecutive
training-batch starts is summed (Lightning's on_train_batch_start; the same point in the plain loop), so each
interval is one whole training iteration (fetch, step, hooks, logging) and validation and epoch ends are left
out of both. Each run is its own process with the same torch thread count; dlkit and plain runs are
interleaved; the table shows medians over the repeats. Target (issue 9): dlkit / plain >= 0.97.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# name: (overrides, warm-up epochs, measured epochs)
CASES: dict[str, tuple[list[str], int, int]] = {
    "mlp": (["model=mlp"], 2, 20),
    "lenet": (["model=lenet"], 2, 20),
    "textcnn": (["model=textcnn"], 1, 3),
    "mlp_b32": (["model=mlp", "data.batch_size=32"], 2, 10),
}
VARIANTS = ("plain", "csv", "wandb")


def overrides_for(case: str, variant: str, output_dir: str) -> list[str]:
    """The `dlkit train` overrides of one run (the plain loop composes the same config to build its model)."""
    extra, warmup, measured = CASES[case]
    logger = "wandb" if variant == "wandb" else "csv"
    return [*extra, f"logger={logger}", f"trainer.max_epochs={warmup + measured}", "test=false",
            "callbacks.early_stopping.patience=1000", f"paths.output_dir={output_dir}"]


def stamp() -> tuple[float, float]:
    """Wall-clock and process CPU time (all threads of this process) now."""
    return time.perf_counter(), time.process_time()


def rates(epochs: list[list[tuple[float, float]]]) -> dict[str, float]:
    """Steps per wall second and per CPU second from the batch-start stamps of each measured epoch."""
    steps = sum(len(starts) - 1 for starts in epochs)
    wall = sum(starts[-1][0] - starts[0][0] for starts in epochs)
    cpu = sum(starts[-1][1] - starts[0][1] for starts in epochs)
    return {"wall": steps / wall, "cpu": steps / cpu}


def run_dlkit(case: str, variant: str, output_dir: str) -> dict[str, Any]:
    """One `dlkit train` run with a callback timing the training-batch starts of the measured epochs."""
    import pytorch_lightning as pl
    import torch

    from dlkit import run_folder, runner

    warmup = CASES[case][1]

    class BatchStarts(pl.Callback):
        def __init__(self) -> None:
            self.epochs: dict[int, list[tuple[float, float]]] = {}

        def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any,
                                 batch_idx: int) -> None:
            if trainer.current_epoch >= warmup:
                self.epochs.setdefault(trainer.current_epoch, []).append(stamp())

    timer = BatchStarts()
    job = runner.prepare(overrides_for(case, variant, output_dir))
    runner.run_job(job, run_folder.new_folder(job.cfg.paths.output_dir), callbacks=[timer])
    epochs = [timer.epochs[e] for e in sorted(timer.epochs)]
    return {**rates(epochs), "batch_size": int(job.cfg.data.batch_size), "threads": torch.get_num_threads(),
            "steps_per_epoch": len(epochs[0]), "measured_epochs": len(epochs), "data": job.choices.get("data")}


def plain_batches(datamodule: Any) -> tuple[Any, Any]:
    """The training split as in-memory tensors, and a function making one batch from a tensor of indices."""
    import torch

    dataset = datamodule.train_set
    if hasattr(dataset, "images"):  # images and labels as tensors
        images, labels = dataset.images, dataset.labels
        return labels, lambda index: (images[index], labels[index])
    # text: token ids padded once to the longest text; each batch is cut to its own longest, as dlkit pads
    lengths = torch.tensor([len(ids) for ids in dataset.ids])
    ids = torch.full((len(lengths), int(lengths.max())), datamodule.pad_id, dtype=torch.long)
    for row, seq in enumerate(dataset.ids):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    mask = (torch.arange(ids.shape[1]) < lengths.unsqueeze(1)).long()
    labels = torch.tensor(dataset.labels, dtype=torch.long)

    def batch(index: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        longest = int(lengths[index].max())
        batch_ids = ids[index, :longest]
        inputs = {"input_ids": batch_ids, "attention_mask": mask[index, :longest],
                  "token_type_ids": torch.zeros_like(batch_ids)}
        return inputs, labels[index]

    return labels, batch


def run_plain(case: str, output_dir: str) -> dict[str, Any]:
    """The hand-written loop: same config, data tensors, model class, optimizer, batch size and epoch count."""
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from dlkit import runner
    from dlkit.models import build_model
    from dlkit.training import build_datamodule

    warmup = CASES[case][1]
    cfg = runner.prepare(overrides_for(case, "plain", output_dir)).cfg
    with open_dict(cfg):
        cfg.paths.run_dir = output_dir
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg.model, datamodule.spec).train()
    optimizer = instantiate(cfg.optimizer)(params=[p for p in model.parameters() if p.requires_grad])
    labels, make_batch = plain_batches(datamodule)
    batch_size, size = int(cfg.data.batch_size), len(labels)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    epochs = []
    for epoch in range(int(cfg.trainer.max_epochs)):
        order = torch.randperm(size, generator=generator)
        starts = []
        for first in range(0, size, batch_size):
            inputs, targets = make_batch(order[first:first + batch_size])
            starts.append(stamp())
            optimizer.zero_grad(set_to_none=True)
            logits = model(**inputs) if isinstance(inputs, dict) else model(inputs)
            loss = F.cross_entropy(logits, targets)
            loss.backward()
            optimizer.step()
        if epoch >= warmup:
            epochs.append(starts)
    return {**rates(epochs), "batch_size": batch_size, "threads": torch.get_num_threads(),
            "steps_per_epoch": len(epochs[0]), "measured_epochs": len(epochs)}


def child(case: str, variant: str, threads: int, out: str) -> None:
    """Run one measurement in this process and write its result as JSON."""
    import torch

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as output_dir:
        result = run_plain(case, output_dir) if variant == "plain" else run_dlkit(case, variant, output_dir)
    Path(out).write_text(json.dumps(result))


def measure(case: str, variant: str, threads: int) -> dict[str, Any]:
    """One run in a fresh process; Rich renders its progress bar as on a 120-column terminal (into /dev/null)."""
    env = {**os.environ, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "120", "WANDB_MODE": "offline",
           "WANDB_SILENT": "true"}
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--child", case, variant, "--threads", str(threads), "--out", out.name]
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
        return json.loads(Path(out.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same for every run")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--child", nargs=2, metavar=("CASE", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.threads, args.out)
        return
    variants = ["plain", *[v for v in args.variants if v != "plain"]]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for case in args.cases:
            # interleaved, and the order rotated each repeat so no variant always runs first
            for variant in variants[repeat % len(variants):] + variants[: repeat % len(variants)]:
                result = measure(case, variant, args.threads)
                results.setdefault((case, variant), []).append(result)
                print(f"repeat {repeat} {case} {variant}: {result['cpu']:.1f} steps/CPU-s, {result['wall']:.1f} "
                      "steps/s wall", file=sys.stderr, flush=True)
    print_table(results, args.cases, variants[1:], args.threads, args.repeats)


def print_table(results: dict[tuple[str, str], list[dict[str, Any]]], cases: list[str], variants: list[str],
                threads: int, repeats: int) -> None:
    """The Markdown table: medians of steps/s, and the median of the paired (same repeat) ratios."""
    print(f"\ntorch threads {threads}; medians of {repeats} interleaved runs; steady state (warm-up epochs, "
          "validation and epoch ends excluded); steps/s per CPU second of the training process")
    print("| model | data | batch | steps/epoch | dlkit logger | dlkit steps/s | plain loop steps/s | ratio | "
          "ratio (wall clock) | target |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        plain = results[(case, "plain")]
        for variant in variants:
            runs = results[(case, variant)]
            ratio = {k: statistics.median(r[k] / p[k] for r, p in zip(runs, plain)) for k in ("cpu", "wall")}
            logger = "csv" if variant == "csv" else "wandb (offline) + csv"
            mark = "met" if ratio["cpu"] >= 0.97 else "missed"
            print(f"| {CASES[case][0][0].split('=')[1]} | {runs[0]['data']} | {runs[0]['batch_size']} | "
                  f"{runs[0]['steps_per_epoch']} | {logger} | {statistics.median(r['cpu'] for r in runs):.1f} | "
                  f"{statistics.median(p['cpu'] for p in plain):.1f} | {ratio['cpu']:.3f} | {ratio['wall']:.3f} | "
                  f">= 0.97 ({mark}) |")

if __name__ == "__main__":
    main()
