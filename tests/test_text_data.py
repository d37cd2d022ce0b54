"""Text classification data: files, pairs, Hugging Face loading on local files, caching, bad input."""

from __future__ import annotations

import json
import time

import pytest
import torch

from dlkit.data.base import BucketSampler
from dlkit.data.hf_text import HFTextDataModule
from dlkit.data.synthetic_text import SyntheticSentimentDataModule, synthetic_review
from dlkit.data.tables import read_columns
from dlkit.data.text import TextFilesDataModule
from dlkit.errors import DlkitError, UsageError


def read_table(path, text_column, label_column, pair_column=None, file_format=None, header=True, encoding="utf-8"):
    """(text, label) of every row, through the streaming reader."""
    columns = [text_column, label_column]
    rows = []
    for chunk in read_columns(path, columns, file_format, header, encoding):
        rows += list(zip(chunk[str(text_column)], chunk[str(label_column)]))
    return rows


def _write_csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_csv_tsv_and_jsonl_files_give_the_same_data(tmp_path):
    rows = [("a great movie", "pos"), ("a dull movie", "neg")] * 20
    _write_csv(tmp_path / "d.csv", [f"{t},{lab}" for t, lab in rows])
    (tmp_path / "d.tsv").write_text("text\tlabel\n" + "\n".join(f"{t}\t{lab}" for t, lab in rows) + "\n")
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"text": t, "label": lab}) for t, lab in rows) + "\n")
    specs = []
    for name in ("d.csv", "d.tsv", "d.jsonl"):
        dm = TextFilesDataModule(train_file=str(tmp_path / name), cache_dir=str(tmp_path / "cache"), batch_size=8)
        dm.setup()
        specs.append((dm.spec.num_classes, dm.spec.class_names, len(dm.train_set), len(dm.val_set), len(dm.test_set)))
        inputs, labels = next(iter(dm.train_dataloader()))
        assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"}
        assert inputs["input_ids"].shape == inputs["attention_mask"].shape and labels.shape == (8,)
    assert specs[0] == specs[1] == specs[2] == (2, ["neg", "pos"], 32, 4, 4)


def test_batches_are_padded_to_their_longest_text(tmp_path):
    rows = ["short,a", "a much much longer text than the other one,b"] * 4
    dm = TextFilesDataModule(train_file=str(_write_csv(tmp_path / "d.csv", rows)), cache_dir=str(tmp_path),
                             batch_size=2, val_fraction=0.25, test_fraction=0.25)
    dm.setup()
    lengths = dm.train_set.lengths().tolist()
    inputs, _ = dm.train_set.__getitems__(list(range(len(dm.train_set))))
    assert inputs["input_ids"].shape[1] == max(lengths)
    assert inputs["attention_mask"].sum(1).tolist() == lengths
    assert (inputs["input_ids"][inputs["attention_mask"] == 0] == dm.spec.pad_id).all()


def test_sentence_pairs_get_cls_sep_framing_and_segment_ids(tmp_path):
    path = tmp_path / "pairs.csv"
    _write_csv(path, ["a cat sat,the cat is sitting,yes", "a dog ran,nobody moved,no"] * 10, header="a,b,label")
    dm = TextFilesDataModule(train_file=str(path), text_column="a", text_pair_column="b", cache_dir=str(tmp_path))
    dm.setup()
    ids, types, _ = dm.train_set[0]
    tok = dm.tokenizer
    assert ids[0] == tok.token_to_id("[CLS]") and ids[-1] == tok.token_to_id("[SEP]")
    first_sep = ids.index(tok.token_to_id("[SEP]"))
    assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    assert 1 in types


def test_tokenizer_is_cached_and_100k_rows_encode_fast(tmp_path):
    import random

    rng = random.Random(0)
    rows = [",".join(synthetic_review(rng)) for _ in range(100_000)]
    path = _write_csv(tmp_path / "big.csv", rows)
    start = time.perf_counter()
    dm = TextFilesDataModule(train_file=str(path), cache_dir=str(tmp_path / "cache"))
    dm.setup()
    first = time.perf_counter() - start
    assert len(dm.train_set) == 80_000
    stores = list((tmp_path / "cache" / "stores").glob("*/tokenizer.json"))
    assert len(stores) == 1
    again = TextFilesDataModule(train_file=str(path), cache_dir=str(tmp_path / "cache"))
    again.setup()
    assert [again.train_set[i] for i in range(50)] == [dm.train_set[i] for i in range(50)]
    assert first < 60  # generous: the benchmark measures it properly


