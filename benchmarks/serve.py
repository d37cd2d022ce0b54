"""`dlkit serve` throughput and latency against calling the model in-process (the floor).

    python benchmarks/serve.py [--seconds 5] [--rounds 3] [--clients 1 8 64] [--models mlp textcnn]

For each model a run is trained first (the default recipe, 2 epochs, in a temporary folder). Then, in rounds: the
floor, `inference.predict(loaded, [one input])` in a loop in this process (what a program that imports dlkit does
per request), for `seconds`; then `dlkit serve RUN` (its defaults: batches of at most 64, 2 ms batch timeout) as a
process of its own, and `clients` concurrent HTTP clients (aiohttp, in this process) each sending one-input
requests back to back for `seconds`. Every request holds one input: a digits image as base64 .npy bytes (mlp) or a
review-like sentence (textcnn). Throughput is answered requests per second; latency is each request's round trip.
The table gives the medians over the rounds (the rounds interleave floor and server, so the machine's drift hits
both). The clients share the machine's cores with the server: on 2 cores the figures are the whole system's.
Target (issue 21): at 64 clients, throughput >= 0.7x the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TRAIN = {"mlp": ["model=mlp"], "textcnn": ["model=textcnn"]}
WARMUP = 0.5  # seconds of each load test not measured
WORDS = ["the acting was", "a truly", "the plot was not", "wonderful", "dull", "great music", "boring", "fine"]


def dlkit_bin() -> str:
    return shutil.which("dlkit", path=str(Path(sys.executable).parent)) or "dlkit"


def train(model: str, folder: Path) -> Path:
    subprocess.run([dlkit_bin(), "train", *TRAIN[model], "trainer.max_epochs=2", "logger=csv", "callbacks=minimal"],
                   cwd=folder, check=True, capture_output=True)
    return next(p.parent for p in (folder / "outputs").rglob("summary.json"))


def inputs(model: str, count: int = 256) -> list[str]:
    """`count` request inputs: base64 .npy digits (mlp) or short texts (textcnn)."""
    if model == "mlp":
        import numpy as np
        from sklearn.datasets import load_digits

        images = load_digits().images
        encoded = []
        for image in images[:count]:
            buffer = io.BytesIO()
            np.save(buffer, image)
            encoded.append(base64.b64encode(buffer.getvalue()).decode())
        return encoded
    return [" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(1 + i % 5)) for i in range(count)]


def floor(run: Path, items: list[str], images: bool, seconds: float) -> dict[str, float]:
    """In-process: one predict call per input, back to back."""
    from dlkit import inference

    loaded = inference.load(str(run), [], for_predict=True)
    raw = [base64.b64decode(i) for i in items] if images else items
    latencies, start, n = [], time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        inference.predict(loaded, [raw[n % len(raw)]])
        latencies.append(time.perf_counter() - began)
        n += 1
    return summarise(latencies, time.perf_counter() - start)


async def load_test(url: str, items: list[str], clients: int, seconds: float) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    measured = time.perf_counter() + WARMUP  # connections opened and the server warm: then the clock starts
    deadline = measured + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(index: int) -> None:
            n = index
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                async with session.post(url + "/predict", json={"inputs": [items[n % len(items)]]}) as answer:
                    assert answer.status == 200, await answer.text()
                    await answer.read()
                if began >= measured:
                    latencies.append(time.perf_counter() - began)
                n += clients

        await asyncio.gather(*(client(i) for i in range(clients)))
        return summarise(latencies, time.perf_counter() - measured)


def summarise(latencies: list[float], elapsed: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"rps": len(ordered) / elapsed, "p50_ms": 1000 * ordered[len(ordered) // 2],
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]}


def served(run: Path, items: list[str], clients: list[int], seconds: float, workers: int,
           options: list[str]) -> dict[int, dict[str, float]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([dlkit_bin(), "serve", str(run), "--port", str(port), "--workers", str(workers),
                                *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(2 * (workers - 1))  # the other workers load their models too
        results = {c: asyncio.run(load_test(url, items, c, seconds)) for c in clients}
        batching = json.loads(urllib.request.urlopen(url + "/info").read())["batching"]  # one worker's
        results[0] = {"inputs_per_call": batching["inputs"] / max(1, batching["model_calls"])}
        return results
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--models", nargs="+", default=list(TRAIN), choices=list(TRAIN))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="dlkit serve --workers to try")
    parser.add_argument("--serve-options", default="", help="more options of dlkit serve, e.g. '--batch-timeout 0'")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    print(f"{'model':8} {'workers':>7} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'x floor':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            folder = Path(tmp, model)
            folder.mkdir()
            run = train(model, folder)
            items = inputs(model)
            floors: list[dict[str, float]] = []
            servers: dict[int, list[dict[int, dict[str, float]]]] = {w: [] for w in args.workers}
            for _ in range(args.rounds):
                floors.append(floor(run, items, model == "mlp", args.seconds))
                for workers in args.workers:
                    servers[workers].append(served(run, items, args.clients, args.seconds, workers,
                                                  args.serve_options.split()))
            base = {k: statistics.median(f[k] for f in floors) for k in floors[0]}
            print(f"{model:8} {'floor':>7} {'':>7} {base['rps']:8.0f} {base['p50_ms']:8.2f} {base['p99_ms']:8.2f} "
                  f"{1:8.2f}")
            for workers, rounds in servers.items():
                for c in args.clients:
                    row = {k: statistics.median(s[c][k] for s in rounds) for k in rounds[0][c]}
                    print(f"{model:8} {workers:7d} {c:7d} {row['rps']:8.0f} {row['p50_ms']:8.2f} "
                          f"{row['p99_ms']:8.2f} {row['rps'] / base['rps']:8.2f}")
                per_call = statistics.median(s[0]["inputs_per_call"] for s in rounds)
                print(f"{model:8} {workers:7d} inputs per model call (one worker, all levels): {per_call:.1f}")


if __name__ == "__main__":
    main()
