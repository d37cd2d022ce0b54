"""eval, predict and export on real trained runs, through the console script."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from conftest import QUICK, run_cli, run_folders, summary

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
    import subprocess

    from conftest import dlkit_bin

    piped = subprocess.run([dlkit_bin(), "predict", "latest", "--input", "-", "-f", "jsonl"], cwd=root, text=True,
                           input="the story was not boring\nthe music was dull\n", capture_output=True)
    assert [json.loads(line)["label"] for line in piped.stdout.splitlines()] == ["positive", "negative"]


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
    wrong = run_cli("eval", str(not_ckpt), cwd=root)
    assert wrong.returncode == 1 and "is not a dlkit checkpoint" in wrong.stderr
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a pickle at all")
    bad = run_cli("predict", str(garbage), "x", cwd=root)
    assert bad.returncode == 1 and "not a checkpoint torch can load safely" in bad.stderr
    unfit = run_cli("predict", str(run), "hello world", cwd=root)
    assert unfit.returncode == 1 and "does not exist" in unfit.stderr and "Traceback" not in unfit.stderr
    nothing = run_cli("predict", str(run), cwd=root)
    assert nothing.returncode == 2 and "nothing to predict" in nothing.stderr
