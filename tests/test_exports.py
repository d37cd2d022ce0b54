"""Programs outside dlkit use an export as it is (issue 19, items 1-3): each client below is written from model.json
alone (tokenizers, PIL, numpy, onnxruntime, torch.jit; nothing of dlkit) and must print what `dlkit predict` does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import QUICK, run_cli, run_folders

pytestmark = pytest.mark.slow

WORDS = {"pos": ["good", "great", "fine"], "neg": ["bad", "awful", "poor"]}
LONG = " ".join(["the film was long and the plot was thin but the cast was fine"] * 40)  # past data.max_length
TEXTS = ["good", "bad", "the plot was awful", LONG]


def write_reviews(path: Path) -> None:
    rows = [f"the {noun} was {word},{label}" for label, words in WORDS.items() for word in words
            for noun in ("movie", "film", "plot", "cast")] * 5
    path.write_text("text,label\n" + "\n".join(rows) + "\n")


def train(root: Path, *overrides: str) -> Path:
    result = run_cli("train", *QUICK, *overrides, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(root)
    return run


def export(run: Path, fmt: str) -> tuple[Path, dict]:
    result = run_cli("export", str(run), "--format", fmt, cwd=run.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = run / "export" / fmt
    return folder, json.loads((folder / "model.json").read_text())


def predict(run: Path, *inputs: str, options: tuple[str, ...] = ()) -> list[dict]:
    result = run_cli("predict", str(run), *inputs, *options, "-f", "jsonl", cwd=run.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


# -- the clients ------------------------------------------------------------------------------------------
def encode_texts(folder: Path, meta: dict, texts: list[str]) -> dict[str, np.ndarray]:
    """model.json's preprocessing.steps for text: the exported tokenizer.json does the whole encoding."""
    from tokenizers import Tokenizer

    pre = meta["preprocessing"]
    encodings = Tokenizer.from_file(str(folder / pre["tokenizer"])).encode_batch(texts)
    arrays = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
              "token_type_ids": [e.type_ids for e in encodings]}
    return {name: np.asarray(value, dtype=np.int64) for name, value in arrays.items()}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def onnx_run(folder: Path, meta: dict, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / meta["file"]))
    return session.run([meta["output"]], {i["name"]: feeds[i["name"]] for i in meta["inputs"]})[0]


def labels_of(meta: dict, probabilities: np.ndarray) -> list[tuple[str, float]]:
    return [(meta["labels"][int(row.argmax())], float(row.max())) for row in probabilities]


def assert_same(ours: list[tuple[str, float]], predicted: list[dict]) -> None:
    assert [label for label, _ in ours] == [p["label"] for p in predicted]
    assert np.allclose([p for _, p in ours], [p["probability"] for p in predicted], atol=2e-5)


# -- the tests ----------------------------------------------------------------------------------------------
def test_textcnn_exports_answer_one_word_texts_and_texts_past_the_length_limit(tmp_path):
    """A one-token text is shorter than TextCNN's widest filter (5): the short-input padding must be in the graph
    (a Python `if` that tracing drops made ONNX Runtime fail with `FusedConv ... Invalid input shape`)."""
    import torch

    write_reviews(tmp_path / "train.csv")
    run = train(tmp_path, "model=textcnn", "model.embedding_dim=16", "model.num_filters=8", "data=text_files",
                f"data.train_file={tmp_path / 'train.csv'}", "data.batch_size=16", "data.max_length=64")
    predicted = predict(run, *TEXTS)
    for fmt in ("onnx", "torchscript"):
        folder, meta = export(run, fmt)
        assert meta["preprocessing"]["max_length"] == 64 and meta["preprocessing"]["framed"] is False
        feeds = encode_texts(folder, meta, TEXTS)
        assert feeds["input_ids"].shape == (4, 64) and feeds["attention_mask"][0].sum() == 1
        for text in TEXTS:  # one at a time too: a batch of a single one-word text is the shortest input there is
            one = encode_texts(folder, meta, [text])
            if fmt == "onnx":
                logits = onnx_run(folder, meta, one)
            else:
                scripted = torch.jit.load(str(folder / meta["file"]))
                logits = scripted(*(torch.from_numpy(one[i["name"]]) for i in meta["inputs"])).detach().numpy()
            assert_same(labels_of(meta, softmax(logits)), predict(run, text))
        if fmt == "onnx":
            assert_same(labels_of(meta, softmax(onnx_run(folder, meta, feeds))), predicted)


def test_bert_exports_ship_a_tokenizer_that_frames_texts_as_dlkit_does(tmp_path):
    """The exported tokenizer.json alone gives dlkit's ids ([CLS] ... [SEP], truncation, padding), so a client's
    probabilities equal dlkit predict's."""
    from dlkit import inference

    write_reviews(tmp_path / "train.csv")
    run = train(tmp_path, "model=bert_tiny", "model.hidden_size=32", "model.num_hidden_layers=1",
                "model.intermediate_size=64", "data=text_files", f"data.train_file={tmp_path / 'train.csv'}",
                "data.batch_size=16", "data.max_length=48", "data.tokenizer.vocab_size=200")
    folder, meta = export(run, "onnx")
    feeds = encode_texts(folder, meta, TEXTS)
    dlkit_batch = inference.load(str(run)).datamodule.encode_inputs(TEXTS)
    for name, values in feeds.items():
        assert np.array_equal(values, dlkit_batch[name].numpy()), name
    specials = meta["preprocessing"]["special_tokens"]
    assert feeds["input_ids"][0, 0] == specials["cls"] and feeds["input_ids"][3, 47] == specials["sep"]
    assert_same(labels_of(meta, softmax(onnx_run(folder, meta, feeds))), predict(run, *TEXTS))


