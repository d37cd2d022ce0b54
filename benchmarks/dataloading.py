"""Preparing text data at scale: dlkit's token store against the floor of the same work in a plain script, and
against Hugging Face `datasets` (the other engine considered), on generated files of 1M and 10M rows.

    python benchmarks/dataloading.py                       # 1M and 10M rows, datasets at 1M, a 1 GB BERT corpus
    python benchmarks/dataloading.py --rows 1000000 --hf-rows 0 --corpus-gb 0

Every measured step runs in a process of its own (wall time and that process's peak RSS, from the kernel):
- floor: read the file line by line, train the same word-level tokenizer (`tokenizers`), encode every row into one
  flat int32 array; nothing stored, no splits;
- dlkit cold: `dlkit data prepare` (the CLI, imports included) on an empty cache: three streamed passes, the store
  written; warm start: building the datamodule from the store (what `dlkit train` does before its first step);
- loader: examples per second from the store into padded batches of 64 (shuffled, the training loader);
- datasets: `load_dataset("csv")` + the same tokenizer + `map(batched=True, num_proc=2)`, cold and warm, and batches
  of 64 read from the Arrow table in the same shuffled order.
The files are generated deterministically (Zipf-distributed words, 3 columns, about 225 bytes a row).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

DLKIT = [sys.executable, "-m", "dlkit"]


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """A TSV of `rows` rows (text, label, source): texts of Zipf-distributed words, labels from the words."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(50_000)])
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)
    weights /= weights.sum()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("text\tlabel\tsource\n")
        for start in range(0, rows, 100_000):
            count = min(100_000, rows - start)
            lengths = rng.integers(20, 60, size=count)
            words = vocabulary[rng.choice(len(vocabulary), size=int(lengths.sum()), p=weights)]
            bounds = np.cumsum(lengths)[:-1]
            labels = rng.integers(0, 4, size=count)
            lines = [f"{' '.join(w)}\tclass{label}\twiki" for w, label in zip(np.split(words, bounds), labels)]
            handle.write("\n".join(lines) + "\n")


