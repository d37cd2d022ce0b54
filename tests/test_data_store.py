"""Token stores: prepared once per (files, settings), reused, rebuilt when the data or a setting changes or a file is
damaged, prepared by one process while the others wait, and holding exactly what the tokenizer itself produces."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import time

import numpy as np
import pytest
from conftest import QUICK, dlkit_bin, run_cli, run_folders, run_main, summary

from dlkit.data.ragged import Ragged, clip_rows, frame_rows, pad_rows
from dlkit.data.store import open_store
from dlkit.data.store import summary as store_summary
from dlkit.data.text import TextFilesDataModule


def _reviews(path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = np.array(["good", "bad", "film", "plot", "very", "not", "the", "acting", "dull", "fun", "great"])
    lines = ["text\tlabel"]
    for _ in range(rows):
        text = " ".join(rng.choice(words, size=rng.integers(2, 12)))
        lines.append(f"{text}\t{'pos' if 'good' in text or 'great' in text else 'neg'}")
    path.write_text("\n".join(lines) + "\n")


def _stores(cache) -> list:
    return sorted(p.parent for p in (cache / "stores").glob("*/manifest.json"))


def test_ragged_rows_gather_pad_clip_and_frame():
    rows = Ragged.of(np.array([1, 2, 3, 4, 5, 6], dtype=np.int32), np.array([2, 0, 3, 1]))
    flat, lengths = rows.gather(np.array([2, 0, 1]))
    assert flat.tolist() == [3, 4, 5, 1, 2] and lengths.tolist() == [3, 2, 0]
    assert pad_rows(flat, lengths, 9).tolist() == [[3, 4, 5], [1, 2, 9], [9, 9, 9]]
    clipped, kept = clip_rows(rows.values, rows.lengths(), 2)
    assert clipped.tolist() == [1, 2, 3, 4, 6] and kept.tolist() == [2, 0, 2, 1]
    framed, longer = frame_rows(clipped, kept, 7, 8)
    assert framed.tolist() == [7, 1, 2, 8, 7, 8, 7, 3, 4, 8, 7, 6, 8] and longer.tolist() == [4, 2, 4, 3]


def test_a_stores_statistics_are_counted_while_it_is_written_and_equal_the_columns(tmp_path):
    """`dlkit data info` reads the manifest only: its tokens, length percentiles and label counts are the ones the
    columns themselves give (np.percentile, bincount); the scratch columns of the build are not kept."""
    data = tmp_path / "reviews.tsv"
    _reviews(data, 3000)
    store, _ = TextFilesDataModule(train_file=str(data), cache_dir=str(tmp_path / "cache")).prepare()
    assert not (store.folder / "spills").exists()
    described = store_summary(store)
    for split in ("train", "val", "test"):
        lengths = store.ragged(split, "ids").lengths()
        labels = np.bincount(np.asarray(store.fixed(split, "label")), minlength=2)
        assert described[split]["ids tokens"] == int(lengths.sum()) and described[split]["rows"] == len(lengths)
        assert described[split]["lengths"] == {**{f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 99)},
                                               "max": int(lengths.max())}
        assert described[split]["labels"] == dict(zip(store.manifest["labels"], labels.tolist()))


def test_the_store_is_reused_and_rebuilt_when_the_file_or_a_setting_changes(tmp_path):
    data, cache = tmp_path / "reviews.tsv", tmp_path / "cache"
    _reviews(data, 500)
    first = TextFilesDataModule(train_file=str(data), cache_dir=str(cache))
    store, built = first.prepare()
    assert built and _stores(cache) == [store.folder]
    reused, built = TextFilesDataModule(train_file=str(data), cache_dir=str(cache)).prepare()
    assert not built and reused.folder == store.folder
    shorter = TextFilesDataModule(train_file=str(data), cache_dir=str(cache), max_length=4)
    assert shorter.prepare()[1] and len(_stores(cache)) == 2  # a setting that changes the ids: its own store
    time.sleep(0.01)
    _reviews(data, 400, seed=1)  # the file changed (size and time): its own store
    changed = TextFilesDataModule(train_file=str(data), cache_dir=str(cache))
    store, built = changed.prepare()
    assert built and len(_stores(cache)) == 3 and store.rows("train") + store.rows("val") + store.rows("test") == 400


def test_a_truncated_store_file_is_rebuilt_not_used(tmp_path, capsys):
    data, cache = tmp_path / "reviews.tsv", tmp_path / "cache"
    _reviews(data, 500)
    first = TextFilesDataModule(train_file=str(data), cache_dir=str(cache))
    first.setup()
    expected = [first.train_set[i] for i in range(len(first.train_set))]
    values = first.store.folder / "train.ids.values"
    values.write_bytes(values.read_bytes()[:100])  # a copy that stopped halfway
    (first.store.folder.parent / f".{first.store.folder.name}.999.tmp").mkdir()  # a builder that died
    second = TextFilesDataModule(train_file=str(data), cache_dir=str(cache))
    second.setup()
    assert "is damaged (train.ids.values has 100 bytes where" in capsys.readouterr().out
    assert [second.train_set[i] for i in range(len(second.train_set))] == expected
    open_store(second.store.folder)  # complete again
    assert not list((cache / "stores").glob(".*.tmp"))


@pytest.mark.parametrize("framed", [False, True])
def test_stored_ids_are_the_tokenizers_own_encoding(tmp_path, framed):
    from tokenizers import Tokenizer

    data = tmp_path / "pairs.tsv"
    rows = [("a good film " * k, "the plot was dull " * (6 - k), "pos" if k % 2 else "neg") for k in range(1, 6)] * 8
    data.write_text("a\tb\tlabel\n" + "\n".join("\t".join(r) for r in rows) + "\n")
    extra = {"text_pair_column": "b"} if framed else {}
    dm = TextFilesDataModule(train_file=str(data), text_column="a", cache_dir=str(tmp_path / "c"), max_length=12,
                             val_fraction=0.0, test_fraction=0.0, **extra)
    with pytest.raises(Exception, match="split is empty"):
        dm.setup()
    dm = TextFilesDataModule(train_file=str(data), text_column="a", val_file=str(data), test_file=str(data),
                             cache_dir=str(tmp_path / "c"), max_length=12, **extra)
    dm.setup()
    tokenizer = Tokenizer.from_file(str(dm.store.folder / "tokenizer.json"))  # the file alone, as a client has it
    for index, (a, b, label) in enumerate(rows):
        encoding = tokenizer.encode(a, b) if framed else tokenizer.encode(a)
        ids, types, stored_label = dm.test_set[index]
        assert ids == encoding.ids and len(ids) <= 12
        assert (types == encoding.type_ids) if framed else types is None
        assert dm.labels[stored_label] == label


def test_stores_pickle_as_file_names_for_loader_workers(tmp_path):
    data = tmp_path / "reviews.tsv"
    _reviews(data, 5000)
    dm = TextFilesDataModule(train_file=str(data), cache_dir=str(tmp_path / "c"), num_workers=2, batch_size=32)
    dm.setup()
    assert len(pickle.dumps(dm.train_set)) < 2000  # not the data
    batches = list(dm.train_dataloader())
    assert sum(len(labels) for _, labels in batches) == len(dm.train_set)


def test_parquet_and_jsonl_give_the_same_store_content_as_tsv(tmp_path):
    import pyarrow as pa
    from pyarrow import parquet

    rows = [("a good film", "pos"), ("a dull plot", "neg")] * 30
    (tmp_path / "d.tsv").write_text("text\tlabel\n" + "\n".join(f"{t}\t{lab}" for t, lab in rows) + "\n")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    parquet.write_table(pa.table({"text": [t for t, _ in rows], "label": [lab for _, lab in rows]}),
                        tmp_path / "d.parquet")
    seen = []
    for name in ("d.tsv", "d.jsonl", "d.parquet"):
        dm = TextFilesDataModule(train_file=str(tmp_path / name), cache_dir=str(tmp_path / "c"))
        dm.setup()
        seen.append([dm.train_set[i] for i in range(len(dm.train_set))])
    assert seen[0] == seen[1] == seen[2] and len(seen[0]) == 48


@pytest.mark.slow
def test_two_runs_preparing_the_same_data_at_once_make_one_store_and_both_train(tmp_path):
    data = tmp_path / "reviews.tsv"
    _reviews(data, 150_000)
    args = ["train", "model=textcnn", "data=text_files", f"data.train_file={data}", *QUICK]
    runs = [tmp_path / "a", tmp_path / "b"]
    processes = []
    for folder in runs:
        folder.mkdir()
        processes.append(subprocess.Popen([dlkit_bin(), *args], cwd=folder, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
    logs = [(run_folders(folder)[0] / "train.log").read_text() for folder in runs]
    assert sum("prepared the data of TextFilesDataModule in" in log for log in logs) == 1
    assert sum("using the prepared data of TextFilesDataModule" in log for log in logs) == 1
    stores = {re.search(r" in (/\S+?):? ", line + " ").group(1) for log in logs for line in log.splitlines()
              if "the prepared data of" in line or "prepared the data of" in line}
    assert len(stores) == 1, stores
    assert all(summary(run_folders(folder)[0])["status"] == "finished" for folder in runs)


@pytest.mark.slow
def test_ddp_with_two_processes_prepares_the_data_once(tmp_path):
    data = tmp_path / "reviews.tsv"
    _reviews(data, 3000)
    result = run_cli("train", "model=textcnn", "data=text_files", f"data.train_file={data}", "trainer=ddp_cpu", *QUICK,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    assert summary(run)["world_size"] == 2
    log = (run / "train.log").read_text()
    assert log.count("prepared the data of TextFilesDataModule in") + log.count("using the prepared data") == 1


def test_data_prepare_and_info_commands(tmp_path):
    data = tmp_path / "reviews.tsv"
    _reviews(data, 2000)
    args = ["model=textcnn", "data=text_files", f"data.train_file={data}", f"paths.cache_dir={tmp_path / 'c'}"]
    prepared = run_main("data", "prepare", *args, cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    assert prepared.stdout.startswith(f"Prepared: {tmp_path / 'c' / 'stores'}") and "train 1,600" in prepared.stdout
    again = run_main("data", "prepare", *args, cwd=tmp_path)
    assert again.stdout.startswith("Already prepared: ")
    info = run_main("data", "info", *args, "--format", "json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    table = json.loads(info.stdout)
    rows = {r["split"]: r for r in (table["rows"] if isinstance(table, dict) else table)}
    assert rows["train"]["rows"] == "1,600" and "pos" in rows["train"]["labels"] and "/" in rows["val"][
        "length p50 / p90 / p99 / max"]
    bad = run_main("data", "prepare", "model=textcnn", "data=text_files", f"data.train_file={tmp_path}/none.tsv",
                   cwd=tmp_path)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_files_are_read_in_pieces_cut_at_record_boundaries_with_the_same_rows(tmp_path, monkeypatch, fmt):
    """Arrow gets the file a piece at a time (its streaming reader would read far ahead): a quoted CSV field with
    newlines and quotes in it, blank lines and a last row without a newline come out as from one read."""
    from dlkit.data import tables

    sep = "," if fmt == "csv" else "\t"
    rows = [(f'"line one\nline ""two"" {i}"' if fmt == "csv" and i % 7 == 0 else f"text {i} é", f"label{i % 3}")
            for i in range(400)]
    body = "\n".join(f"{text}{sep}{label}" + ("\n" if i % 50 == 0 else "") for i, (text, label) in enumerate(rows))
    path = tmp_path / f"rows.{fmt}"
    path.write_text(f"text{sep}label\n" + body, encoding="utf-8")  # no newline after the last row

    def read() -> list[tuple[str, str]]:
        chunks = list(tables.read_columns(path, ["text", "label"], fmt))
        return [pair for chunk in chunks for pair in zip(chunk["text"], chunk["label"])]

    whole = read()
    monkeypatch.setattr(tables, "PIECE", 97)  # pieces of a few rows, cut anywhere, inside quoted fields too
    assert read() == whole
    expected = [(f'line one\nline "two" {i}' if fmt == "csv" and i % 7 == 0 else f"text {i} é", f"label{i % 3}")
                for i in range(400)]
    assert whole == expected
