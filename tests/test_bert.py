"""dlkit's BERT against Hugging Face's BertForPreTraining with the same weights (transformers is test-only)."""

from __future__ import annotations

import pytest
import torch

from dlkit.models.bert import load_hf_pretraining


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_outputs_match_hugging_face_to_1e_5(tmp_path, weights):
    import transformers  # a test-only dependency (the `test` extra)

    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)
    torch.manual_seed(0)
    reference = transformers.BertForPreTraining(config).eval()
    reference.save_pretrained(tmp_path, safe_serialization=weights == "safetensors")
    ours = load_hf_pretraining(tmp_path).eval()

    ids = torch.randint(5, 99, (3, 11))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        hidden, _ = ours.bert(ids, mask, types)
        mlm, nsp = ours(ids, mask, types)
    real = mask.bool()
    assert torch.allclose(hidden[real], expected.hidden_states[-1][real], atol=1e-5)
    assert torch.allclose(mlm[real], expected.prediction_logits[real], atol=1e-5)
    assert torch.allclose(nsp, expected.seq_relationship_logits, atol=1e-5)
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight


@pytest.mark.slow
def test_fine_tunes_from_a_hugging_face_folder_with_its_vocabulary(tmp_path):
    import json

    import transformers
    from conftest import run_cli, run_folders, summary

    words = ["good", "great", "fine", "bad", "awful", "poor", "movie", "film", "the", "was", "not"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    vocab += [f"[unused{i}]" for i in range(64 - len(vocab))]
    checkpoint = tmp_path / "tiny-bert"
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertForPreTraining(config).save_pretrained(checkpoint)
    (checkpoint / "vocab.txt").write_text("\n".join(vocab) + "\n")
    rows = [f"the {n} was {a},{'pos' if a in words[:3] else 'neg'}" for n in ("movie", "film")
            for a in words[:6]] * 20
    (tmp_path / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    result = run_cli("train", "model=bert", f"model.pretrained={checkpoint}", "data=text_files",
                     f"data.train_file={tmp_path / 'train.csv'}", "optimizer.lr=1e-3", "trainer.max_epochs=8",
                     "scheduler=none", "logger=csv", "callbacks=minimal", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    import yaml

    config_used = yaml.safe_load((run / "config.yaml").read_text())
    assert config_used["data"]["tokenizer"]["path"] == str(checkpoint)
    assert config_used["data"]["add_special_tokens"] is True
    assert summary(run)["metrics"]["test/acc"] >= 0.9
    predicted = run_cli("predict", "latest", "the film was great", "the movie was awful", "-f", "jsonl", cwd=tmp_path)
    assert [json.loads(line)["label"] for line in predicted.stdout.splitlines()] == ["pos", "neg"]


def test_dynamic_masking_is_15_percent_split_80_10_10():
    from dlkit.data.corpus import MaskingCollator

    torch.manual_seed(0)
    items = [([2, *range(10, 210), 3], [0] * 202, 0) for _ in range(64)]
    collate = MaskingCollator(pad_id=0, mask_id=4, vocab_size=300, special={0, 1, 2, 3, 4})
    first, second = collate(items), collate(items)
    chosen = first["mlm_labels"] != -100
    assert abs(chosen.float().mean().item() * 202 / 200 - 0.15) < 0.01
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # [CLS] and [SEP] are never masked
    original = first["mlm_labels"][chosen]
    now = first["input_ids"][chosen]
    masked = (now == 4).float().mean().item()
    kept = (now == original).float().mean().item()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02
    assert not torch.equal(first["mlm_labels"], second["mlm_labels"])  # new masks every batch


def test_next_sentence_pairs_are_half_true_half_random():
    from dlkit.data.corpus import sentence_pairs, synthetic_documents

    documents = synthetic_documents(200, seed=0)
    pairs = sentence_pairs(documents, seed=0)
    assert 0.45 < sum(label for _, _, label in pairs) / len(pairs) < 0.55
    following = {(d[i], d[i + 1]) for d in documents for i in range(len(d) - 1)}
    assert all((a, b) in following for a, b, label in pairs if label == 0)


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """One short BERT pre-training run on the synthetic corpus, shared by the tests below."""
    from conftest import run_cli, run_folders

    root = tmp_path_factory.mktemp("pretrain")
    # next-sentence prediction leaves chance after 200-450 steps: 12 epochs (~800 steps) of 600 documents
    result = run_cli("train", "model=bert_pretrain", "trainer.max_epochs=12", "optimizer.lr=2e-3", "scheduler=none",
                     "logger=csv", "callbacks=minimal", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(root)
    return run


@pytest.mark.slow
def test_pretraining_lowers_the_mlm_and_nsp_losses_then_fills_masks(pretrained_run):
    import csv
    import json

    from conftest import run_cli

    rows = [r for r in csv.DictReader((pretrained_run / "metrics.csv").open()) if r.get("train/mlm_loss")]
    mlm = [float(r["train/mlm_loss"]) for r in rows]
    nsp = [float(r["train/nsp_loss"]) for r in rows]
    assert mlm[-1] < 0.5 * mlm[0]
    assert nsp[-1] < 0.65 and nsp[-1] < nsp[0] - 0.05  # chance is ln 2 = 0.693
    filled = run_cli("predict", str(pretrained_run), "the [MASK] and the rain were cold", "--top-k", "3", "-f",
                     "jsonl", cwd=pretrained_run)
    assert filled.returncode == 0, filled.stderr[-2000:]
    fills = json.loads(filled.stdout.splitlines()[0])["fills"]
    assert len(fills) == 1 and len(fills[0]) == 3


@pytest.mark.slow
def test_fine_tuning_starts_from_a_pretraining_run(pretrained_run, tmp_path):
    from conftest import run_cli

    from dlkit.models.bert import BertClassifier, dlkit_checkpoint

    tuned = run_cli("train", "model=bert_tiny", f"model.pretrained={pretrained_run}", "trainer.max_epochs=1",
                    "logger=csv", "callbacks=minimal", "data.num_examples=500", cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    encoder = BertClassifier(0, 2, pretrained=str(pretrained_run)).bert
    state = dlkit_checkpoint(pretrained_run)["state_dict"]
    assert torch.equal(encoder.embeddings.word_embeddings.weight, state["model.bert.embeddings.word_embeddings.weight"])


    # the fine-tuned classifier exports as a BertForSequenceClassification with its labels
    import transformers
    from conftest import run_folders

    from dlkit.inference import load

    [run] = run_folders(tmp_path)
    out = tmp_path / "hf"
    exported = run_cli("export", str(run), "-f", "huggingface", "-o", str(out), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    loaded = load(str(run))
    theirs = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    assert list(theirs.config.id2label.values()) == loaded.datamodule.spec.class_names
    batch = loaded.datamodule.encode_inputs(["the movie was not good", "a fine film"])
    with torch.no_grad():
        expected = theirs(**batch).logits
        assert torch.allclose(loaded.task.model(**batch), expected, atol=1e-5)


@pytest.mark.slow
def test_export_in_hugging_face_format_loads_in_transformers(pretrained_run, tmp_path):
    import json

    import transformers
    from conftest import run_cli
    from tokenizers import Tokenizer

    from dlkit.data.tokenizers import encode
    from dlkit.inference import load

    out = tmp_path / "hf"
    result = run_cli("export", str(pretrained_run), "--format", "huggingface", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BertForPreTraining" in result.stdout
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForPreTraining"]
    theirs = transformers.BertForPreTraining.from_pretrained(out).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text, pair = "the rain and the sun were cold", "the boat sails"
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    [ours_ids] = encode(tokenizer, [text], add_special=True)  # what dlkit's data feeds the model
    assert hf_tokenizer(text)["input_ids"] == ours_ids
    assert transformers.BertTokenizer(str(out / "vocab.txt"))(text)["input_ids"] == ours_ids
    assert hf_tokenizer(text, pair)["input_ids"] == encode(tokenizer, [text], [pair], add_special=True)[0]
    ids = torch.tensor([ours_ids])
    ours = load(str(pretrained_run)).task.model.eval()
    with torch.no_grad():
        expected = theirs(input_ids=ids)
        mlm, nsp = ours(ids)
    assert torch.allclose(mlm, expected.prediction_logits, atol=1e-5)
    assert torch.allclose(nsp, expected.seq_relationship_logits, atol=1e-5)
    # and back into dlkit: the exported folder is a Hugging Face checkpoint like any other
    tuned = run_cli("train", "model=bert_tiny", f"model.pretrained={out}", "logger=csv", "callbacks=minimal",
                    "trainer.max_epochs=1", "trainer.limit_train_batches=2", "data.num_examples=200", cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stderr[-3000:]

def _hub_cache(root, repo_id: str, folder) -> None:
    """Lay out `folder` as the Hugging Face hub cache leaves a downloaded model (refs/main -> snapshots/SHA)."""
    import shutil

    sha = "0" * 40
    cached = root / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, cached / "snapshots" / sha)
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text(sha)


def test_a_hub_name_loads_from_the_hugging_face_cache(tmp_path, monkeypatch):
    import transformers

    from dlkit.errors import DlkitError, UsageError
    from dlkit.models.bert import hf_folder

    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    reference = transformers.BertForPreTraining(config).eval()
    reference.save_pretrained(tmp_path / "saved")
    _hub_cache(tmp_path / "hub", "someone/tiny-bert", tmp_path / "saved")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # HF_HUB_OFFLINE=1 is set for every test
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    folder = hf_folder("someone/tiny-bert")
    assert (folder / "config.json").is_file() and folder.parent.name == "snapshots"
    ours = load_hf_pretraining("someone/tiny-bert").eval()
    ids = torch.randint(5, 40, (2, 9))
    with torch.no_grad():
        assert torch.allclose(ours(ids)[0], reference(input_ids=ids).prediction_logits, atol=1e-5)
    with pytest.raises(DlkitError, match="could not get it from the Hugging Face hub"):
        hf_folder("someone/not-cached")
    with pytest.raises(UsageError, match="no such folder"):
        hf_folder(str(tmp_path / "missing" / "folder"))
