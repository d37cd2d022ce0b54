"""predict needs only the run (issue 8): not the training data, the tokenizer cache, nor a BERT's pretrained folder.

Each test trains a tiny run, predicts, deletes what predict must not need, and predicts again: same answers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import QUICK, run_cli, run_folders

pytestmark = pytest.mark.slow

WORDS = {"pos": ["good", "great", "fine"], "neg": ["bad", "awful", "poor"]}


def write_reviews(path: Path) -> None:
    """A small two-label CSV: `the movie was good` -> pos, ..."""
    rows = [f"the {noun} was {word},{label}" for label, words in WORDS.items() for word in words
            for noun in ("movie", "film", "plot", "cast")] * 5
    path.write_text("text,label\n" + "\n".join(rows) + "\n")


def predictions(*args: str, cwd: Path, env: dict) -> list[dict]:
    result = run_cli("predict", *args, "-f", "jsonl", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


def train(root: Path, env: dict, *overrides: str) -> Path:
    result = run_cli("train", *QUICK, *overrides, cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(root)
    return run


def test_text_predict_without_the_training_file_or_the_tokenizer_cache(tmp_path):
    env = {"DLKIT_CACHE_DIR": str(tmp_path / "cache")}
    write_reviews(tmp_path / "train.csv")
    run = train(tmp_path, env, "model=textcnn", "model.embedding_dim=16", "model.num_filters=8", "data=text_files",
                f"data.train_file={tmp_path / 'train.csv'}", "data.batch_size=16")
    texts = ["the movie was great", "the plot was awful", "an unseen word"]
    before = predictions(str(run), *texts, "--top-k", "2", cwd=tmp_path, env=env)
    checkpoint = torch.load(next((run / "checkpoints").glob("*.ckpt")), map_location="cpu", weights_only=True)
    assert sorted(checkpoint["dlkit"]["data"]) == ["labels", "tokenizer"]
    del checkpoint["dlkit"]["data"]  # a checkpoint written before issue 8: predict sets the data up as before
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert predictions(str(tmp_path / "old.ckpt"), *texts, "--top-k", "2", cwd=tmp_path, env=env) == before

    (tmp_path / "train.csv").unlink()
    shutil.rmtree(tmp_path / "cache")
    moved = tmp_path / "elsewhere" / run.name  # another machine: the run folder alone, at another path
    shutil.move(str(run), str(moved))
    shutil.rmtree(tmp_path / "outputs")
    after = predictions(str(moved), *texts, "--top-k", "2", cwd=tmp_path / "elsewhere", env=env)
    assert after == before
    assert not (tmp_path / "cache").exists()  # nothing was rebuilt behind predict's back
    assert len(after) == 3 and all(r["label"] in WORDS for r in after)


def test_seq2seq_predict_without_the_tokenizer_cache(tmp_path):
    env = {"DLKIT_CACHE_DIR": str(tmp_path / "cache")}
    run = train(tmp_path, env, "model=transformer", "model.d_model=16", "model.d_ff=32", "model.layers=1",
                "data.num_examples=300", "trainer.max_epochs=1")
    before = predictions(str(run), "a1 b2 c3", "k3 j2", cwd=tmp_path, env=env)
    shutil.rmtree(tmp_path / "cache")
    after = predictions(str(run), "a1 b2 c3", "k3 j2", cwd=tmp_path, env=env)
    assert after == before and all("translation" in r for r in after)
    assert not (tmp_path / "cache").exists()


def test_bert_fine_tuned_from_a_folder_predicts_after_the_folder_is_gone(tmp_path):
    transformers = pytest.importorskip("transformers")
    env = {"DLKIT_CACHE_DIR": str(tmp_path / "cache")}
    words = sorted({w for ws in WORDS.values() for w in ws} | {"the", "movie", "film", "plot", "cast", "was"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    vocab += [f"[unused{i}]" for i in range(32 - len(vocab))]
    folder = tmp_path / "tiny-bert"
    config = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    transformers.BertForPreTraining(config).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    write_reviews(tmp_path / "train.csv")
    run = train(tmp_path, env, "model=bert", f"model.pretrained={folder}", "data=text_files",
                f"data.train_file={tmp_path / 'train.csv'}", "data.batch_size=16", "scheduler=none",
                "trainer.max_epochs=1")
    texts = ["the film was good", "the cast was poor"]
    before = predictions(str(run), *texts, cwd=tmp_path, env=env)
    shutil.rmtree(folder)
    shutil.rmtree(tmp_path / "cache")
    (tmp_path / "train.csv").unlink()
    after = predictions(str(run), *texts, cwd=tmp_path, env=env)
    assert after == before


def test_every_predicting_datamodule_restores_from_its_state_alone(tmp_path):
    """Masked-LM corpus and images (not trained above): a restored datamodule encodes inputs as the set-up one."""
    from dlkit.data.corpus import CorpusDataModule
    from dlkit.data.spec import DataSpec
    from dlkit.data.vision import DigitsDataModule, ImageFolderDataModule

    np = pytest.importorskip("numpy")
    image = tmp_path / "digit.npy"
    np.save(image, np.arange(64, dtype=np.float32).reshape(8, 8) / 4)
    for number in range(12):
        folder = tmp_path / "images" / ("a" if number % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{number}.npy", np.full((4, 4), number * 20.0, dtype=np.float32))
    folders = {"root": str(tmp_path / "images"), "image_size": (4, 4), "channels": 1, "val_fraction": 0.25}
    cases = [(CorpusDataModule(synthetic_documents=40, max_length=32, cache_dir=str(tmp_path / "cache")),
              lambda: CorpusDataModule(cache_dir=str(tmp_path / "none")), ["the [MASK] and the rain were cold"]),
             (DigitsDataModule(), DigitsDataModule, [str(image)]),
             (ImageFolderDataModule(**folders), lambda: ImageFolderDataModule(root=str(tmp_path / "none")),
              [str(tmp_path / "images" / "a" / "1.npy")])]
    for original, fresh, raw in cases:
        original.setup("fit")
        state = original.inference_state()
        saved = tmp_path / "state.pt"  # as checkpoints hold it: loadable with weights_only
        torch.save({"data": state, "spec": original.spec.as_dict()}, saved)
        loaded = torch.load(saved, weights_only=True)
        restored = fresh()
        restored.restore(loaded["data"], DataSpec.from_dict(loaded["spec"]))
        expected, got = original.encode_inputs(raw), restored.encode_inputs(raw)
        if isinstance(expected, dict):
            assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
        else:
            assert torch.allclose(expected, got)
        assert restored.spec == original.spec
    assert not (tmp_path / "none").exists()
