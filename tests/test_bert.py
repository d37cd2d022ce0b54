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


@pytest.mark.slow
def test_pretraining_lowers_the_mlm_loss_then_fills_masks_and_fine_tunes(tmp_path):
    import csv

    from conftest import run_cli, run_folders

    result = run_cli("train", "model=bert_pretrain", "trainer.max_epochs=4", "logger=csv", "callbacks=minimal",
                     "data.synthetic_documents=300", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r.get("train/mlm_loss")]
    mlm = [float(r["train/mlm_loss"]) for r in rows]
    assert mlm[-1] < 0.5 * mlm[0]
    filled = run_cli("predict", str(run), "the [MASK] and the rain were cold", "--top-k", "3", "-f", "jsonl",
                     cwd=tmp_path)
    assert filled.returncode == 0, filled.stderr[-2000:]
    import json

    fills = json.loads(filled.stdout.splitlines()[0])["fills"]
    assert len(fills) == 1 and len(fills[0]) == 3
    tuned = run_cli("train", "model=bert_tiny", f"model.pretrained={run}", "trainer.max_epochs=1", "logger=csv",
                    "callbacks=minimal", "data.num_examples=500", cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    from dlkit.models.bert import BertClassifier, dlkit_checkpoint

    encoder = BertClassifier(0, 2, pretrained=str(run)).bert
    state = dlkit_checkpoint(run)["state_dict"]
    assert torch.equal(encoder.embeddings.word_embeddings.weight, state["model.bert.embeddings.word_embeddings.weight"])
