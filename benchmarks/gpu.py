"""Training speed on a CUDA GPU: steps/s, tokens/s, model FLOPs utilisation and peak memory of `dlkit train`.

    python benchmarks/gpu.py [--steps 200] [--warmup 30] [--models bert_base transformer_base]
                             [--precisions bf16 32] [--compile on off] [--peak-tflops N] [--logs DIR]

Each row is one `dlkit train` (the CLI's own path, a process of its own) of a model at one precision, with or
without `compile=true`, on one GPU (`trainer=gpu`, loader workers on, no checkpoints): `warmup` steps not measured
(compilation, cuDNN autotuning, the allocator, the GPU's clocks), then `steps` steps timed from the start of the
first to the start of the last, the GPU synchronised at those two points only (a timing callback, beside the run);
all within one epoch. Data: bert_base pre-trains (masked LM + next sentence, batch 32) on a corpus this script writes
(long sentences: the pairs are cut to 128 positions); transformer_base (6+6 layers, d_model 512) learns the synthetic
reversal task with 60-100-word sentences, batch 64. The target row (bert_base, bf16, compiled) runs first; each run
has a time limit (--timeout) and its whole output goes to --logs (default: $OUT when set).

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
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# dense tensor-core TFLOPS: (bf16, tf32), by a piece of torch.cuda.get_device_name(), the first that matches (the
# specific names first); vendors' data sheets, SXM parts unless named
PEAK_TFLOPS = {
    "H200 NVL": (835.0, 418.0), "H100 NVL": (835.0, 418.0), "H100 PCIe": (756.0, 378.0), "H200": (989.0, 494.0),
    "H100": (989.0, 494.0), "A100": (312.0, 156.0), "L40S": (362.0, 183.0), "L40": (181.0, 90.5),
    "L4": (121.0, 60.0), "A10G": (70.0, 35.0), "A10": (125.0, 62.5), "RTX 4090": (165.0, 82.6),
}
TIMER = '''
import json, os, time
import pytorch_lightning as pl
import torch


class Timer(pl.Callback):
    """Each training step's start (the GPU synchronised only at the first and last timed step), epoch, batch shape
    and real tokens (kept on the device until the end); peak memory at the end."""

    def __init__(self):
        self.steps, self.tokens = [], []
        self.marks = {int(os.environ["GPU_BENCH_FIRST"]), int(os.environ["GPU_BENCH_LAST"])}

    def on_train_batch_start(self, trainer, module, batch, index):
        if len(self.steps) in self.marks and torch.cuda.is_available():
            torch.cuda.synchronize()
        shape = {name: list(value.shape) for name, value in batch.items() if name.endswith("_ids")}
        masks = [batch[name].sum() for name in ("attention_mask", "src_mask", "tgt_mask") if name in batch]
        self.tokens.append(sum(masks) if masks else batch["input_ids"].numel())
        self.steps.append({"time": time.perf_counter(), "epoch": trainer.current_epoch, "shape": shape})

    def on_train_end(self, trainer, module):
        for step, tokens in zip(self.steps, self.tokens):
            step["tokens"] = int(tokens)
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


def cases(corpus: Path, tiny: bool, batch_size: int | None = None) -> dict[str, Case]:
    """bert_base and transformer_base at their sizes (tiny: a few units wide, for the CPU check), with their batch
    sizes (32 and 64) or batch_size for both."""
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
                           f"data.batch_size={batch_size or (32 if not tiny else 4)}"], bert),
        "transformer_base": Case(["model=transformer_base", f"model.d_model={seq['d_model']}",
                                  f"model.layers={seq['encoder_layers']}", f"model.d_ff={seq['d_ff']}",
                                  *([] if not tiny else ["model.heads=2"]), "data=synthetic_reverse",
                                  "data.min_length=60", "data.max_words=100", "data.max_length=128",
                                  f"data.num_examples={20000 if not tiny else 2000}",
                                  f"data.batch_size={batch_size or (64 if not tiny else 4)}"],
                                 {"d_model": seq["d_model"], "encoder_layers": seq["encoder_layers"],
                                  "decoder_layers": seq["encoder_layers"], "d_ff": seq["d_ff"]}),
    }


def write_corpus(path: Path, documents: int = 2500, seed: int = 0) -> Path:
    """A deterministic corpus of long sentences (60-90 made-up words), 6 per document: every next-sentence pair is
    cut to 128 positions."""
    rng = random.Random(seed)
    words = [f"w{rng.randrange(36 ** 3):x}" for _ in range(4000)]
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(documents):
            for _ in range(6):
                handle.write(" ".join(rng.choices(words, k=rng.randint(60, 90))) + " .\n")
            handle.write("\n")
    return path


# -- running -----------------------------------------------------------------------------------------------------
def environment(folder: Path, **extra: str) -> dict[str, str]:
    """This environment with the timer's folder and this checkout first on PYTHONPATH (`python -m dlkit` then runs
    this checkout's dlkit, installed or not)."""
    paths = [str(folder), str(Path(__file__).resolve().parents[1])]
    paths += [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


def run_dlkit(arguments: list[str], folder: Path, env: dict[str, str], timeout: float, log: Path | None) -> str | None:
    """`python -m dlkit ARGUMENTS` in folder: None when it succeeded, else what went wrong in one line; its whole
    output appended to log."""
    command = [sys.executable, "-m", "dlkit", *arguments]
    try:
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
        output, failure = result.stdout + result.stderr, None
        if result.returncode != 0:
            last = result.stderr.strip().splitlines()[-1:] or result.stdout.strip().splitlines()[-1:] or [""]
            failure = f"exit {result.returncode}: {last[0][:160]}"
    except subprocess.TimeoutExpired as err:
        output, failure = f"{err.stdout or ''}{err.stderr or ''}", f"timed out after {timeout:g} s"
    if log is not None:
        with open(log, "a", encoding="utf-8", errors="replace") as handle:
            handle.write(f"$ {' '.join(command)}\n{output}\n")
    return failure


def measure(case: Case, precision: str, compiled: bool, warmup: int, steps: int, folder: Path, trainer: str,
            timeout: float, log: Path | None) -> dict:
    """One timed `dlkit train`: its steps/s, tokens/s, model TFLOP/s and peak memory."""
    out = folder / "timer.json"
    out.unlink(missing_ok=True)
    arguments = ["train", *case.overrides, f"trainer={trainer}", f"precision={precision}",
                 f"compile={str(compiled).lower()}", "matmul_precision=high", f"trainer.max_steps={warmup + steps}",
                 "trainer.max_epochs=-1", "trainer.limit_val_batches=0", "test=false", "logger=csv",
                 "callbacks=minimal", "callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null",
                 f"data.num_workers={'null' if trainer == 'gpu' else 0}",
                 "+callbacks.gpu_timer._target_=gpu_bench_timer.Timer"]
    env = environment(folder, GPU_BENCH_OUT=str(out), GPU_BENCH_FIRST=str(warmup),
                      GPU_BENCH_LAST=str(warmup + steps - 1))
    failure = run_dlkit(arguments, folder, env, timeout, log)
    if failure or not out.is_file():
        return {"error": failure or "no timings written"}
    record = json.loads(out.read_text())
    timed = record["steps"][warmup:]
    if len(timed) < 2 or timed[0]["epoch"] != timed[-1]["epoch"]:
        return {"error": f"the {len(timed)} timed steps are not within one epoch: give fewer --steps"}
    seconds = timed[-1]["time"] - timed[0]["time"]
    intervals = timed[:-1]  # each interval: one whole step, from its start to the next one's
    flops = sum(case.step_flops(s["shape"], record["spec"]) for s in intervals)
    return {"steps_per_s": len(intervals) / seconds, "tokens_per_s": sum(s["tokens"] for s in intervals) / seconds,
            "tflops": flops / seconds / 1e12, "peak_gb": record["peak_memory"] / 2 ** 30}


def peak_tflops(device: str, precision: str, given: float | None) -> float | None:
    """The GPU's dense peak for the precision (bf16/16: the bf16 rate; 32: TF32, half of a given bf16 rate), or None
    when unknown."""
    if given:
        return given if precision in ("bf16", "16") else given / 2
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


def smoke(trainers: list[str], folder: Path, timeout: float, log: Path | None) -> list[tuple[str, str]]:
    """A 2-step run of each trainer option: (option, ok or what went wrong)."""
    arguments = ["train", "model=mlp", "trainer.max_steps=2", "trainer.limit_val_batches=1", "test=false",
                 "logger=csv", "callbacks=minimal"]
    return [(trainer, run_dlkit([*arguments, f"trainer={trainer}"], folder, environment(folder), timeout, log) or "ok")
            for trainer in trainers]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="timed steps (at least 2)")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=["bert_base", "transformer_base"],
                        choices=["bert_base", "transformer_base"])
    parser.add_argument("--precisions", nargs="+", default=["bf16", "32"], choices=["bf16", "16", "32"])
    parser.add_argument("--compile", nargs="+", default=["on", "off"], choices=["on", "off"])
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, when PEAK_TFLOPS lacks it")
    parser.add_argument("--batch-size", type=int, help="one batch size for every model (default: 32 for bert_base, "
                        "64 for transformer_base); the timed steps must fit in one epoch of the data")
    parser.add_argument("--timeout", type=float, default=240, help="seconds one dlkit train may take")
    parser.add_argument("--logs", default=os.environ.get("OUT"), help="folder for the runs' whole output")
    parser.add_argument("--allow-cpu", action="store_true", help="check the plumbing on the CPU with tiny models")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps: at least 2")
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
    log = Path(args.logs) / "gpu_benchmark_runs.log" if args.logs else None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "gpu_bench_timer.py").write_text(TIMER)
        corpus = write_corpus(folder / "corpus.txt", documents=2500 if on_gpu else 60)
        for model in args.models:
            case = cases(corpus, not on_gpu, args.batch_size)[model]
            for precision in args.precisions:
                for compiled in compiles:
                    row = {"model": model, "precision": precision, "compile": compiled,
                           **measure(case, precision, compiled == "on", args.warmup, args.steps, folder,
                                     "gpu" if on_gpu else "cpu", args.timeout, log)}
                    peak = peak_tflops(device, precision, args.peak_tflops)
                    if "tflops" in row:
                        row["mfu"] = row["tflops"] / peak if peak else None
                    rows.append(row)
                    print(format_table([row]).splitlines()[-1], flush=True)
        print("\n" + format_table(rows))
        if on_gpu:
            trainers = ["gpu", *(["multi_gpu", "fsdp"] if gpus >= 2 else [])]
            print("\n| trainer | 2-step run |\n|---|---|")
            for trainer, outcome in smoke(trainers, folder, args.timeout, log):
                print(f"| {trainer} | {outcome} |")
            if gpus < 2:
                print("(multi_gpu and fsdp need 2 GPUs: not run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
