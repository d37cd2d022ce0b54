"""Train every zoo model on its offline default to convergence; print test accuracy and wall time.

    python benchmarks/accuracy.py [--models mlp lenet ...] [--seeds 0 1 2]

Targets (issue 3): MLP on digits >= 0.97, LeNet and AlexNet on digits >= 0.98. Runs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from dlkit import jobs

# model, overrides (everything else is the packaged default), metric, target
CASES = [
    ("mlp", ["trainer.max_epochs=60", "callbacks.early_stopping.patience=15"], "test/acc", 0.97),
    ("lenet", ["experiment=digits_lenet"], "test/acc", 0.98),
    ("alexnet", ["trainer.max_epochs=60", "callbacks.early_stopping.patience=15"], "test/acc", 0.98),
    ("rnn", ["trainer.max_epochs=10"], "test/acc", None),
    ("lstm", ["trainer.max_epochs=10"], "test/acc", None),
    ("gru", ["trainer.max_epochs=10"], "test/acc", None),
    ("textcnn", ["trainer.max_epochs=10"], "test/acc", None),
    ("transformer", ["trainer.max_epochs=12"], "test/exact_match", 0.95),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="*", default=[c[0] for c in CASES])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2], help="median over these seeds")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for model, overrides, metric, target in CASES:
            if model not in args.models:
                continue
            values, times = [], []
            for seed in args.seeds:
                start = time.perf_counter()
                [job] = jobs.train([f"model={model}", "~callbacks.progress_bar", "~callbacks.model_summary",
                                      "logger=csv", f"seed={seed}", f"paths.output_dir={out}", *overrides])
                times.append(time.perf_counter() - start)
                values.append(job.metrics[metric])
                print(f"{model} seed {seed}: {metric} {values[-1]:.4f}", flush=True)
            data = job.choices.get("data")
            rows.append((model, data, metric, statistics.median(values), target, statistics.median(times)))
    print(f"\nmedians over seeds {args.seeds}")
    print("\n| model | data | metric | value | target | wall time (s) |")
    print("|---|---|---|---|---|---|")
    for model, data, metric, value, target, seconds in rows:
        mark = "" if target is None else (" (met)" if value >= target else " (MISSED)")
        print(f"| {model} | {data} | {metric} | {value:.4f} | {target or '-'}{mark} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
