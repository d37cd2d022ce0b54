"""Every model of the zoo trains end to end through the CLI on an offline dataset, and learns."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from conftest import run_cli, run_folders, summary

from dlkit.models.cnn import AlexNet, LeNet
from dlkit.models.rnn import RNNClassifier
from dlkit.models.textcnn import TextCNN, load_vectors


def _epoch_losses(run) -> list[float]:
    rows = csv.DictReader((run / "metrics.csv").open())
    return [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]


def _check_learned(run, chance: float) -> None:
    info = summary(run)
    assert info["status"] == "finished", info.get("error")
    losses = _epoch_losses(run)
    assert losses[-1] < 0.7 * losses[0], losses
    assert info["metrics"]["test/acc"] > chance + 0.3, info["metrics"]


@pytest.mark.slow
def test_image_models_learn_digits(tmp_path):
    result = run_cli("train", "-m", "model=mlp,lenet,alexnet", "trainer.max_epochs=6", "callbacks=minimal",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_folders(tmp_path)
    assert len(runs) == 3
    for run in runs:
        _check_learned(run, chance=0.1)


@pytest.mark.slow
def test_text_models_learn_the_synthetic_task(tmp_path):
    result = run_cli("train", "-m", "model=rnn,lstm,gru,textcnn", "trainer.max_epochs=4", "callbacks=minimal",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_folders(tmp_path)
    assert len(runs) == 4
    for run in runs:
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["data"]["_target_"].endswith("SyntheticSentimentDataModule")
        _check_learned(run, chance=0.5)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 96, 96)])
def test_cnns_fit_any_input_size(shape):
    for model in (LeNet(shape, 10), AlexNet(shape, 10, width=0.125, fc_size=256)):
        assert model(torch.zeros(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("model", [
    *(RNNClassifier(50, 3, cell=c, pooling=p) for c in ("rnn", "lstm", "gru") for p in ("last", "mean", "max")),
    TextCNN(50, 3, embedding_dim=16, num_filters=4),
])
def test_padding_never_changes_a_text_models_output(model):
    model.eval()
    ids = torch.tensor([[5, 6, 7, 8, 0, 0, 0], [5, 6, 7, 8, 9, 10, 11]])
    mask = (ids != 0).long()
    mask[1] = 1
    full = model(ids, mask)
    trimmed = model(ids[:1, :4], mask[:1, :4])
    noisy = ids.clone()
    noisy[0, 4:] = 12  # garbage where the mask says padding
    assert torch.allclose(full[0], trimmed[0], atol=1e-5)
    assert torch.allclose(model(noisy, mask)[0], full[0], atol=1e-5)


def test_textcnn_loads_pretrained_vectors_static_and_non_static(tmp_path):
    from dlkit.data.tokenizers import train_tokenizer

    tokenizer = train_tokenizer(["good bad movie"] * 3, kind="word")
    tokenizer.save(str(tmp_path / "tok.json"))
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("2 4\ngood 1 2 3 4\nmovie 0.5 0.5 0.5 0.5\n")
    matrix, hits = load_vectors(vectors, tokenizer.get_vocab(), 4)
    assert hits == 2 and matrix[tokenizer.token_to_id("good")].tolist() == [1, 2, 3, 4]
    static = TextCNN(tokenizer.get_vocab_size(), 2, embedding_dim=4, embeddings="static", vectors_path=str(vectors),
                     tokenizer_path=str(tmp_path / "tok.json"))
    assert not static.embedding.weight.requires_grad
    assert static.embedding.weight[tokenizer.token_to_id("movie")].tolist() == [0.5] * 4
    tuned = TextCNN(tokenizer.get_vocab_size(), 2, embedding_dim=4, embeddings="non-static",
                    vectors_path=str(vectors), tokenizer_path=str(tmp_path / "tok.json"))
    assert tuned.embedding.weight.requires_grad



def test_textcnn_vectors_of_the_wrong_size_are_refused_and_hits_are_logged(tmp_path, caplog):
    import logging

    from dlkit.data.tokenizers import train_tokenizer

    tokenizer = train_tokenizer(["good bad movie"] * 3, kind="word")
    tokenizer.save(str(tmp_path / "tok.json"))
    vectors = tmp_path / "glove50.txt"
    vectors.write_text("good " + " ".join(["0.1"] * 50) + "\nplot " + " ".join(["0.2"] * 50) + "\n")
    with pytest.raises(ValueError, match=r"holds 50-d vectors but model.embedding_dim=300: set model.embedding_dim=50"):
        TextCNN(tokenizer.get_vocab_size(), 2, embeddings="static", vectors_path=str(vectors),
                tokenizer_path=str(tmp_path / "tok.json"))
    with caplog.at_level(logging.INFO, logger="dlkit"):
        TextCNN(tokenizer.get_vocab_size(), 2, embedding_dim=50, embeddings="static", vectors_path=str(vectors),
                tokenizer_path=str(tmp_path / "tok.json"))
    assert f"1 of {tokenizer.get_vocab_size()} vocabulary words found" in caplog.text


def test_textcnn_predicts_from_a_checkpoint_after_its_vectors_file_is_gone(tmp_path, caplog):
    from dlkit.data.tokenizers import train_tokenizer

    tokenizer = train_tokenizer(["good bad movie"] * 3, kind="word")
    tokenizer.save(str(tmp_path / "tok.json"))
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("good 1 2 3 4\nmovie 0.5 0.5 0.5 0.5\n")
    kwargs = {"embedding_dim": 4, "num_filters": 2, "embeddings": "static", "vectors_path": str(vectors),
              "tokenizer_path": str(tmp_path / "tok.json")}
    trained = TextCNN(tokenizer.get_vocab_size(), 2, **kwargs)
    vectors.unlink()
    rebuilt = TextCNN(tokenizer.get_vocab_size(), 2, **kwargs)
    assert "must come from a checkpoint" in caplog.text
    ids, mask = torch.tensor([[7, 8, 9]]), torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(FileNotFoundError, match="vectors_path=.*does not exist"):
        rebuilt.train()(ids, mask)  # training without the file is refused
    rebuilt.load_state_dict(trained.state_dict())
    trained.eval(), rebuilt.eval()
    assert torch.equal(rebuilt(ids, mask), trained(ids, mask))
    assert not rebuilt.embedding.weight.requires_grad
    rebuilt.train()(ids, mask)  # the weights came from the checkpoint: fine-tuning on is allowed


def test_text_model_on_image_data_is_refused_naming_the_text_datasets(tmp_path):
    result = run_cli("train", "model=lstm", "data=digits", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot train on data=digits" in result.stderr and "synthetic_sentiment" in result.stderr
    assert "text_files" in result.stderr
    assert not (tmp_path / "outputs").exists()
