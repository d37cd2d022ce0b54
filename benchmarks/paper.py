"""Paper parity: dlkit's recipes on the papers' own data, beside the papers' figures.

    python benchmarks/paper.py [--data ../shared/data] [--sets mr subj cr mpqa multi30k] [--folds 10]
                               [--epochs N] [--folder DIR]

Kim (2014), Table 2, CNN-rand: `dlkit train experiment=kim2014_rand cv.folds=10` on MR, Subj, CR and MPQA (the
paper's 10-fold cross-validation; no standard split exists), the mean and standard deviation of test accuracy over
the folds. Multi30k De->En (test_2016_flickr): `dlkit train experiment=multi30k_transformer` on the raw files, test
BLEU (sacreBLEU, cased, on the references as written) with beam 5, and the wall time. Every set runs as a user
would run it, through the CLI, one after another; nothing else should run on the machine meanwhile. `--epochs`
shortens the recipes (for a quick look; the figures in docs/benchmarks.md use the recipes as they are).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Kim 2014, Table 2, CNN-rand (accuracy, %)
KIM = {"mr": 76.1, "subj": 89.6, "cr": 79.8, "mpqa": 83.4}
# a 3+3-layer, 256-wide Transformer on Multi30k De->En (a widely used public tutorial)
MULTI30K_REFERENCE = 36.0


def kim_data(data: Path, name: str) -> list[str]:
    """The data overrides of one of Kim's sets, as they ship in ../shared/data."""
    if name == "mr":
        return ["data=text_folder", f"data.files={{pos: {data / 'mr/rt-polarity.pos'}, neg: "
                f"{data / 'mr/rt-polarity.neg'}}}", "data.encoding=latin-1"]
    files = {"subj": "subj/subj.all", "cr": "cr/custrev.all", "mpqa": "mpqa/mpqa.all"}
    return ["data=text_files", f"data.train_file={data / files[name]}", "data.format=label_text",
            "data.encoding=latin-1"]


def multi30k_data(data: Path) -> list[str]:
    raw = data / "multi30k" / "raw"
    return [f"data.{split}_file={raw / f'{prefix}.de'}" for split, prefix in
            (("train", "train"), ("val", "val"), ("test", "test_2016_flickr"))] + \
           [f"data.{split}_target_file={raw / f'{prefix}.en'}" for split, prefix in
            (("train", "train"), ("val", "val"), ("test", "test_2016_flickr"))]


def dlkit(folder: Path, *overrides: str) -> tuple[float, Path]:
    """Run `dlkit train` in folder; (wall seconds, the outputs folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).with_name("dlkit")), "train", *overrides, "logger=csv"]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=folder, env={**os.environ, "DLKIT_CACHE_DIR": str(folder / "cache")},
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"dlkit train failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed, folder / "outputs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--sets", nargs="+", default=["mr", "subj", "cr", "mpqa", "multi30k"])
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=None, help="shorter recipes (not the paper's)")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/dlkit-paper"))
    args = parser.parse_args()
    shorter = [f"trainer.max_epochs={args.epochs}"] if args.epochs else []
    rows = []
    for name in args.sets:
        if name == "multi30k":
            seconds, outputs = dlkit(args.folder / name, "experiment=multi30k_transformer", *multi30k_data(args.data),
                                     *shorter)
            [summary] = list(outputs.rglob("summary.json"))
            bleu = json.loads(summary.read_text())["metrics"]["test/bleu"]
            rows.append((name, "test BLEU", f"{MULTI30K_REFERENCE:.1f}", f"{bleu:.1f}",
                         f"{bleu - MULTI30K_REFERENCE:+.1f}", seconds))
            continue
        seconds, outputs = dlkit(args.folder / name, "experiment=kim2014_rand", *kim_data(args.data, name),
                                 f"cv.folds={args.folds}", *shorter)
        [multirun] = list(outputs.rglob("multirun.json"))
        folds = json.loads(multirun.read_text())["cross_validation"]
        accuracy = folds["metrics"]["test/acc"]
        mean, std = 100 * accuracy["mean"], 100 * accuracy["std"]
        rows.append((name, f"test acc, {folds['finished']}/{folds['folds']} folds", f"{KIM[name]:.1f}",
                     f"{mean:.1f} +- {std:.1f}", f"{mean - KIM[name]:+.1f}", seconds))
    print("\n| set | metric | paper | dlkit | difference | wall time |\n|---|---|---|---|---|---|")
    for name, metric, paper, ours, difference, seconds in rows:
        print(f"| {name} | {metric} | {paper} | {ours} | {difference} | {seconds / 60:.1f} min |")


if __name__ == "__main__":
    main()