@pytest.mark.parametrize(("content", "kwargs", "error", "message"), [
    (None, {}, UsageError, "does not exist"),
    ("text,label\nhello,a\n", {"label_column": "lable"}, UsageError, "no column 'lable'. Did you mean label?"),
    ("text,label\n" + "hi,a\n" * 30 + "hi\n", {}, DlkitError, "row 32 is missing"),
    ("text,label\n", {}, DlkitError, "training split is empty"),
])
def test_bad_text_files_fail_with_one_clear_line(tmp_path, content, kwargs, error, message):
    path = tmp_path / "d.csv"
    if content is not None:
        path.write_text(content)
    dm = TextFilesDataModule(train_file=str(path), cache_dir=str(tmp_path), **kwargs)
    with pytest.raises(error, match=message):
        dm.setup()


def test_bad_json_row_and_label_only_in_test(tmp_path):
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{not json}\n')
    with pytest.raises(DlkitError, match=r"d.jsonl:2: not valid JSON"):
        TextFilesDataModule(train_file=str(bad), cache_dir=str(tmp_path)).setup()
    train = _write_csv(tmp_path / "train.csv", ["good,pos", "bad,neg"] * 10)
    test = _write_csv(tmp_path / "test.csv", ["meh,neutral"])
    with pytest.raises(DlkitError, match="'neutral' appears in the test split but never in train"):
        TextFilesDataModule(train_file=str(train), test_file=str(test), cache_dir=str(tmp_path)).setup()


def test_bucketing_groups_similar_lengths_and_covers_every_example():
    lengths = [1, 50, 2, 49, 3, 48, 4, 47] * 10
    batches = list(BucketSampler(lengths, batch_size=4, seed=0))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spreads) <= 3


def test_synthetic_data_needs_word_order():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    examples = list(SyntheticSentimentDataModule(num_examples=6000, cache_dir="unused").reviews())
    texts, labels = [text for text, _ in examples], [label for _, label in examples]
    assert 0.4 < labels.count("positive") / len(labels) < 0.6
    # a bag-of-words classifier stays far from the ~100% the sequence models reach (test_models_zoo)
    words = CountVectorizer().fit(texts[:5000])
    bow = LogisticRegression(max_iter=2000).fit(words.transform(texts[:5000]), labels[:5000])
    assert bow.score(words.transform(texts[5000:]), labels[5000:]) < 0.85


