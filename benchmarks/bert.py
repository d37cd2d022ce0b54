"""One forward+backward step of dlkit's BERT against Hugging Face's BertForPreTraining, same config, on CPU.

    python benchmarks/bert.py [--repeats 5] [--sizes tiny base]

Both models get the same weights (dlkit loads the Hugging Face model's), batch 8 x sequence 128, MLM + NSP
loss, interleaved repeats; the table gives medians and the ratio dlkit / Hugging Face (target <= 1.0).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import transformers

from dlkit.interop.hf_bert import load_hf_pretraining

SIZES = {"tiny": (2, 128, 2), "base": (12, 768, 12)}
BATCH, LENGTH, VOCAB = 8, 128, 30522


def step(model, ids, mask, types, mlm_labels, nsp_labels, hf: bool) -> float:
    start = time.perf_counter()
    if hf:
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        mlm, nsp = out.prediction_logits, out.seq_relationship_logits
    else:
        mlm, nsp = model(ids, mask, types)
    loss = torch.nn.functional.cross_entropy(mlm.reshape(-1, VOCAB), mlm_labels.reshape(-1), ignore_index=-100)
    loss = loss + torch.nn.functional.cross_entropy(nsp, nsp_labels)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", nargs="*", default=list(SIZES))
    args = parser.parse_args()
    rows = []
    for name in args.sizes:
        layers, hidden, heads = SIZES[name]
        config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                                         num_attention_heads=heads, intermediate_size=4 * hidden)
        torch.manual_seed(0)
        theirs = transformers.BertForPreTraining(config).train()
        with tempfile.TemporaryDirectory() as folder:
            theirs.save_pretrained(folder)
            ours = load_hf_pretraining(folder).train()
        ids = torch.randint(5, VOCAB, (BATCH, LENGTH))
        mask = torch.ones_like(ids)
        types = torch.zeros_like(ids)
        types[:, LENGTH // 2:] = 1
        mlm_labels = torch.full_like(ids, -100)
        mlm_labels[:, ::7] = ids[:, ::7]
        nsp_labels = torch.randint(0, 2, (BATCH,))
        batch = (ids, mask, types, mlm_labels, nsp_labels)
        step(ours, *batch, hf=False), step(theirs, *batch, hf=True)  # warm up
        times = {"ours": [], "theirs": []}
        for repeat in range(args.repeats):  # interleaved, each going first every other repeat
            for who in (("ours", "theirs") if repeat % 2 == 0 else ("theirs", "ours")):
                model = ours if who == "ours" else theirs
                times[who].append(step(model, *batch, hf=who == "theirs"))
        o, t = statistics.median(times["ours"]), statistics.median(times["theirs"])
        rows.append((name, o, t))
    print(f"\ntorch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"batch {BATCH} x {LENGTH}")
    print("| model | dlkit (ms) | Hugging Face (ms) | ratio |")
    print("|---|---|---|---|")
    for name, o, t in rows:
        print(f"| bert_{name} | {o * 1000:.1f} | {t * 1000:.1f} | {o / t:.2f} |")


if __name__ == "__main__":
    main()