def corpus(path: Path, gigabytes: float, seed: int = 1) -> None:
    """A pre-training corpus of about `gigabytes` GB: documents of 3-8 sentences, a blank line between them."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(30_000)])
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)
    weights /= weights.sum()
    target = gigabytes * 2**30
    with open(path, "w", encoding="utf-8") as handle:
        while handle.tell() < target:
            sentences = rng.integers(3, 9, size=20_000)
            lengths = rng.integers(6, 25, size=int(sentences.sum()))
            words = vocabulary[rng.choice(len(vocabulary), size=int(lengths.sum()), p=weights)]
            lines = [" ".join(w) + "." for w in np.split(words, np.cumsum(lengths)[:-1])]
            cut = np.cumsum(sentences)[:-1]
            handle.write("\n\n".join("\n".join(d) for d in np.split(np.array(lines, dtype=object), cut)) + "\n\n")


def cli(*args: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of `dlkit ARGS...` run as a process of its own (the kernel's accounting)."""
    started = time.perf_counter()
    process = subprocess.Popen([*DLKIT, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"dlkit {' '.join(args[:3])} failed: {process.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 2**20


def run_python(code: str) -> tuple[float, float, dict]:
    """(wall seconds, peak RSS in GB, the dict `_out` the snippet filled) of a snippet run as a process of its own."""
    wrapped = code + "\nimport json as _json\nprint(_json.dumps(_out))\n"
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", wrapped], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    out, err = process.stdout.read(), process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(err[-3000:])
    return wall, usage.ru_maxrss / 2**20, json.loads(out.strip().splitlines()[-1])


FLOOR = """
import time, numpy as np
from itertools import chain
from dlkit.data.tokenizers import train_tokenizer
path = {path!r}
started = time.perf_counter()
texts = []
with open(path, encoding="utf-8") as handle:
    next(handle)
    for line in handle:
        texts.append(line.split("\\t", 1)[0])
tokenizer = train_tokenizer((texts[i:i + 16384] for i in range(0, len(texts), 16384)), length=len(texts))
parts = []
for i in range(0, len(texts), 16384):
    encodings = tokenizer.encode_batch_fast(texts[i:i + 16384], add_special_tokens=False)
    total = sum(len(e) for e in encodings)
    parts.append(np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=total))
ids = np.concatenate(parts)
_out = {{"seconds": time.perf_counter() - started, "tokens": int(len(ids))}}
"""

WARM = """
import time
started = time.perf_counter()
from dlkit.data.text import TextFilesDataModule
imported = time.perf_counter()
dm = TextFilesDataModule(train_file={path!r}, format="tsv", cache_dir={cache!r}, batch_size=64)
dm.setup()
ready = time.perf_counter()
loader = iter(dm.train_dataloader())
count, t0 = 0, time.perf_counter()
for _ in range({batches}):
    inputs, labels = next(loader)
    count += len(labels)
_out = {{"import_s": imported - started, "setup_s": ready - imported,
        "examples_per_s": count / (time.perf_counter() - t0),
        "rows": len(dm.train_set) + len(dm.val_set) + len(dm.test_set)}}
"""

HF = """
import time, numpy as np
from itertools import chain
import datasets
from dlkit.data.tokenizers import train_tokenizer
datasets.disable_progress_bars()
started = time.perf_counter()
ds = datasets.load_dataset("csv", data_files={path!r}, delimiter="\\t", cache_dir={cache!r}, split="train")
import os
if not os.path.exists({cache!r} + "/tokenizer.json"):  # warm: the tokenizer trained by the cold run
    tokenizer = train_tokenizer((ds[i:i + 16384]["text"] for i in range(0, len(ds), 16384)), length=len(ds))
    tokenizer.save({cache!r} + "/tokenizer.json")
def encode(batch):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file({cache!r} + "/tokenizer.json")
    return {{"input_ids": [e.ids for e in tok.encode_batch_fast(batch["text"], add_special_tokens=False)]}}
encoded = ds.map(encode, batched=True, batch_size=16384, num_proc=2, remove_columns=ds.column_names)
ready = time.perf_counter()
table = encoded.with_format("numpy")
order = np.random.default_rng(0).permutation(len(table))
count, t0 = 0, time.perf_counter()
for b in range({batches}):
    rows = table[order[b * 64:(b + 1) * 64]]["input_ids"]
    lengths = np.array([len(r) for r in rows])
    padded = np.zeros((len(rows), lengths.max()), dtype=np.int64)
    padded[np.arange(lengths.max()) < lengths[:, None]] = np.concatenate(rows)
    count += len(rows)
import resource
_out = {{"seconds": ready - started, "examples_per_s": count / (time.perf_counter() - t0),
        "children_rss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}}
"""


def text_rows(rows: int, folder: Path, batches: int, hf: bool) -> dict:
    path = folder / f"rows{rows}.tsv"
    print(f"generating {rows:,} rows ...", flush=True)
    generate(path, rows)
    size = path.stat().st_size
    floor_wall, floor_rss, floor = run_python(FLOOR.format(path=str(path)))
    cache = folder / f"cache{rows}"
    cold, cold_rss = cli("data", "prepare", "model=textcnn", "data=text_files", f"data.train_file={path}",
                         "data.format=tsv", f"paths.cache_dir={cache}")
    warm_wall, warm_rss, warm = run_python(WARM.format(path=str(path), cache=str(cache), batches=batches))
    result = {"rows": rows, "bytes": size, "floor": floor_wall, "floor_inner": floor["seconds"], "floor_rss": floor_rss,
              "cold": cold, "cold_rss": cold_rss, "warm_setup": warm["setup_s"],
              "warm_rss": warm_rss, "loader": warm["examples_per_s"], "import": warm["import_s"]}
    if hf:
        hf_cache = folder / f"hf{rows}"
        hf_cache.mkdir()
        hf_wall, hf_rss, hf_cold = run_python(HF.format(path=str(path), cache=str(hf_cache), batches=batches))
        hf_warm_wall, _, hf_warm = run_python(HF.format(path=str(path), cache=str(hf_cache), batches=batches))
        result.update(hf_cold=hf_wall, hf_rss=max(hf_rss, hf_cold["children_rss_gb"]), hf_warm=hf_warm["seconds"],
                      hf_loader=hf_warm["examples_per_s"])
    path.unlink()
    return result


def bert_corpus(gigabytes: float, folder: Path) -> dict:
    path = folder / "corpus.txt"
    print(f"generating a {gigabytes:g} GB corpus ...", flush=True)
    corpus(path, gigabytes)
    cache = folder / "bert-cache"
    cold, cold_rss = cli("data", "prepare", "model=bert_pretrain", f"data.corpus_file={path}",
                         f"paths.cache_dir={cache}")
    _, _, step = run_python(textwrap.dedent(f"""
        import time
        started = time.perf_counter()
        from dlkit import runner
        imported = time.perf_counter()
        import pytorch_lightning as pl
        class First(pl.Callback):
            def on_train_batch_end(self, *args):
                self.at = time.perf_counter()
        first = First()
        from dlkit import training
        job = runner.prepare(["model=bert_pretrain", "data.corpus_file={path}", "paths.cache_dir={cache}",
                              "trainer.max_steps=1", "trainer.limit_val_batches=0", "test=false", "logger=csv",
                              "callbacks=minimal", "paths.output_dir={folder / 'runs'}"])
        runner.run_job(job, runner._new_run_dir(job.cfg), callbacks=[first])
        _out = {{"import_s": imported - started, "first_step_s": first.at - imported}}
    """))
    size = path.stat().st_size
    path.unlink()
    return {"bytes": size, "cold": cold, "cold_rss": cold_rss, **step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--hf-rows", type=int, default=1_000_000, help="rows to run Hugging Face datasets on (0: none)")
    parser.add_argument("--batches", type=int, default=3000, help="batches of 64 read to time the loader")
    parser.add_argument("--corpus-gb", type=float, default=1.0, help="size of the BERT corpus (0: none)")
    parser.add_argument("--folder", default=None, help="where to put the generated files (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        results = [text_rows(rows, folder, args.batches, rows == args.hf_rows) for rows in args.rows]
        bert = bert_corpus(args.corpus_gb, folder) if args.corpus_gb else None
    print("\n| rows (file) | floor: read + train tokenizer + encode | dlkit cold `data prepare` (ratio) "
          "| dlkit cold peak RSS | warm start (datamodule from the store) | loader examples/s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['rows']:,} ({r['bytes'] / 2**20:,.0f} MB) | {r['floor']:.1f} s ({r['floor_rss']:.2f} GB) "
              f"| {r['cold']:.1f} s ({r['cold'] / r['floor']:.2f}x) | {r['cold_rss']:.2f} GB "
              f"| {r['warm_setup']:.2f} s | {r['loader']:,.0f} |")
    for r in results:
        if "hf_cold" in r:
            print(f"\nHugging Face datasets at {r['rows']:,} rows: cold {r['hf_cold']:.1f} s "
                  f"({r['hf_cold'] / r['floor']:.2f}x the floor), peak RSS {r['hf_rss']:.2f} GB, warm "
                  f"{r['hf_warm']:.1f} s, loader {r['hf_loader']:,.0f} examples/s")
    if results:
        print(f"(importing dlkit's data layer: {results[0]['import']:.1f} s of every process)")
    if bert:
        print(f"\nBERT corpus of {bert['bytes'] / 2**30:.2f} GB: `dlkit data prepare model=bert_pretrain` "
              f"{bert['cold']:.1f} s, peak RSS {bert['cold_rss']:.2f} GB; first training step "
              f"{bert['first_step_s']:.1f} s after the imports ({bert['import_s']:.1f} s)")


if __name__ == "__main__":
    main()
