"""eval, predict and export on real trained runs, through the console script."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import QUICK, run_cli, run_folders, run_main, summary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    assert run_cli("train", *QUICK, "trainer.limit_train_batches=null", "trainer.limit_test_batches=null",
                   "trainer.max_epochs=4", cwd=root).returncode == 0
    return root, run_folders(root)[0]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    assert run_cli("train", "model=textcnn", "trainer.max_epochs=4", "callbacks=minimal", "logger=csv",
                   cwd=root).returncode == 0
    assert summary(run_folders(root)[0])["metrics"]["test/acc"] > 0.95
    return root, run_folders(root)[0]


def test_eval_reproduces_the_test_metrics_of_training(digits_run):
    root, run = digits_run
    result = run_cli("eval", run.name.rsplit("-", 1)[1], cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    [saved] = run.glob("eval-*.json")
    metrics = json.loads(saved.read_text())["metrics"]
    assert metrics["test/acc"] == pytest.approx(summary(run)["metrics"]["test/acc"], abs=1e-6)
    assert metrics["test/loss"] == pytest.approx(summary(run)["metrics"]["test/loss"], rel=1e-5)


def test_predict_images_as_jsonl_and_csv(digits_run, tmp_path):
    from sklearn.datasets import load_digits

    root, run = digits_run
    digits = load_digits()
    files = []
    for index in range(20):
        files.append(tmp_path / f"digit{index}.npy")
        np.save(files[-1], digits.images[index])
    (tmp_path / "list.txt").write_text("\n".join(str(f) for f in files) + "\n")
    result = run_cli("predict", str(run), "--input", str(tmp_path / "list.txt"), "-f", "jsonl", "--top-k", "3",
                     cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 20 and all(len(r["top"]) == 3 for r in records)
    correct = sum(r["label"] == str(digits.target[i]) for i, r in enumerate(records))
    assert correct >= 16
    assert all(0 < r["probability"] <= 1 for r in records)
    as_csv = run_cli("predict", str(run), str(files[0]), "-f", "csv", cwd=root)
    assert list(csv.DictReader(io.StringIO(as_csv.stdout)))[0]["label"] == records[0]["label"]


def test_predict_texts_from_arguments_and_stdin(text_run):
    root, run = text_run
    result = run_cli("predict", "latest", "the acting was truly wonderful", "the plot was not good", "-f", "jsonl",
                     cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    labels = [json.loads(line)["label"] for line in result.stdout.splitlines()]
    assert labels == ["positive", "negative"]
    assert result.stderr == ""
    long = run_cli("predict", "latest", "fine", "good " * 300, "-f", "jsonl", cwd=root)
    assert long.returncode == 0 and len(long.stdout.splitlines()) == 2
    assert long.stderr.strip() == ("note: 1 input(s) longer than the model's 64 tokens were cut to their first 64 "
                                   "(input 2).")
    import subprocess

    from conftest import dlkit_bin

    piped = subprocess.run([dlkit_bin(), "predict", "latest", "--input", "-", "-f", "jsonl"], cwd=root, text=True,
                           input="the story was not boring\nthe music was dull\n", capture_output=True)
    assert [json.loads(line)["label"] for line in piped.stdout.splitlines()] == ["positive", "negative"]
    as_text = run_main("predict", "latest", "the acting was truly wonderful", "the plot was not good", "-f", "text",
                       cwd=root)
    assert as_text.returncode == 0 and as_text.stdout == "positive\nnegative\n"


def test_text_format_is_the_label_the_translation_or_the_filled_input():
    from dlkit.inference import as_text

    assert as_text({"input": "x", "label": "spam", "probability": 0.9}) == "spam"
    assert as_text({"input": "a b", "translation": "b a"}) == "b a"
    fills = [[{"token": "wind", "probability": 0.4}, {"token": "sun", "probability": 0.1}],
             [{"token": "##s", "probability": 0.3}]]
    assert as_text({"input": "the [MASK] and the rain [MASK] cold", "fills": fills}) == "the wind and the rains cold"


def test_export_onnx_and_torchscript_match_pytorch(digits_run, text_run):
    import onnxruntime

    from dlkit import inference
    from dlkit.export import example_inputs

    for root, run in (digits_run, text_run):
        for fmt in ("onnx", "torchscript"):
            result = run_cli("export", str(run), "--format", fmt, cwd=root)
            assert result.returncode == 0, result.stderr[-2000:]
        loaded = inference.load(str(run))
        names, tensors = example_inputs(loaded)
        with torch.no_grad():
            expected = loaded.task.model(**dict(zip(names, tensors))) if names != ["input"] else \
                loaded.task.model(*tensors)
        metadata = json.loads((run / "export" / "onnx" / "model.json").read_text())
        assert metadata["labels"] == loaded.datamodule.spec.class_names
        session = onnxruntime.InferenceSession(str(run / "export" / "onnx" / "model.onnx"))
        feeds = [i.name for i in session.get_inputs()]
        assert [i["name"] for i in metadata["inputs"]] == feeds and set(feeds) <= set(names)
        onnx_out = session.run(None, {n: t.numpy() for n, t in zip(names, tensors) if n in feeds})[0]
        assert np.allclose(onnx_out, expected.numpy(), atol=1e-4)
        scripted = torch.jit.load(str(run / "export" / "torchscript" / "model.pt"))
        assert torch.allclose(scripted(*tensors), expected, atol=1e-5)


def test_clear_errors_for_missing_runs_wrong_files_and_unfit_inputs(digits_run, tmp_path):
    root, run = digits_run
    missing = run_cli("eval", "zzzzzz", cwd=root)
    assert missing.returncode == 2 and "no run 'zzzzzz'" in missing.stderr
    not_ckpt = tmp_path / "weights.ckpt"
    torch.save({"weights": torch.zeros(2)}, not_ckpt)
    wrong = run_main("eval", str(not_ckpt), cwd=root)
    assert wrong.returncode == 1 and "is not a dlkit checkpoint" in wrong.stderr
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a pickle at all")
    bad = run_main("predict", str(garbage), "x", cwd=root)
    assert bad.returncode == 1 and "is not a dlkit checkpoint (not a file torch can load safely)" in bad.stderr
    unfit = run_main("predict", str(run), "hello world", cwd=root)
    assert unfit.returncode == 1 and "does not exist" in unfit.stderr and "Traceback" not in unfit.stderr
    nothing = run_main("predict", str(run), cwd=root)
    assert nothing.returncode == 2 and "nothing to predict" in nothing.stderr


@pytest.fixture(scope="module")
def limited_run(tmp_path_factory):
    """A run that tested 2 batches only, keeping its 2 lowest-accuracy epochs as 'best' (mode=min): the best
    checkpoint is then an early one, not the newest."""
    root = tmp_path_factory.mktemp("limited")
    result = run_cli("train", *QUICK, "trainer.max_epochs=4", "callbacks.model_checkpoint.save_top_k=2",
                     "callbacks.model_checkpoint.mode=min", cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    return root, run_folders(root)[0]


def _saved_eval(result) -> dict:
    [line] = [line for line in result.stdout.splitlines() if line.startswith("Saved: ")]
    return json.loads(Path(line.removeprefix("Saved: ")).read_text())


def test_eval_tests_what_training_tested_with_its_test_batch_limit(limited_run):
    root, run = limited_run
    trained = summary(run)["metrics"]
    result = run_cli("eval", "latest", cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = _saved_eval(result)["metrics"]
    assert metrics["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
    assert metrics["test/loss"] == pytest.approx(trained["test/loss"], rel=1e-5)
    everything = run_cli("eval", "latest", "trainer.limit_test_batches=null", cwd=root)
    assert everything.returncode == 0, everything.stderr[-2000:]
    assert _saved_eval(everything)["metrics"]["test/loss"] != pytest.approx(trained["test/loss"], rel=1e-5)


def test_eval_picks_the_best_checkpoint_by_its_score_not_its_name(limited_run):
    root, run = limited_run
    val_acc = {int(r["epoch"]): float(r["val/acc"]) for r in csv.DictReader((run / "metrics.csv").open())
               if r.get("val/acc")}
    lowest = min(val_acc, key=val_acc.get)  # mode=min: the best is the lowest accuracy
    kept = sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))
    assert len(kept) == 2 and kept[-1] != f"best-epoch{lowest:03d}.ckpt", (kept, val_acc)  # newest is not best
    result = run_cli("eval", str(run), cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _saved_eval(result)["checkpoint"].endswith(f"best-epoch{lowest:03d}.ckpt")
    # training tested the same best checkpoint
    assert _saved_eval(result)["metrics"]["test/acc"] == pytest.approx(summary(run)["metrics"]["test/acc"], abs=1e-6)


def test_eval_of_a_lone_checkpoint_saves_its_metrics_beside_it(limited_run, tmp_path):
    root, run = limited_run
    lone = tmp_path / "model.pt"  # any suffix: an existing file is read as a checkpoint
    lone.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes())
    result = run_cli("eval", str(lone), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    [saved] = tmp_path.glob("eval-*.json")
    assert f"Saved: {saved}" in result.stdout
    record = json.loads(saved.read_text())
    assert Path(record["checkpoint"]) == lone.resolve() and record["metrics"]["test/acc"] > 0


def test_files_that_are_not_dlkit_checkpoints_get_one_clear_line(tmp_path):
    pickled = tmp_path / "objects.ckpt"
    pickled.write_bytes(b"\x80\x02c__main__\nThing\nq\x00)\x81q\x01.")  # a pickled instance of a class
    files = {"text.ckpt": b"hello world this is text\n", "junk.ckpt": b"junk", "empty.ckpt": b"",
             "notes.txt": b"some notes", "weights.pt": b"PK\x03\x04 not really a zip"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    hint = "; give a run folder, a run id, latest, or a .ckpt written by dlkit train."
    commands = [["eval", str(p)] for p in [*(tmp_path / n for n in files), tmp_path / "tensor.pth", pickled]]
    commands += [["predict", str(tmp_path / "text.ckpt"), "hi"], ["export", str(tmp_path / "junk.ckpt")]]
    errors = {}
    for number, command in enumerate(commands):
        # the first through the installed console script, the rest through its entry point in this process
        result = (run_cli if number == 0 else run_main)(*command, cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, (command, result.stderr)
        assert lines[0].startswith(f"error: {command[1]} is not a dlkit checkpoint (") and lines[0].endswith(hint)
        errors[Path(command[1]).name] = lines[0]
    assert "(the file is empty)" in errors["empty.ckpt"]
    assert "(it holds a Tensor, not a checkpoint)" in errors["tensor.pth"]
    assert "(it pickles __main__.Thing, which torch will not load safely)" in errors["objects.ckpt"]
    missing = run_main("eval", str(tmp_path / "nowhere.ckpt"), cwd=tmp_path)
    assert missing.returncode == 2 and "nowhere.ckpt does not exist; give a run folder" in missing.stderr


def test_bert_pretraining_exports_to_onnx_with_named_outputs_and_dynamic_lengths(tmp_path):
    import onnxruntime

    from dlkit import inference
    from dlkit.export import example_inputs

    tiny = ["model=bert_pretrain", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "callbacks=minimal", "logger=csv",
            "data.synthetic_documents=60", "data.max_length=32", "data.tokenizer.vocab_size=300",
            "model.hidden_size=32", "model.intermediate_size=64"]
    assert run_cli("train", *tiny, cwd=tmp_path).returncode == 0
    [run] = run_folders(tmp_path)
    result = run_cli("export", str(run), "--format", "onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metadata = json.loads((run / "export" / "onnx" / "model.json").read_text())
    assert [o["name"] for o in metadata["outputs"]] == ["mlm_logits", "nsp_logits"]
    assert all(i["shape"] == ["batch", "sequence"] for i in metadata["inputs"])
    assert metadata["outputs"][0]["shape"][:2] == ["batch", "sequence"] and metadata["outputs"][1]["shape"] == \
        ["batch", 2]
    loaded = inference.load(str(run))
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(run / "export" / "onnx" / "tokenizer.json"))
    assert {k: metadata["preprocessing"]["special_tokens"][k] for k in ("cls", "sep", "mask")} == \
        {k: tokenizer.token_to_id(f"[{k.upper()}]") for k in ("cls", "sep", "mask")}

    session = onnxruntime.InferenceSession(str(run / "export" / "onnx" / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["mlm_logits", "nsp_logits"]
    traced_length = example_inputs(loaded)[1][0].shape[1]
    batch = loaded.datamodule.encode_inputs(["the [MASK] was cold", "a much longer text " * 6 + "[MASK] here"])
    assert batch["input_ids"].shape[1] != traced_length
    assert batch["input_ids"][0, 0] == metadata["preprocessing"]["special_tokens"]["cls"]
    with torch.no_grad():
        expected = loaded.task.model(**batch)
    got = session.run(None, {i.name: batch[i.name].numpy() for i in session.get_inputs()})
    for ours, theirs in zip(expected, got):
        assert theirs.shape == tuple(ours.shape) and np.allclose(theirs, ours.numpy(), atol=1e-4)
