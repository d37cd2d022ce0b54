"""Training speed on a CUDA GPU: steps/s, tokens/s, model FLOPs utilisation and peak memory of `dlkit train`.

    python benchmarks/gpu.py [--steps 40] [--warmup 15] [--models bert_base transformer_base]
                             [--precisions bf16 32] [--compile off on] [--peak-tflops N]

Each row is one `dlkit train` (the CLI's own path, a process of its own) of a model at one precision, with or
without `compile=true`, on one GPU (`trainer=gpu`): `warmup` steps not measured (compilation, cuDNN autotuning,
the allocator), then `steps` steps timed between the starts of the first and the last measured step, the GPU
synchronised at each step start (a timing callback, beside the run). Data: bert_base pre-trains (masked LM + next
sentence, batch 32) on a corpus this script writes (long sentences, so every pair fills the 128 positions);
transformer_base (6+6 layers, d_model 512) learns the synthetic reversal task with 60-100-word sentences, batch 64.

MFU = achieved model FLOPs per second / the GPU's peak. Model FLOPs of a training step = 3 x the forward pass's
matrix-multiply FLOPs (the backward pass costs twice the forward), counted from the architecture and the batch's
padded shape by `bert_forward_flops` / `transformer_forward_flops` below (embedding look-ups, softmax and layer norms
left out, the usual convention); tests/test_gpu_benchmark.py checks them against a hand count and torch's
FlopCounterMode. The peak is the GPU's dense bf16 tensor rate (fp32 rows: its TF32 rate, which torch uses for fp32
matmuls with `matmul_precision=high`, which every row sets), from PEAK_TFLOPS by device name or --peak-tflops.
Target (issue 22): bert_base bf16 MFU >= 50% on an H100/H200-class GPU.

Then a 2-step smoke run of each GPU trainer option the machine can run: `trainer=gpu`, and with 2+ GPUs
`trainer=multi_gpu` and `trainer=fsdp`. On a machine without a CUDA GPU the script says so in one line and exits 0.
`--allow-cpu` runs the same plumbing on the CPU with tiny models (no compile, no smoke runs): what the CPU test does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# dense tensor-core TFLOPS: (bf16, tf32), by a piece of torch.cuda.get_device_name(); vendors' data sheets, SXM parts
PEAK_TFLOPS = {
    "H200": (989.0, 494.0), "H100 PCIe": (756.0, 378.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0), "L4": (121.0, 60.0), "A10": (125.0, 62.5), "RTX 4090": (165.0, 82.6),
}
TIMER = '''
import json, os, time
import pytorch_lightning as pl
import torch


class Timer(pl.Callback):
    """Each training step's start time (GPU synchronised), batch shape and real tokens; peak memory at the end."""

    def __init__(self):
        self.steps = []

    def on_train_batch_start(self, trainer, module, batch, index):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ids = batch["input_ids"] if "input_ids" in batch else batch["src_ids"]
        shape = {name: list(value.shape) for name, value in batch.items() if name.endswith("_ids")}
        real = sum(int(batch[name].sum()) for name in ("attention_mask", "src_mask", "tgt_mask") if name in batch)
        self.steps.append({"time": time.perf_counter(), "shape": shape, "tokens": real or ids.numel()})

    def on_train_end(self, trainer, module):
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
        with open(os.environ["GPU_BENCH_OUT"], "w") as handle:
            json.dump({"steps": self.steps, "peak_memory": peak, "spec": module.spec.as_dict()}, handle)
