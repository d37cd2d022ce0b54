"""Texts laid out by class (issue 19 item 5): IMDB's folder per class, the movie-review set's file per class, and
`LABEL TEXT` lines, each with the one-line errors of text_files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import QUICK, run_cli, run_folders, summary

from dlkit.data.tables import read_columns
from dlkit.data.text_folder import TextFolderDataModule
from dlkit.errors import UsageError

REVIEWS = {"pos": ["a great film", "a moving story, superbly told"], "neg": ["a dull film", "a clumsy, tedious plot"]}


def imdb_layout(root, per_class=10):
    """aclImdb's layout: train/{pos,neg,unsup}/N_R.txt and test/{pos,neg}/N_R.txt, one review per file."""
    for split, count in (("train", per_class), ("test", per_class // 2)):
        for label, texts in REVIEWS.items():
            folder = root / split / label
            folder.mkdir(parents=True)
            for number in range(count):
                (folder / f"{number}_7.txt").write_text(f"{texts[number % 2]} <br /><br />\nreview {number}\n")
        (root / split / "urls.txt").write_text("http://example.invalid\n")  # a file beside the class folders
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0_0.txt").write_text("no label here\n")


def test_a_folder_per_class_with_one_review_per_file_and_a_test_folder(tmp_path):
    imdb_layout(tmp_path / "aclImdb")
    dm = TextFolderDataModule(root=str(tmp_path / "aclImdb" / "train"), test_root=str(tmp_path / "aclImdb" / "test"),
                              classes=["neg", "pos"], pattern="*.txt", cache_dir=str(tmp_path / "cache"),
                              val_fraction=0.2)
    dm.setup()
    assert dm.labels == ["neg", "pos"]
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (16, 4, 10)
    assert np.bincount(np.asarray(dm.test_set.labels)).tolist() == [5, 5]
    text = dm.tokenizer.decode(dm.test_set.ids.row(0).tolist())
    assert "review" in text and "\n" not in text  # a whole file is one text
    # without data.classes every sub-folder is a class (IMDB's unsup/ too: data.classes=[neg,pos] leaves it out)
    every = TextFolderDataModule(root=str(tmp_path / "aclImdb" / "train"), cache_dir=str(tmp_path / "cache"),
                                 val_fraction=0.2, test_fraction=0.2)
    assert list(every.class_files("train")) == ["neg", "pos", "unsup"]


def test_a_file_per_class_in_latin_1_with_one_text_per_line(tmp_path):
    """The movie-review polarity set as it is shipped: rt-polarity.pos / .neg, latin-1, a sentence per line."""
    pos, neg = tmp_path / "rt-polarity.pos", tmp_path / "rt-polarity.neg"
    pos.write_bytes("".join(f"un film très réussi {i}\n" for i in range(20)).encode("latin-1"))
    neg.write_bytes("".join(f"a flat , lifeless film {i}\n\n" for i in range(20)).encode("latin-1"))
    with pytest.raises(UsageError, match=r"rt-polarity.pos is not utf-8 text .*set data.encoding=latin-1"):
        TextFolderDataModule(files={"pos": str(pos), "neg": str(neg)}, cache_dir=str(tmp_path)).setup()
    dm = TextFolderDataModule(files={"pos": str(pos), "neg": str(tmp_path / "*.neg")}, encoding="latin-1",
                              cache_dir=str(tmp_path / "cache"), val_fraction=0.1, test_fraction=0.1)
    dm.setup()
    assert dm.labels == ["neg", "pos"] and len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 40
    assert "tres" in dm.tokenizer.get_vocab()  # decoded as latin-1 (then lowercased, accents stripped)


def test_label_text_lines(tmp_path):
    """Kim 2014's subj/cr/mpqa files: `LABEL TEXT` a line; fastText's `__label__x` prefix is taken off."""
    path = tmp_path / "subj.all"
    path.write_text("0 smart and alert , a small gem . \n1 the movie begins in the past .\n\n__label__1 a fact\n")
    rows = [row for chunk in read_columns(path, ["text", "label"], "label_text") for row in zip(*chunk.values())]
    assert rows == [("smart and alert , a small gem .", "0"), ("the movie begins in the past .", "1"),
                    ("a fact", "1")]
    bare = tmp_path / "bare.all"
    bare.write_text("0 fine\n1 \n")  # a label alone (CR has seven such lines): a row with an empty text
    assert [row for chunk in read_columns(bare, ["text", "label"], "label_text") for row in zip(*chunk.values())] \
        == [("fine", "0"), ("", "1")]
    with pytest.raises(UsageError, match=r"unknown format 'label-text'.*Did you mean label_text"):
        read_columns(path, ["text", "label"], "label-text")


@pytest.mark.parametrize(("overrides", "message"), [
    ([], "data=text_folder needs data.root=FOLDER"),
    (["data.root=ROOT/aclImdb/train", "data.files={pos: x}"], "set one of them"),
    (["data.root=ROOT/missing"], "data.root=ROOT/missing is not a folder"),
    (["data.root=ROOT/aclImdb/train", "data.classes=[pos,neutral]"], "has no sub-folder 'neutral' (data.classes)"),
    (["data.root=ROOT/aclImdb/train", "data.classes=[pos,neg]", "data.pattern=*.md"],
     "the class folder pos/ has no files matching data.pattern='*.md'"),
    (["data.root=ROOT/aclImdb/train", "data.text_per=paragraph"], "data.text_per=paragraph: choose file, line"),
    (["data.files={pos: ROOT/nope.pos, neg: ROOT/nope.neg}"], "data.files.pos=ROOT/nope.pos: no such file"),
])
def test_bad_layouts_fail_with_one_line_before_a_run_folder_exists(tmp_path, overrides, message):
    imdb_layout(tmp_path / "aclImdb", per_class=2)
    given = [o.replace("ROOT", str(tmp_path)) for o in overrides]
    result = run_cli("train", *QUICK, "model=textcnn", "data=text_folder", *given, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: " + result.stderr.strip().split("error: ", 1)[1]
    assert message.replace("ROOT", str(tmp_path)) in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_textcnn_trains_on_a_folder_per_class_from_the_command_line(tmp_path):
    imdb_layout(tmp_path / "aclImdb", per_class=30)
    result = run_cli("train", *QUICK, "model=textcnn", "model.embedding_dim=16", "model.num_filters=8",
                     "data=text_folder", f"data.root={tmp_path / 'aclImdb' / 'train'}", "data.classes=[neg,pos]",
                     f"data.test_root={tmp_path / 'aclImdb' / 'test'}", "data.batch_size=8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    assert set(summary(run)["metrics"]) >= {"test/acc", "best/val/acc"}
    predicted = run_cli("predict", str(run), "a great film", "-f", "text", cwd=tmp_path)
    assert predicted.returncode == 0 and predicted.stdout.strip() in ("neg", "pos")
