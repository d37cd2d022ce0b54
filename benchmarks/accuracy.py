"""Train every zoo model on its offline default to convergence; print test accuracy and wall time.

    python benchmarks/accuracy.py [--out docs/benchmarks/accuracy.md]

Targets (issue 3): MLP on digits >= 0.97, LeNet and AlexNet on digits >= 0.98. Runs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from dlkit import runner

# model, overrides (everything else is the packaged default), target
CASES = [
    ("mlp", ["trainer.max_epochs=60", "callbacks.early_stopping.patience=15"], 0.97),
    ("lenet", ["experiment=digits_lenet"], 0.98),
    ("alexnet", ["trainer.max_epochs=60", "callbacks.early_stopping.patience=15"], 0.98),
    ("rnn", ["trainer.max_epochs=10"], None),
    ("lstm", ["trainer.max_epochs=10"], None),
    ("gru", ["trainer.max_epochs=10"], None),
    ("textcnn", ["trainer.max_epochs=10"], None),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="*", default=[c[0] for c in CASES])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for model, overrides, target in CASES:
            if model not in args.models:
                continue
            start = time.perf_counter()
            [job] = runner.train([f"model={model}", "~callbacks.progress_bar", "~callbacks.model_summary",
                                  f"paths.output_dir={out}", *overrides])
            print(f"{model}: test/acc {job.metrics['test/acc']:.4f}", flush=True)
            seconds = time.perf_counter() - start
            data = job.choices.get("data")
            rows.append((model, data, job.metrics["test/acc"], target, seconds))
    print("\n| model | data | test accuracy | target | wall time (s) |")
    print("|---|---|---|---|---|")
    for model, data, acc, target, seconds in rows:
        mark = "" if target is None else (" (met)" if acc >= target else " (MISSED)")
        print(f"| {model} | {data} | {acc:.4f} | {target or '-'}{mark} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
