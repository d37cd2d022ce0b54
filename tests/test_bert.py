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