def test_a_greedy_decoding_loop_written_from_model_json_translates_as_dlkit_predict(tmp_path):
    """Seq2seq: the client encodes with the exported tokenizer and decodes step by step in ONNX Runtime, to
    model.json's max_length (an untrained model runs away to it) and prints dlkit predict's greedy translations."""
    from tokenizers import Tokenizer

    run = train(tmp_path, "model=transformer", "model.d_model=16", "model.d_ff=32", "model.layers=1",
                "data.num_examples=300", "trainer.max_epochs=1")
    sources = ["a1 b2 c3", "k3 j2", "q1 q1 q1 z9 a1"]
    folder, meta = export(run, "onnx")
    pre, post = meta["preprocessing"], meta["postprocessing"]
    encodings = Tokenizer.from_file(str(folder / pre["source_tokenizer"])).encode_batch(sources)
    feeds = {"src_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
             "src_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64)}
    target = np.full((len(sources), 1), post["bos_id"], dtype=np.int64)
    done = np.zeros(len(sources), dtype=bool)
    for _ in range(post["max_length"] - 1):
        logits = onnx_run(folder, meta, {**feeds, "tgt_ids": target, "tgt_mask": np.ones_like(target)})
        following = np.where(done, post["pad_id"], logits[:, -1].argmax(-1))
        target = np.concatenate([target, following[:, None]], axis=1)
        done |= following == post["eos_id"]
        if done.all():
            break
    decoder = Tokenizer.from_file(str(folder / pre["target_tokenizer"]))
    texts = []
    for row in target.tolist():
        kept = [i for i in row if i not in (post["pad_id"], post["bos_id"])]
        texts.append(decoder.decode(kept[:kept.index(post["eos_id"])] if post["eos_id"] in kept else kept))
    assert texts == [p["translation"] for p in predict(run, *sources, options=("--beam-size", "1"))]
    assert post["max_length"] < 66  # the longest training target plus a margin, not the model's position table


def test_an_image_pipeline_written_from_model_json_classifies_as_dlkit_predict(tmp_path):
    """Images: the client resizes, scales and normalises as model.json says (digits: image files /255, arrays in
    the dataset's 0-16 scale /16; RGB folders: per-channel statistics) and gets dlkit predict's answers."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    for label, tint in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (images / label).mkdir(parents=True)
        for number in range(12):
            pixels = np.clip(rng.normal(tint, 40, size=(10, 10, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(images / label / f"{number}.png")
    (tmp_path / "digits").mkdir()
    (tmp_path / "colours").mkdir()
    digits = train(tmp_path / "digits", "model=mlp")
    colours = train(tmp_path / "colours", "model=mlp", "data=image_folder", f"data.root={images}",
                    "data.image_size=[6,6]", "data.num_workers=0")
    big = tmp_path / "digit.png"
    Image.fromarray(rng.integers(0, 255, size=(20, 20), dtype=np.uint8)).save(big)
    array = tmp_path / "digit.npy"
    np.save(array, rng.integers(0, 17, size=(8, 8)).astype(np.float64))
    rgb = tmp_path / "colour.png"
    Image.fromarray(np.clip(rng.normal((120, 30, 160), 40, size=(15, 9, 3)), 0, 255).astype(np.uint8)).save(rgb)
    for run, inputs in ((digits, [big, array]), (colours, [rgb, images / "red" / "0.png"])):
        folder, meta = export(run, "onnx")
        pre = meta["preprocessing"]
        batch = []
        for path in inputs:
            if path.suffix == ".npy":
                x = np.load(path).astype(np.float32) / 16.0  # as preprocessing.steps says for digits' arrays
                assert "0-16" in pre["steps"]
            else:
                with Image.open(path) as image:
                    resized = image.convert(pre["color_mode"]).resize((pre["width"], pre["height"]),
                                                                      Image.Resampling.BICUBIC)
                x = np.asarray(resized, dtype=np.float32).reshape(pre["height"], pre["width"], -1)
                x = x.transpose(2, 0, 1) * np.float32(pre["scale"])
            x = x.reshape(-1, pre["height"], pre["width"])
            batch.append((x - np.asarray(pre["mean"], np.float32)[:, None, None])
                         / np.asarray(pre["std"], np.float32)[:, None, None])
        probabilities = softmax(onnx_run(folder, meta, {meta["inputs"][0]["name"]: np.stack(batch)}))
        assert_same(labels_of(meta, probabilities), predict(run, *map(str, inputs)))
