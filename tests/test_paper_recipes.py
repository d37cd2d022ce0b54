"""Paper recipes (issue 20): Kim 2014's TextCNN set-up with k-fold cross-validation, and the Multi30k Transformer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli, run_folders

from dlkit.data.base import fold_assignment
from dlkit.data.store import Spill
from dlkit.data.text import TextFilesDataModule

WORDS = {"pos": ["good", "great", "fine", "superb"], "neg": ["bad", "awful", "poor", "dull"]}
TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "logger=csv"]


def spill_of(tmp_path, labels):
    spill = Spill(tmp_path / "codes.bin")
    spill.append(np.asarray(labels, dtype=np.int32))
    return spill


def test_folds_are_stratified_deterministic_and_each_row_is_tested_once(tmp_path):
    labels = np.r_[np.zeros(70, int), np.ones(23, int), np.full(7, 2)]  # 100 rows, three unequal labels
    codes = spill_of(tmp_path, np.random.default_rng(1).permutation(labels))
    folds = [fold_assignment(codes, 10, k, 0.1, seed=0) for k in range(10)]
    tested = np.stack([f == 2 for f in folds])
    assert (tested.sum(axis=0) == 1).all()  # every row in exactly one test fold
    sizes = tested.sum(axis=1)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 100
    row_labels = codes.read(0, 100)
    for k, fold in enumerate(folds):
        per_label = np.bincount(row_labels[fold == 2], minlength=3)
        assert (np.abs(per_label - np.bincount(row_labels, minlength=3) / 10) <= 1).all(), (k, per_label)
        rest = (fold != 2).sum()
        assert (fold == 1).sum() == round(0.1 * rest)  # the dev set: 10% of the training rows
    assert all((fold_assignment(codes, 10, k, 0.1, seed=0) == folds[k]).all() for k in range(10))
    assert not (fold_assignment(codes, 10, 0, 0.1, seed=1) == folds[0]).all()


def test_a_text_datamodule_tests_on_its_fold_and_refuses_a_test_file_besides(tmp_path):
    rows = [f"the film was {w} {i},{label}" for label, words in WORDS.items() for w in words for i in range(10)]
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    seen = []
    for fold in range(4):
        dm = TextFilesDataModule(train_file=str(path), folds=4, fold=fold, cache_dir=str(tmp_path / "c"))
        dm.setup()
        assert len(dm.test_set) == 20 and len(dm.train_set) + len(dm.val_set) == 60
        assert np.bincount(np.asarray(dm.test_set.labels)).tolist() == [10, 10]
        seen += [dm.tokenizer.decode(dm.test_set.ids.row(i).tolist()) for i in range(len(dm.test_set))]
    assert len(set(seen)) == 80  # the four test folds together are every row once
    test = tmp_path / "t.csv"
    test.write_text("text,label\nok,pos\n")
    from dlkit.errors import UsageError

    with pytest.raises(UsageError, match="cuts the test .* drop it"):
        TextFilesDataModule(train_file=str(path), test_file=str(test), folds=4, fold=0,
                            cache_dir=str(tmp_path / "c")).setup()
    with pytest.raises(UsageError, match="cross-validation needs folds >= 2"):
        TextFilesDataModule(train_file=str(path), folds=4, fold=4)


def test_max_norm_rescales_rows_above_the_limit_after_each_step():
    from dlkit.callbacks import MaxNorm
    from dlkit.errors import UsageError

    task = torch.nn.Module()
    task.model = torch.nn.Module()
    task.model.head = torch.nn.Linear(4, 3)
    with torch.no_grad():
        task.model.head.weight.copy_(torch.tensor([[3.0, 4.0, 0, 0], [0.1, 0, 0, 0], [0, 0, 12.0, 0]]))
    callback = MaxNorm(["model.head.weight"], max_norm=3.0)
    callback.on_fit_start(None, task)
    callback.on_train_batch_end(None, task, None, None, 0)
    norms = task.model.head.weight.detach().norm(dim=1).tolist()
    assert norms[0] == pytest.approx(3.0, abs=1e-5) and norms[2] == pytest.approx(3.0, abs=1e-5)
    assert torch.equal(task.model.head.weight[1].detach(), torch.tensor([0.1, 0, 0, 0]))  # under the limit: untouched
    kept = torch.tensor([1.8, 2.4, 0, 0])  # the direction stays, the length is 3
    assert torch.allclose(task.model.head.weight[0].detach(), kept, atol=1e-5)
    with pytest.raises(UsageError, match="no parameter 'model.haed.weight'.*Did you mean model.head.weight"):
        MaxNorm(["model.haed.weight"]).on_fit_start(None, task)


def test_kim_clean_str_splits_clitics_and_marks_and_drops_the_rest():
    from dlkit.data.tokenizers import train_tokenizer

    text = "It's a (very) good film, isn't it? Yes!! ~ clichés we'll"
    tokenizer = train_tokenizer([text], clean="kim2014")
    assert tokenizer.encode(text).tokens == ["it", "'s", "a", "(", "very", ")", "good", "film", ",", "is", "n't",
                                             "it", "?", "yes", "!", "!", "clich", "s", "we", "'ll"]


@pytest.mark.slow
def test_kim2014_rand_cross_validates_from_one_command_with_mean_and_std(tmp_path):
    rows = [f"{label} the film was {w} and {w} again {i}" for label, words in WORDS.items() for w in words
            for i in range(15)]
    (tmp_path / "mr.all").write_text("\n".join(rows) + "\n")
    result = run_cli("train", "experiment=kim2014_rand", "data=text_files", f"data.train_file={tmp_path / 'mr.all'}",
                     "data.format=label_text", "cv.folds=3", "model.num_filters=4", "model.embedding_dim=8", *TINY,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_folders(tmp_path)
    assert len(runs) == 3
    multirun = json.loads((runs[0].parent / "multirun.json").read_text())
    assert [job["overrides"][-1] for job in multirun["jobs"]] == ["cv.fold=0", "cv.fold=1", "cv.fold=2"]
    folds = multirun["cross_validation"]
    values = [json.loads((r / "summary.json").read_text())["metrics"]["test/acc"] for r in runs]
    assert folds["folds"] == 3 and folds["metrics"]["test/acc"]["values"] == values
    assert folds["metrics"]["test/acc"]["mean"] == pytest.approx(np.mean(values))
    assert folds["metrics"]["test/acc"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert "Cross-validation over 3 folds" in result.stdout
    assert "test/acc" in (runs[0].parent / "summary.md").read_text()
    config = (runs[0] / "config.yaml").read_text()
    assert "_target_: torch.optim.Adadelta" in config and "clean: kim2014" in config and "batch_size: 50" in config
    checkpoint = torch.load(next((runs[0] / "checkpoints").glob("*.ckpt")), weights_only=True)
    assert checkpoint["state_dict"]["model.head.weight"].norm(dim=1).max() <= 3.0 + 1e-5
    assert "tags:\n- kim2014\n- cnn-rand" in config  # an experiment's own top-level keys apply


@pytest.mark.slow
def test_multi30k_transformer_recipe_trains_on_parallel_files_and_tests_with_beam_5(tmp_path):
    pairs = [(f"ein {w} hund {i}", f"a {w} dog {i}") for w in ("roter", "kleiner", "alter") for i in range(20)]
    for side, index in (("de", 0), ("en", 1)):
        (tmp_path / f"train.{side}").write_text("\n".join(p[index] for p in pairs) + "\n")
    result = run_cli("train", "experiment=multi30k_transformer", f"data.train_file={tmp_path / 'train.de'}",
                     f"data.train_target_file={tmp_path / 'train.en'}", "data.tokenizer.vocab_size=200",
                     "data.tokenizer.min_frequency=1", "data.batch_size=16", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    config = (run / "config.yaml").read_text()
    assert "test_beam_size: 5" in config and "d_model: 256" in config and "share_embeddings: true" in config
    assert "test/bleu" in json.loads((run / "summary.json").read_text())["metrics"]


def test_cross_validation_of_data_without_folds_is_refused_before_any_run(tmp_path):
    result = run_cli("train", "cv.folds=3", *TINY, cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "outputs").exists()
    assert result.stderr.strip() == ("error: cv.folds=3: data=digits has no folds; cross-validation is for text "
                                     "classification data: " + result.stderr.split("data: ", 1)[1].strip())
    assert "text_files" in result.stderr and "text_folder" in result.stderr and "Traceback" not in result.stderr
