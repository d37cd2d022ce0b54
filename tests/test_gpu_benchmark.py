"""benchmarks/gpu.py on a machine without a GPU: its FLOP counts against a hand count and torch's FlopCounterMode,
its one-line answer when there is no GPU, its table, and its whole plumbing on the CPU (--allow-cpu)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import gpu  # noqa: E402


def test_bert_flops_equal_a_hand_count_and_torch_s_flop_counter():
    # batch 2, sequence 5, hidden 8, 2 layers, feed-forward 16, vocabulary 50, by hand (2 FLOPs per multiply-add):
    #   per layer: Q, K, V, O 4 * 2*10*8*8 = 5120; scores and sum 2 * 2*2*5*5*8 = 1600; FFN 2 * 2*10*8*16 = 5120
    #   heads: MLM transform 2*10*8*8 = 1280, decoder 2*10*8*50 = 8000, pooler 2*2*8*8 = 256, NSP 2*2*8*2 = 64
    hand = 2 * (5120 + 1600 + 5120) + 1280 + 8000 + 256 + 64
    assert hand == 33280
    assert gpu.bert_forward_flops(2, 5, hidden=8, layers=2, intermediate=16, vocab=50) == hand
    assert gpu.training_flops(hand) == 3 * hand
    from dlkit.models.bert import BertForPreTraining

    model = BertForPreTraining(50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)
    ids = torch.randint(5, 50, (2, 5))
    with FlopCounterMode(display=False) as counter:
        model(ids, torch.ones_like(ids), torch.zeros_like(ids))
    assert counter.get_total_flops() == hand


def test_transformer_flops_equal_torch_s_flop_counter():
    from dlkit.models.transformer import Transformer

    model = Transformer(40, 40, d_model=16, heads=2, layers=2, d_ff=32, max_length=32).eval()
    src, tgt = torch.randint(7, 40, (3, 9)), torch.randint(7, 40, (3, 6))
    # (the math kernel of attention: its matrix products are counted; the fused CPU kernel's are not)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(src, torch.ones_like(src), tgt, torch.ones_like(tgt))
    assert counter.get_total_flops() == gpu.transformer_forward_flops(3, 9, 6, d_model=16, encoder_layers=2,
                                                                      decoder_layers=2, d_ff=32, vocab=40)


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "No CUDA GPU on this machine (torch.cuda.is_available() is False): nothing to measure."]


def test_the_table_names_every_column_and_failures():
    table = gpu.format_table([
        {"model": "bert_base", "precision": "bf16", "compile": "on", "steps_per_s": 12.345, "tokens_per_s": 50566.4,
         "tflops": 512.25, "mfu": 0.518, "peak_gb": 21.5},
        {"model": "bert_base", "precision": "32", "compile": "off", "steps_per_s": 3.0, "tokens_per_s": 12288.0,
         "tflops": 120.0, "mfu": None, "peak_gb": 30.0},
        {"model": "transformer_base", "precision": "bf16", "compile": "on", "error": "exit 1: out of memory"}])
    assert table.splitlines() == [
        "| model | precision | compile | steps/s | tokens/s | TFLOP/s | MFU | peak GB |",
        "|---|---|---|---|---|---|---|---|",
        "| bert_base | bf16 | on | 12.35 | 50,566 | 512 | 51.8% | 21.50 |",
        "| bert_base | 32 | off | 3.00 | 12,288 | 120 | n/a | 30.00 |",
        "| transformer_base | bf16 | on | failed: exit 1: out of memory | | | | |"]
    assert gpu.peak_tflops("NVIDIA H200", "bf16", None) == 989.0
    assert gpu.peak_tflops("NVIDIA H100 PCIe", "32", None) == 378.0
    assert gpu.peak_tflops("Some GPU", "bf16", None) is None and gpu.peak_tflops("Some GPU", "bf16", 100.0) == 100.0


@pytest.mark.slow
def test_the_whole_benchmark_runs_on_the_cpu_with_tiny_models():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py"), "--allow-cpu", "--models", "bert_base",
                             "--precisions", "32", "--steps", "4", "--warmup", "1", "--peak-tflops", "1",
                             "--batch-size", "3"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = lines.index("| model | precision | compile | steps/s | tokens/s | TFLOP/s | MFU | peak GB |")
    cells = [c.strip() for c in lines[header + 2].strip("|").split("|")]
    assert cells[:3] == ["bert_base", "32", "off"]
    steps, tokens = float(cells[3]), float(cells[4].replace(",", ""))
    assert steps > 0 and tokens / steps == pytest.approx(3 * 128, rel=0.02)  # batches of 3 pairs cut to 128
    assert cells[6].endswith("%") and float(cells[5]) > 0
