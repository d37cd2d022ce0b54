"""Tokenization and batching throughput on a 100k-line text file, cold and with a warm tokenizer cache.

    python benchmarks/dataloading.py [--rows 100000]

Reference: the same work in plain Python (str.split, a dict vocabulary, list lookups), no `tokenizers`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from dlkit.data.text import TextFilesDataModule, synthetic_review


def plain_python(path: Path) -> float:
    start = time.perf_counter()
    rows = [line.rsplit(",", 1) for line in path.read_text().splitlines()[1:]]
    counts = Counter(w for text, _ in rows for w in text.lower().split())
    vocab = {w: i + 7 for i, (w, _) in enumerate(counts.most_common(30000))}
    _ = [[vocab.get(w, 1) for w in text.lower().split()] for text, _ in rows]
    return time.perf_counter() - start


def dlkit_setup(path: Path, cache: Path) -> tuple[float, float]:
    """(seconds to set up all splits, seconds from then to the first padded batch)."""
    start = time.perf_counter()
    dm = TextFilesDataModule(train_file=str(path), cache_dir=str(cache), batch_size=64)
    dm.setup()
    ready = time.perf_counter()
    next(iter(dm.train_dataloader()))
    return ready - start, time.perf_counter() - ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.csv"
        path.write_text("text,label\n" + "\n".join(",".join(synthetic_review(rng)) for _ in range(args.rows)) + "\n")
        cold, warm, first_batch, plain = [], [], [], []
        for repeat in range(args.repeats):
            cache = Path(tmp) / f"cache{repeat}"
            cold.append(dlkit_setup(path, cache)[0])
            seconds, batch = dlkit_setup(path, cache)
            warm.append(seconds)
            first_batch.append(batch)
            plain.append(plain_python(path))
    med = statistics.median
    print(f"\n{args.rows} rows, medians of {args.repeats}:")
    print("| what | seconds | rows/s |")
    print("|---|---|---|")
    print(f"| dlkit: train tokenizer + encode (cold cache) | {med(cold):.2f} | {args.rows / med(cold):,.0f} |")
    print(f"| dlkit: set up all splits (warm cache) | {med(warm):.2f} | {args.rows / med(warm):,.0f} |")
    print(f"| dlkit: first padded batch after setup | {med(first_batch) * 1000:.1f} ms | |")
    print(f"| reference: plain Python split + dict vocabulary | {med(plain):.2f} | {args.rows / med(plain):,.0f} |")


if __name__ == "__main__":
    main()