'''


# -- model FLOPs -------------------------------------------------------------------------------------------------
def bert_forward_flops(batch: int, seq: int, hidden: int, layers: int, intermediate: int, vocab: int) -> int:
    """Matrix-multiply FLOPs (2 per multiply-add) of one BertForPreTraining forward pass over [batch, seq]."""
    tokens = batch * seq
    per_layer = (4 * 2 * tokens * hidden * hidden  # query, key, value and output projections
                 + 2 * 2 * batch * seq * seq * hidden  # scores Q K^T and the weighted sum of V, all heads
                 + 2 * 2 * tokens * hidden * intermediate)  # the feed-forward block's two layers
    heads = (2 * tokens * hidden * hidden + 2 * tokens * hidden * vocab  # MLM transform and decoder, every position
             + 2 * batch * hidden * hidden + 2 * batch * hidden * 2)  # pooler and next-sentence classifier
    return layers * per_layer + heads


def transformer_forward_flops(batch: int, src: int, tgt: int, d_model: int, encoder_layers: int,
                              decoder_layers: int, d_ff: int, vocab: int) -> int:
    """Matrix-multiply FLOPs of one encoder-decoder Transformer forward pass (teacher forcing, tgt target positions)."""
    s, t = batch * src, batch * tgt
    encoder = 4 * 2 * s * d_model ** 2 + 2 * 2 * batch * src * src * d_model + 2 * 2 * s * d_model * d_ff
    decoder = (4 * 2 * t * d_model ** 2 + 2 * 2 * batch * tgt * tgt * d_model  # self-attention
               + 2 * 2 * t * d_model ** 2 + 2 * 2 * s * d_model ** 2  # cross: Q, O of targets, K, V of sources
               + 2 * 2 * batch * tgt * src * d_model  # cross-attention scores and sum
               + 2 * 2 * t * d_model * d_ff)
    return encoder_layers * encoder + decoder_layers * decoder + 2 * t * d_model * vocab


def training_flops(forward: int) -> int:
    """A training step: the forward pass and a backward pass of twice its cost."""
    return 3 * forward


# -- the cases ---------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One model's `dlkit train` overrides and its FLOPs per step from the batch's padded shape and the data spec."""

    overrides: list[str]
    sizes: dict[str, int]

    def step_flops(self, shape: dict[str, list[int]], spec: dict) -> int:
        if "input_ids" in shape:
            batch, seq = shape["input_ids"]
            return training_flops(bert_forward_flops(batch, seq, vocab=spec["vocab_size"], **self.sizes))
        batch, src = shape["src_ids"]
        tgt = shape["tgt_ids"][1] - 1  # (the model reads tgt[:, :-1])
        return training_flops(transformer_forward_flops(batch, src, tgt, vocab=spec["tgt_vocab_size"], **self.sizes))


def cases(corpus: Path, tiny: bool) -> dict[str, Case]:
    """bert_base and transformer_base at their sizes (tiny: a few units wide, for the CPU check)."""
    bert = {"hidden": 768, "layers": 12, "intermediate": 3072} if not tiny else \
        {"hidden": 32, "layers": 2, "intermediate": 64}
    heads = 12 if not tiny else 2
    seq = {"d_model": 512, "encoder_layers": 6, "decoder_layers": 6, "d_ff": 2048} if not tiny else \
        {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "d_ff": 64}
    return {
        "bert_base": Case(["model=bert_pretrain", f"model.hidden_size={bert['hidden']}",
                           f"model.num_hidden_layers={bert['layers']}", f"model.num_attention_heads={heads}",
                           f"model.intermediate_size={bert['intermediate']}", "data=synthetic_corpus",
                           f"data.corpus_file={corpus}", "data.max_length=128",
                           f"data.batch_size={32 if not tiny else 4}"], bert),
        "transformer_base": Case(["model=transformer_base", f"model.d_model={seq['d_model']}",
                                  f"model.layers={seq['encoder_layers']}", f"model.d_ff={seq['d_ff']}",
                                  *([] if not tiny else ["model.heads=2"]), "data=synthetic_reverse",
                                  "data.min_length=60", "data.max_words=100", "data.max_length=128",
                                  "data.num_examples=4000", f"data.batch_size={64 if not tiny else 4}"],
                                 {"d_model": seq["d_model"], "encoder_layers": seq["encoder_layers"],
                                  "decoder_layers": seq["encoder_layers"], "d_ff": seq["d_ff"]}),
    }


def write_corpus(path: Path, documents: int = 1500, seed: int = 0) -> Path:
    """A deterministic corpus of long sentences (60-90 made-up words), 6 per document: every next-sentence pair
    fills 128 positions."""
    rng = random.Random(seed)
    words = [f"w{rng.randrange(36 ** 3):x}" for _ in range(4000)]
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(documents):
            for _ in range(6):
                handle.write(" ".join(rng.choices(words, k=rng.randint(60, 90))) + " .\n")
            handle.write("\n")
    return path


# -- running -----------------------------------------------------------------------------------------------------
def dlkit_bin() -> str:
    return shutil.which("dlkit", path=str(Path(sys.executable).parent)) or "dlkit"


def measure(case: Case, precision: str, compiled: bool, warmup: int, steps: int, folder: Path,
            trainer: str) -> dict:
    """One timed `dlkit train`: its steps/s, tokens/s, model TFLOP/s and peak memory."""
    out = folder / "timer.json"
    out.unlink(missing_ok=True)
    command = [dlkit_bin(), "train", *case.overrides, f"trainer={trainer}", f"precision={precision}",
               f"compile={str(compiled).lower()}", "matmul_precision=high", f"trainer.max_steps={warmup + steps}",
               "trainer.max_epochs=-1",
               "trainer.limit_val_batches=0", "test=false", "logger=csv", "callbacks=minimal",
               "+callbacks.gpu_timer._target_=gpu_bench_timer.Timer"]
    env = {**os.environ, "PYTHONPATH": str(folder), "GPU_BENCH_OUT": str(out)}
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not out.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {result.returncode}: {tail[0][:160]}"}
    record = json.loads(out.read_text())
    timed = record["steps"][warmup:]
    seconds = timed[-1]["time"] - timed[0]["time"]
    intervals = timed[:-1]  # each interval: one whole step, from its start to the next one's
    flops = sum(case.step_flops(s["shape"], record["spec"]) for s in intervals)
    return {"steps_per_s": len(intervals) / seconds, "tokens_per_s": sum(s["tokens"] for s in intervals) / seconds,
            "tflops": flops / seconds / 1e12, "peak_gb": record["peak_memory"] / 2 ** 30}


def peak_tflops(device: str, precision: str, given: float | None) -> float | None:
    """The GPU's dense peak for the precision (bf16/16: the bf16 rate; 32: TF32), or None when unknown."""
    if given:
        return given
    for name, (half, tf32) in PEAK_TFLOPS.items():
        if name in device:
            return half if precision in ("bf16", "16") else tf32
    return None


def format_table(rows: list[dict]) -> str:
    """The results as a Markdown table (what docs/benchmarks.md takes)."""
    lines = ["| model | precision | compile | steps/s | tokens/s | TFLOP/s | MFU | peak GB |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['precision']} | {row['compile']} | failed: {row['error']} "
                         "| | | | |")
            continue
        mfu = f"{100 * row['mfu']:.1f}%" if row.get("mfu") is not None else "n/a"
        lines.append(f"| {row['model']} | {row['precision']} | {row['compile']} | {row['steps_per_s']:.2f} | "
                     f"{row['tokens_per_s']:,.0f} | {row['tflops']:.3g} | {mfu} | {row['peak_gb']:.2f} |")
    return "\n".join(lines)


def smoke(trainers: list[str], folder: Path) -> list[tuple[str, str]]:
    """A 2-step run of each trainer option: (option, ok or the failure's last line)."""
    results = []
    for trainer in trainers:
        result = subprocess.run([dlkit_bin(), "train", "model=mlp", f"trainer={trainer}", "trainer.max_steps=2",
                                 "trainer.limit_val_batches=1", "test=false", "logger=csv", "callbacks=minimal"],
                                cwd=folder, capture_output=True, text=True)
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        results.append((trainer, "ok" if result.returncode == 0 else f"exit {result.returncode}: {last[0][:160]}"))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--models", nargs="+", default=["bert_base", "transformer_base"],
                        choices=["bert_base", "transformer_base"])
    parser.add_argument("--precisions", nargs="+", default=["bf16", "32"], choices=["bf16", "16", "32"])
    parser.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--peak-tflops", type=float, help="the GPU's peak for MFU, when PEAK_TFLOPS lacks it")
    parser.add_argument("--allow-cpu", action="store_true", help="check the plumbing on the CPU with tiny models")
    args = parser.parse_args()
    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.allow_cpu:
        print("No CUDA GPU on this machine (torch.cuda.is_available() is False): nothing to measure.")
        return 0
    device = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    gpus = torch.cuda.device_count() if on_gpu else 0
    compiles = args.compile if on_gpu else ["off"]
    print(f"device: {device} x {gpus}; torch {torch.__version__}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "gpu_bench_timer.py").write_text(TIMER)
        corpus = write_corpus(folder / "corpus.txt", documents=1500 if on_gpu else 60)
        for model in args.models:
            case = cases(corpus, tiny=not on_gpu)[model]
            for precision in args.precisions:
                for compiled in compiles:
                    row = {"model": model, "precision": precision, "compile": compiled,
                           **measure(case, precision, compiled == "on", args.warmup, args.steps, folder,
                                     "gpu" if on_gpu else "cpu")}
                    peak = peak_tflops(device, precision, args.peak_tflops)
                    if "tflops" in row:
                        row["mfu"] = row["tflops"] / peak if peak else None
                    rows.append(row)
                    print(format_table([row]).splitlines()[-1], flush=True)
        print("\n" + format_table(rows))
        if on_gpu:
            trainers = ["gpu", *(["multi_gpu", "fsdp"] if gpus >= 2 else [])]
            print("\n| trainer | 2-step run |\n|---|---|")
            for trainer, outcome in smoke(trainers, folder):
                print(f"| {trainer} | {outcome} |")
            if gpus < 2:
                print("(multi_gpu and fsdp need 2 GPUs: not run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
