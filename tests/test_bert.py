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