def test_hf_text_loads_a_local_dataset_folder_the_way_it_loads_the_hub(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    _write_csv(folder / "train.csv", ["great fun,1", "awful mess,0"] * 20)
    _write_csv(folder / "test.csv", ["great,1", "awful,0"])
    dm = HFTextDataModule(name=str(folder), cache_dir=str(tmp_path / "cache"), data_dir=str(tmp_path / "hf"))
    dm.prepare_data()
    dm.setup()
    assert dm.spec.num_classes == 2 and len(dm.test_set) == 2 and len(dm.val_set) == 4
    missing = HFTextDataModule(name="no-such-user/no-such-dataset", cache_dir=str(tmp_path),
                               data_dir=str(tmp_path / "hf"))
    with pytest.raises(DlkitError, match="could not load Hugging Face dataset 'no-such-user/no-such-dataset'"):
        missing.prepare_data()


def test_encode_inputs_turns_raw_text_into_a_model_batch(tmp_path):
    dm = TextFilesDataModule(train_file=str(_write_csv(tmp_path / "d.csv", ["good film,pos", "bad film,neg"] * 10)),
                             cache_dir=str(tmp_path))
    dm.setup()
    batch = dm.encode_inputs(["good film", "a bad bad film"])
    assert batch["input_ids"].shape == (2, 4) and batch["attention_mask"].sum().item() == 6
    assert isinstance(batch["input_ids"], torch.Tensor)


def test_encoded_cache_is_invalidated_when_the_file_changes(tmp_path):
    path = _write_csv(tmp_path / "d.csv", ["good film,pos", "bad film,neg"] * 10)
    first = TextFilesDataModule(train_file=str(path), cache_dir=str(tmp_path / "c"))
    first.setup()
    assert len(list((tmp_path / "c" / "stores").glob("*/manifest.json"))) == 1
    time.sleep(0.01)
    _write_csv(path, ["good film,pos", "bad film,neg", "fine film,meh"] * 10)
    second = TextFilesDataModule(train_file=str(path), cache_dir=str(tmp_path / "c"))
    second.setup()
    assert second.spec.class_names == ["meh", "neg", "pos"]
    warm = TextFilesDataModule(train_file=str(path), cache_dir=str(tmp_path / "c"))
    warm.setup()
    assert warm.store.folder == second.store.folder and warm.spec.as_dict() == second.spec.as_dict()
    assert len(list((tmp_path / "c" / "stores").glob("*/manifest.json"))) == 2  # the changed file got its own


def test_a_bert_vocab_txt_is_loaded_with_its_own_ids(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "##s"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    path = _write_csv(tmp_path / "d.csv", ["good films,pos", "bad film,neg"] * 10)
    dm = TextFilesDataModule(train_file=str(path), cache_dir=str(tmp_path / "c"), add_special_tokens=True,
                             tokenizer={"path": str(tmp_path / "vocab.txt")})
    dm.setup()
    ids, _, _ = dm.train_set[0]
    assert ids[0] == 2 and ids[-1] == 3 and dm.spec.vocab_size == len(vocab) and dm.spec.mask_id == 4
    assert set(ids[1:-1]) <= {5, 6, 7, 8}


def test_tsv_has_no_quoting_and_a_csv_row_wider_than_its_header_is_refused(tmp_path):
    tsv = tmp_path / "q.tsv"
    tsv.write_text('text\tlabel\n"Wow, great film\tpos\nawful film\tneg\n')
    examples = read_table(tsv, "text", "label", None)
    assert examples == [('"Wow, great film', "pos"), ("awful film", "neg")]
    extra = tmp_path / "extra.csv"
    extra.write_text("text,label\ngood film,pos\ngreat, really,pos\n")
    with pytest.raises(DlkitError, match=r"extra.csv row 3 has 3 fields, the header has 2 \(quote text containing"):
        read_table(extra, "text", "label", None)


def test_headerless_and_latin1_files(tmp_path):
    sms = tmp_path / "sms.tsv"
    sms.write_text("ham\tGo until jurong point\nspam\tWIN a prize now\n" * 10)
    dm = TextFilesDataModule(train_file=str(sms), header=False, text_column=1, label_column=0,
                             cache_dir=str(tmp_path / "c"))
    dm.setup()
    assert dm.labels == ["ham", "spam"]
    with pytest.raises(UsageError, match="data.header=false"):
        read_table(sms, "text", "label", None)
    latin = tmp_path / "mr.csv"
    latin.write_bytes("text,label\nun film très réussi,pos\n".encode("latin-1"))
    with pytest.raises(UsageError, match=r"mr.csv is not utf-8 text .*set data.encoding=latin-1"):
        read_table(latin, "text", "label", None)
    assert read_table(latin, "text", "label", None, encoding="latin-1")[0][0] == "un film très réussi"


def test_json_row_that_is_not_an_object_empty_val_file_and_missing_hf_name(tmp_path):
    rows = tmp_path / "d.jsonl"
    rows.write_text('{"text": "a", "label": "x"}\n["a", "x"]\n')
    with pytest.raises(DlkitError, match=r"d.jsonl:2: expected a JSON object .* got a JSON list"):
        read_table(rows, "text", "label", None)
    train = _write_csv(tmp_path / "train.csv", ["good,pos", "bad,neg"] * 10)
    empty = tmp_path / "val.csv"
    empty.write_text("")
    with pytest.raises(DlkitError, match=r"data.val_file .*val.csv has no rows"):
        TextFilesDataModule(train_file=str(train), val_file=str(empty), cache_dir=str(tmp_path)).setup()
    with pytest.raises(UsageError, match=r"data=hf_text needs data.name.*e.g. data.name=imdb"):
        HFTextDataModule(name=None)
    from dlkit.data.parallel import HFTranslationDataModule

    with pytest.raises(UsageError, match=r"data=hf_translation needs data.name"):
        HFTranslationDataModule(name=None, source_column="de", target_column="en")
