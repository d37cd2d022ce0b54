"""Start-up latency of the CLI: --help, config show, config list, and `dlkit train` to its first training step.

    python benchmarks/startup.py [--repeats 5]

Reference: `--help` of a LightningCLI script (benchmarks/lightning_cli_reference.py) on the same machine.
Targets: `dlkit --help` and `dlkit config show` under 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def timed(command: list[str], cwd: str, until: str | None = None) -> float:
    """Seconds until the command exits, or until a line containing `until` appears on its output."""
    env = {**os.environ, "PYTHONPATH": cwd}  # the first-step callback lives in cwd
    start = time.perf_counter()
    if until is None:
        subprocess.run(command, cwd=cwd, capture_output=True, check=True, env=env)
        return time.perf_counter() - start
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    assert process.stdout is not None
    for line in process.stdout:
        if until in line:
            elapsed = time.perf_counter() - start
            process.kill()
            process.wait()
            return elapsed
    raise RuntimeError(f"{command} ended without printing {until!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dlkit = shutil.which("dlkit", path=str(Path(sys.executable).parent)) or "dlkit"
    cases = {
        "dlkit --help": ([dlkit, "--help"], None),
        "dlkit config show": ([dlkit, "config", "show"], None),
        "dlkit config list": ([dlkit, "config", "list"], None),
        "dlkit train: start to first training step": (
            [dlkit, "train", "logger=csv", "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
             "+callbacks.first_step._target_=benchmarks_first_step.FirstStep"], "FIRST-STEP"),
        "reference: LightningCLI script --help": ([sys.executable, str(HERE / "lightning_cli_reference.py"), "--help"],
                                                  None),
    }
    with tempfile.TemporaryDirectory() as cwd:
        (Path(cwd) / "benchmarks_first_step.py").write_text(
            "import pytorch_lightning as pl\n"
            "class FirstStep(pl.Callback):\n"
            "    def on_train_batch_start(self, trainer, module, batch, index):\n"
            "        if trainer.global_step == 0:\n"
            "            print('FIRST-STEP', flush=True)\n")
        results = {}
        for name, (command, until) in cases.items():
            runs = [timed(command, cwd, until) for _ in range(args.repeats)]
            results[name] = statistics.median(runs)
    print(f"\nmedians of {args.repeats} runs")
    print("| command | seconds |")
    print("|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
