"""Training overhead: steady-state steps/s of `dlkit train` against a hand-written PyTorch loop doing the same work.

    python benchmarks/overhead.py [--repeats 5] [--threads 1] [--cases mlp lenet textcnn mlp_b32]

dlkit runs through the CLI's own path (`runner.prepare` composes and checks the config, `runner.run_job` makes
the run folder and calls `training.train`) with the default callbacks: Rich progress bar (rendered as on a
terminal, to /dev/null), checkpoints, early stopping (patience raised so every epoch runs), learning-rate
monitor, model summary. Two logger set-ups: `logger=csv` (metrics.csv only) and the default `logger=wandb`
(W&B offline + metrics.csv). The plain loop builds the same model class from the same config and data spec,
reads the same in-memory training tensors, and runs zero_grad / forward / cross-entropy / backward / step with
the same optimizer and batch size, shuffling every epoch, nothing else (no metrics, no logging, no validation).
A third run, bare Lightning, puts the plain loop's model, optimizer and batches in a minimal LightningModule and
Trainer (no logger, callbacks, progress bar or checkpoints): the floor under anything built on Lightning.

Steady state: the first `warmup` epochs are skipped; in each measured epoch the time between its first and last
training-batch starts (Lightning's on_train_batch_start; the same point in the plain loop) gives that epoch's rate,
each interval being one whole training iteration (fetch, step, hooks, logging), validation and epoch ends left out
of both. Paired: after each measured epoch the same process runs one epoch of the plain loop (its own copy of the
model and optimizer), and each epoch's rate is divided by the plain epoch's that follows it. The speed of this
shared machine drifts by tens of percent over a minute (a plain loop alone gave 270 to 590 steps/s in different
processes), so runs in separate processes cannot be compared to a few percent; epochs a second apart in one process
can. A run's figures are the medians over its epochs; the table gives the medians over the repeats. Time is the
process's CPU time (all its threads: W&B's threads inside the training process count, and they also run during
its plain epochs); the wall-clock ratio is printed beside it. Every run has the same torch thread count and fixed
glibc malloc thresholds (STEADY_MALLOC; --system-malloc to drop them). Target (issue 9): dlkit / plain >= 0.97.
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
VARIANTS = ("lightning", "csv", "wandb")


def overrides_for(case: str, variant: str, output_dir: str) -> list[str]:
    """The `dlkit train` overrides of one run (the plain loop composes the same config to build its model)."""
    extra, warmup, measured = CASES[case]
    logger = "wandb" if variant == "wandb" else "csv"
    return [*extra, f"logger={logger}", f"trainer.max_epochs={warmup + measured}", "test=false",
            "callbacks.early_stopping.patience=1000", f"paths.output_dir={output_dir}"]


def stamp() -> tuple[float, float]:
    """Wall-clock and process CPU time (all threads of this process) now."""
    return time.perf_counter(), time.process_time()


def epoch_rate(starts: list[tuple[float, float]], clock: int) -> float:
    """Steps per second of one epoch: batch starts stamped by `stamp`, clock 0 wall, 1 CPU."""
    return (len(starts) - 1) / (starts[-1][clock] - starts[0][clock])


def paired_result(epochs: list[list[tuple[float, float]]], plain: list[list[tuple[float, float]]]) -> dict[str, float]:
    """The run's steps/s and its plain loop's (medians over the measured epochs), and the median over epochs of
    the ratio of each epoch to the plain-loop epoch run right after it in the same process: the machine's speed
    drifts by tens of percent over minutes, and an epoch compared with one a second later is compared at the
    same speed."""
    out = {}
    for clock, name in enumerate(("wall", "cpu")):
        ours = [epoch_rate(e, clock) for e in epochs]
        theirs = [epoch_rate(e, clock) for e in plain]
        out[name] = statistics.median(ours)
        out[f"plain_{name}"] = statistics.median(theirs)
        out[f"ratio_{name}"] = statistics.median(a / b for a, b in zip(ours, theirs))
        # CPU or wall milliseconds a step costs over the plain loop's step
        out[f"added_{name}"] = statistics.median(1000 / a - 1000 / b for a, b in zip(ours, theirs))
    return out


def batch_starts(warmup: int, plain: PlainSetup) -> Any:
    """A Lightning callback stamping every training-batch start from epoch `warmup` on (its `.epochs`), and
    running one epoch of the plain loop after each such epoch (its `.plain`)."""
    import pytorch_lightning as pl
    import torch

    class BatchStarts(pl.Callback):
        def __init__(self) -> None:
            self.epochs: dict[int, list[tuple[float, float]]] = {}
            self.plain: dict[int, list[tuple[float, float]]] = {}

        def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any,
                                 batch_idx: int) -> None:
            if trainer.current_epoch >= warmup:
                self.epochs.setdefault(trainer.current_epoch, []).append(stamp())

        def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            if trainer.current_epoch >= warmup:
                with torch.enable_grad():
                    self.plain[trainer.current_epoch] = plain.run_epoch()

        def result(self) -> dict[str, Any]:
            measured = sorted(set(self.epochs) & set(self.plain))
            return {**paired_result([self.epochs[e] for e in measured], [self.plain[e] for e in measured]),
                    "steps_per_epoch": len(self.epochs[measured[0]]), "measured_epochs": len(measured),
                    "threads": torch.get_num_threads()}

    return BatchStarts()


def run_dlkit(case: str, variant: str, output_dir: str) -> dict[str, Any]:
    """One `dlkit train` run with a callback timing the training-batch starts of the measured epochs."""
    from dlkit import runner
    from dlkit.runs import records

    timer = batch_starts(CASES[case][1], PlainSetup(case, output_dir))
    job = runner.prepare(overrides_for(case, variant, output_dir))
    runner.run_job(job, records.new_folder(job.cfg.paths.output_dir), callbacks=[timer])
    return {**timer.result(), "batch_size": int(job.cfg.data.batch_size), "data": job.choices.get("data")}


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


class PlainSetup:
    """What the hand-written loop and bare Lightning share: the composed config, the model built as dlkit builds
    it (same seed, class, config and data spec), its optimizer, and batches cut from the in-memory training
    tensors in a new random order every epoch."""

    def __init__(self, case: str, output_dir: str) -> None:
        import pytorch_lightning as pl
        import torch
        from hydra.utils import instantiate
        from omegaconf import open_dict

        from dlkit import runner
        from dlkit.build import build_datamodule, build_model

        job = runner.prepare(overrides_for(case, "plain", output_dir))
        self.cfg, self.data = job.cfg, job.choices.get("data")
        with open_dict(self.cfg):
            self.cfg.paths.run_dir = output_dir
        pl.seed_everything(int(self.cfg.seed), workers=True, verbose=False)
        datamodule = build_datamodule(self.cfg)
        self.model = build_model(self.cfg.model, datamodule.spec)[0].train()
        self.optimizer = instantiate(self.cfg.optimizer)(params=[p for p in self.model.parameters() if p.requires_grad])
        labels, self.make_batch = plain_batches(datamodule)
        self.batch_size, self.size = int(self.cfg.data.batch_size), len(labels)
        self.epochs, self.warmup = int(self.cfg.trainer.max_epochs), CASES[case][1]
        self.generator = torch.Generator().manual_seed(int(self.cfg.seed))

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)

    def __iter__(self) -> Any:
        """One epoch of (inputs, labels) batches."""
        import torch

        order = torch.randperm(self.size, generator=self.generator)
        return (self.make_batch(order[i:i + self.batch_size]) for i in range(0, self.size, self.batch_size))

    def loss(self, inputs: Any, targets: Any) -> Any:
        import torch.nn.functional as F

        logits = self.model(**inputs) if isinstance(inputs, dict) else self.model(inputs)
        return F.cross_entropy(logits, targets)

    def run_epoch(self) -> list[tuple[float, float]]:
        """One epoch of the hand-written loop: zero_grad, forward, loss, backward, step; nothing else. Returns its
        batch starts."""
        starts = []
        for inputs, targets in self:
            starts.append(stamp())
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss(inputs, targets)
            loss.backward()
            self.optimizer.step()
        return starts


def run_lightning(case: str, output_dir: str) -> dict[str, Any]:
    """Bare Lightning, the floor under any Lightning-based tool: the plain loop's model, optimizer and batches in a
    minimal LightningModule; no logging, metrics, callbacks, progress bar or checkpoints."""
    import pytorch_lightning as pl

    setup = PlainSetup(case, output_dir)

    class Bare(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = setup.model

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return setup.loss(*batch)

        def configure_optimizers(self) -> Any:
            return setup.optimizer

    timer = batch_starts(setup.warmup, PlainSetup(case, output_dir))
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=setup.epochs, logger=False, callbacks=[timer],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Bare(), train_dataloaders=setup)
    return {**timer.result(), "batch_size": setup.batch_size, "data": setup.data}


def child(case: str, variant: str, threads: int, out: str) -> None:
    """Run one measurement in this process and write its result as JSON."""
    import torch

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as output_dir:
        result = run_lightning(case, output_dir) if variant == "lightning" else run_dlkit(case, variant, output_dir)
    Path(out).write_text(json.dumps(result))


# glibc returns large freed blocks to the system and faults them back in at moments that differ from run to run
# (0.1 to 1.9 ms of system time per TextCNN step, in either loop alike); fixed thresholds keep the activations on
# the heap so that this noise, which is not the loops', does not swamp a comparison of a few percent
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(4 * 2**30)}
LABELS = {"lightning": "bare Lightning (the floor)", "csv": "dlkit, logger=csv",
          "wandb": "dlkit, default logger (W&B offline + CSV)"}


def measure(case: str, variant: str, threads: int, steady_malloc: bool = True) -> dict[str, Any]:
    """One run in a fresh process; Rich renders its progress bar as on a 120-column terminal (into /dev/null)."""
    env = {**os.environ, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "120", "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", **(STEADY_MALLOC if steady_malloc else {})}
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--child", case, variant, "--threads", str(threads), "--out", out.name]
        load = os.getloadavg()[0]
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
        return {**json.loads(Path(out.name).read_text()), "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same for every run")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--system-malloc", action="store_true", help="keep glibc's default malloc thresholds")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.threads, args.out)
        return
    variants = list(args.variants)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for case in args.cases:
            # interleaved, and the order rotated each repeat so no variant always runs first
            for variant in variants[repeat % len(variants):] + variants[: repeat % len(variants)]:
                result = measure(case, variant, args.threads, not args.system_malloc)
                results.setdefault((case, variant), []).append(result)
                print(f"repeat {repeat} {case} {variant}: {result['cpu']:.1f} steps/CPU-s, its plain loop "
                      f"{result['plain_cpu']:.1f}, ratio {result['ratio_cpu']:.3f}", file=sys.stderr, flush=True)
    print_table(results, args.cases, variants, args.threads, args.repeats)


def print_table(results: dict[tuple[str, str], list[dict[str, Any]]], cases: list[str], variants: list[str],
                threads: int, repeats: int) -> None:
    """The Markdown table: medians over the repeats of each run's figures."""
    load = statistics.median(r["load"] for runs in results.values() for r in runs)
    print(f"\ntorch threads {threads}; medians of {repeats} runs, each its own process; steady state (warm-up "
          "epochs, validation and epoch ends excluded); steps/s per CPU second of the training process, each epoch "
          "paired with a plain-loop epoch run right after it in the same process; median 1-minute load average at "
          f"the runs' starts {load:.1f} on {os.cpu_count()} cores")
    print("| model | data | batch | steps/epoch | run | steps/s | plain loop steps/s | ratio | ratio (wall clock) | "
          "added CPU ms/step | target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        for variant in variants:
            runs = results[(case, variant)]
            med = {k: statistics.median(r[k] for r in runs)
                   for k in ("cpu", "plain_cpu", "ratio_cpu", "ratio_wall", "added_cpu")}
            target = "-" if variant == "lightning" else f">= 0.97 ({'met' if med['ratio_cpu'] >= 0.97 else 'missed'})"
            first = runs[0]
            print(f"| {CASES[case][0][0].split('=')[1]} | {first['data']} | {first['batch_size']} | "
                  f"{first['steps_per_epoch']} | {LABELS[variant]} | {med['cpu']:.1f} | {med['plain_cpu']:.1f} | "
                  f"{med['ratio_cpu']:.3f} | {med['ratio_wall']:.3f} | {med['added_cpu']:.2f} | {target} |")


if __name__ == "__main__":
    main()
