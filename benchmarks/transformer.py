"""dlkit's Transformer against torch.nn.Transformer of the same size on the CPU, and decoding with/without cache.

    python benchmarks/transformer.py [--repeats 7]

One training step = forward + backward + AdamW step on a batch of 32 pairs of length 32, both models with the
same sizes (d_model 256, 4 heads, 3+3 layers, FFN 1024, dropout 0.1). Medians of interleaved repeats.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from dlkit.models.transformer import Transformer

D_MODEL, HEADS, LAYERS, FFN, VOCAB, BATCH, LENGTH = 256, 4, 3, 1024, 8000, 32, 32


class TorchReference(nn.Module):
    """torch.nn.Transformer with the same embeddings, positions and output layer around it."""

    def __init__(self) -> None:
        super().__init__()
        self.src = nn.Embedding(VOCAB, D_MODEL)
        self.tgt = nn.Embedding(VOCAB, D_MODEL)
        self.core = nn.Transformer(D_MODEL, HEADS, LAYERS, LAYERS, FFN, dropout=0.1, batch_first=True)
        self.out = nn.Linear(D_MODEL, VOCAB)
        self.register_buffer("positions", torch.randn(512, D_MODEL))

    def forward(self, src, src_mask, tgt, tgt_mask):
        causal = self.core.generate_square_subsequent_mask(tgt.shape[1], dtype=torch.bool)
        hidden = self.core(self.src(src) * math.sqrt(D_MODEL) + self.positions[: src.shape[1]],
                           self.tgt(tgt) * math.sqrt(D_MODEL) + self.positions[: tgt.shape[1]],
                           tgt_mask=causal, src_key_padding_mask=~src_mask.bool(),
                           tgt_key_padding_mask=~tgt_mask.bool(), memory_key_padding_mask=~src_mask.bool(),
                           tgt_is_causal=True)
        return self.out(hidden)


def step_time(model: nn.Module, batch: tuple[torch.Tensor, ...], optimizer: torch.optim.Optimizer) -> float:
    start = time.perf_counter()
    logits = model(*batch)
    loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), batch[2].reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    src = torch.randint(7, VOCAB, (BATCH, LENGTH))
    tgt = torch.randint(7, VOCAB, (BATCH, LENGTH))
    mask = torch.ones(BATCH, LENGTH, dtype=torch.long)
    mask[: BATCH // 2, LENGTH - 6:] = 0
    batch = (src, mask, tgt, mask)
    ours = Transformer(VOCAB, VOCAB, d_model=D_MODEL, heads=HEADS, layers=LAYERS, d_ff=FFN, dropout=0.1).train()
    theirs = TorchReference().train()
    optimizers = {m: torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (ours, theirs)}
    for model in (ours, theirs):  # warm up
        step_time(model, batch, optimizers[model])
    times: dict[nn.Module, list[float]] = {ours: [], theirs: []}
    for _ in range(args.repeats):
        for model in (ours, theirs):
            times[model].append(step_time(model, batch, optimizers[model]))
    ours_s, theirs_s = statistics.median(times[ours]), statistics.median(times[theirs])

    ours.eval()
    decode = {}
    for use_cache in (True, False):
        runs = []
        for _ in range(max(3, args.repeats // 2)):
            start = time.perf_counter()
            ours.greedy(src[:8], mask[:8], max_length=64, use_cache=use_cache)
            runs.append(time.perf_counter() - start)
        decode[use_cache] = statistics.median(runs)
    print(f"\nthreads {torch.get_num_threads()}, batch {BATCH}x{LENGTH}, d_model {D_MODEL}, {LAYERS}+{LAYERS} layers")
    print("| what | dlkit (ms) | reference (ms) | ratio dlkit/reference |")
    print("|---|---|---|---|")
    print(f"| training step vs torch.nn.Transformer | {ours_s * 1000:.1f} | {theirs_s * 1000:.1f} | "
          f"{ours_s / theirs_s:.2f} |")
    print(f"| greedy decoding, 8 x 64 tokens: with KV cache vs without | {decode[True] * 1000:.1f} | "
          f"{decode[False] * 1000:.1f} | {decode[True] / decode[False]:.2f} |")


if __name__ == "__main__":
    main()
