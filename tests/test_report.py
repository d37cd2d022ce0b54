"""`dlkit report` and `runs compare --report` as a user runs them: the numbers against scikit-learn and sacreBLEU on
predictions the test makes itself, the pages opened in headless Chromium (offline), W&B read back."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import QUICK, run_cli, run_folders, summary
from services import browser, missing
from sklearn import metrics as sk

pytestmark = pytest.mark.slow

CLASSIFIER_FIGURES = ["confusion_matrix", "roc", "precision_recall", "reliability"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def train(root: Path, *overrides: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    result = run_cli("train", *overrides, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_folders(root)[-1]


def report(run: Path, *options: str) -> tuple[dict, str]:
    """Run `dlkit report RUN OPTIONS`: (metrics.json, stdout)."""
    result = run_cli("report", str(run), *options, cwd=run.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    split = options[options.index("--split") + 1] if "--split" in options else "test"
    folder = run / f"report-{split}"
    assert f"Report: {folder / 'report.html'}" in result.stdout
    return json.loads((folder / "metrics.json").read_text()), result.stdout


def probabilities_of(run: Path, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities, labels) of the split, computed here from the run's checkpoint, batch by batch."""
    from dlkit import inference

    loaded = inference.load(str(run))
    loader = loaded.datamodule.test_dataloader() if split == "test" else loaded.datamodule.val_dataloader()
    probabilities, labels = [], []
    with torch.no_grad():
        for inputs, targets in loader:
            probabilities.append(loaded.task(inputs).softmax(-1))
            labels.append(targets)
    return torch.cat(probabilities).numpy(), torch.cat(labels).numpy()


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: bins [k/bins, (k+1)/bins) of the top-1 probability (a probability of exactly 1 in a bin of its own),
    the bins' |accuracy - mean probability| weighted by their share of the rows."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    which = np.searchsorted(np.linspace(0, 1, bins + 1, dtype=np.float32), confidence, side="right") - 1
    return float(sum(abs(correct[which == b].mean() - confidence[which == b].mean()) * (which == b).mean()
                     for b in np.unique(which)))


def assert_classifier_numbers(recorded: dict, probabilities: np.ndarray, labels: np.ndarray, names: list[str],
                              mistakes: int = 16) -> None:
    """metrics.json of a classifier's report equals scikit-learn's numbers on the same predictions."""
    predicted = probabilities.argmax(1)
    classes = list(range(len(names)))
    precision, recall, f1, support = sk.precision_recall_fscore_support(labels, predicted, labels=classes,
                                                                         zero_division=0)
    metrics = recorded["metrics"]
    assert metrics["examples"] == len(labels)
    assert metrics["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted), abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx(sk.f1_score(labels, predicted, average="macro", zero_division=0),
                                                abs=1e-6)
    assert metrics["weighted_f1"] == pytest.approx(
        sk.f1_score(labels, predicted, average="weighted", zero_division=0), abs=1e-6)
    assert metrics["macro_precision"] == pytest.approx(
        sk.precision_score(labels, predicted, average="macro", zero_division=0), abs=1e-6)
    assert metrics["macro_recall"] == pytest.approx(
        sk.recall_score(labels, predicted, average="macro", zero_division=0), abs=1e-6)
    truth = probabilities[np.arange(len(labels)), labels].astype(np.float64)
    assert metrics["log_loss"] == pytest.approx(-np.log(np.maximum(truth, 1e-12)).mean(), abs=1e-5)
    assert metrics["ece"] == pytest.approx(expected_calibration_error(probabilities, labels), abs=1e-5)
    assert recorded["confusion_matrix"]["matrix"] == sk.confusion_matrix(labels, predicted, labels=classes).tolist()
    assert recorded["confusion_matrix"]["labels"] == names
    areas = []
    for c, row in enumerate(recorded["classes"]):
        assert row["class"] == names[c] and row["support"] == support[c]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[c], recall[c], f1[c]), abs=1e-6)
        positive = labels == c
        if 0 < positive.sum() < len(labels):
            assert row["auroc"] == pytest.approx(sk.roc_auc_score(positive, probabilities[:, c]), abs=1e-5)
            assert row["average_precision"] == pytest.approx(
                sk.average_precision_score(positive, probabilities[:, c]), abs=1e-5)
            areas.append(sk.roc_auc_score(positive, probabilities[:, c]))
        else:
            assert row["auroc"] is None
    assert metrics["macro_auroc"] == pytest.approx(np.mean(areas), abs=1e-5)
    # the most confident mistakes: wrong rows by falling top-1 probability
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-probabilities[wrong].max(1), kind="stable")]
    shown = recorded["mistakes"]
    assert [m["index"] for m in shown] == order[:len(shown)].tolist() and len(shown) == min(mistakes, len(wrong))
    for mistake in shown:
        assert mistake["label"] == names[labels[mistake["index"]]]
        assert mistake["predicted"] == names[predicted[mistake["index"]]]


def open_page(driver, page: Path, screenshot: Path) -> dict:
    """Load the page (offline), take a full-height screenshot; what was drawn and what the console said."""
    driver.get(page.resolve().as_uri())
    deadline = time.monotonic() + 30
    while True:  # plotly draws each figure as its script runs; wait until every figure has its SVG
        drawn = driver.execute_script(
            "return Array.from(document.querySelectorAll('.js-plotly-plot'))"
            ".map(p => p.querySelectorAll('.main-svg').length > 0 && !!p._fullLayout)")
        if all(drawn) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    widths = driver.execute_script("return Array.from(document.querySelectorAll('.js-plotly-plot'))"
                                   ".map(p => [p._fullLayout.width, p.parentElement.clientWidth])")
    images = driver.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    driver.set_window_size(1400, min(driver.execute_script("return document.body.scrollHeight") + 40, 16000))
    driver.save_screenshot(str(screenshot))
    return {"drawn": drawn, "widths": widths, "images": images, "console": driver.get_log("browser"),
            "text": driver.find_element("tag name", "body").text}


@pytest.fixture(scope="module")
def chromium():
    absent = missing(("chromium", "chromedriver"))
    if absent:
        pytest.skip(f"needs Debian's {' and '.join(absent)} (.ci/run installs them)")
    with browser() as driver:
        yield driver


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("report-digits"), "model=mlp", "data=digits", "trainer.max_epochs=3",
                 "callbacks=minimal", "logger=csv")


@pytest.fixture(scope="module")
def digits_report(digits_run) -> tuple[dict, str]:
    return report(digits_run)


def test_classifier_report_equals_scikit_learn(digits_run, digits_report):
    recorded, printed = digits_report
    folder = digits_run / "report-test"
    names = [str(i) for i in range(10)]
    probabilities, labels = probabilities_of(digits_run)
    assert_classifier_numbers(recorded, probabilities, labels, names)
    # the run's own test accuracy (the same checkpoint, the whole test split)
    assert recorded["metrics"]["accuracy"] == pytest.approx(summary(digits_run)["metrics"]["test/acc"], abs=1e-6)
    assert recorded["figures"] == CLASSIFIER_FIGURES
    for name in CLASSIFIER_FIGURES:
        png = folder / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000, name
    assert sorted(json.loads((folder / "figures.json").read_text())) == sorted(CLASSIFIER_FIGURES)
    # the terminal's per-class table: a row per class with its support
    for row in recorded["classes"]:
        assert any(line.split("│")[1:2] == [f" {row['class']:<5} "] and f" {row['support']} " in line
                   for line in printed.splitlines()), row
    assert "macro_f1" in printed


def test_classifier_page_alone_draws_every_figure_offline(digits_run, digits_report, chromium, tmp_path):
    recorded, _ = digits_report
    alone = tmp_path / "alone" / "report.html"  # the page without its folder: it must need nothing else
    alone.parent.mkdir()
    alone.write_bytes((digits_run / "report-test" / "report.html").read_bytes())
    page = open_page(chromium, alone, tmp_path / "report.png")
    assert page["console"] == []
    assert page["drawn"] == [True] * 4
    assert all(abs(width - box) < 2 for width, box in page["widths"]), page["widths"]
    assert page["images"] == [True] * len(recorded["mistakes"]) and page["images"]
    assert "The 16 most confident mistakes" in page["text"] and f"{recorded['metrics']['accuracy']:.4f}" in page["text"]
    screenshot = (tmp_path / "report.png").read_bytes()
    assert screenshot[:8] == PNG_MAGIC and len(screenshot) > 50_000


def test_text_report_shows_mistaken_texts_and_logs_figures_to_a_wandb_eval_run(tmp_path):
    from test_tracking_wandb import inspect_run_dir

    quick = [o for o in QUICK if not o.startswith("logger=")]
    run = train(tmp_path, "model=textcnn", *quick, "logger=wandb")
    before = set((run / "wandb").glob("offline-run-*"))
    # the whole validation split (the run validated on 2 batches of it)
    recorded, printed = report(run, "trainer.limit_val_batches=null", "--split", "val", "--mistakes", "5")
    assert recorded["split"] == "val" and (run / "report-val" / "report.html").is_file()
    probabilities, labels = probabilities_of(run, "val")
    assert_classifier_numbers(recorded, probabilities, labels, ["negative", "positive"], mistakes=5)
    texts = [m["input"] for m in recorded["mistakes"]]
    assert texts and all(isinstance(t, str) and t.strip() for t in texts)
    from dlkit import inference

    rows = inference.load(str(run)).datamodule.split_set("val")
    for mistake in recorded["mistakes"]:  # each row shown is the split's row of that index, with its label
        assert ["negative", "positive"][int(rows.labels[mistake["index"]])] == mistake["label"]
    assert "W&B ran offline" in printed
    # the figures and numbers in the run's W&B eval run
    [segment] = set((run / "wandb").glob("offline-run-*")) - before
    inspected = inspect_run_dir(segment)
    assert inspected["state"] == "finished" and inspected["config"]["eval.report"] == "val"
    logged = inspected["summary"]
    for name in CLASSIFIER_FIGURES:
        assert logged[f"report/val/{name}"]["_type"] == "image-file", name
    assert logged["report/val/per_class"]["_type"] == "table-file"
    assert logged["report/val/accuracy"] == pytest.approx(recorded["metrics"]["accuracy"])
    assert logged["report/val/examples"] == len(labels)


@pytest.fixture(scope="module")
def seq2seq_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("report-seq2seq"), "model=transformer", "data=synthetic_reverse", *QUICK)


def test_seq2seq_report_scores_the_run_s_test_translations(seq2seq_run):
    import sacrebleu

    run = seq2seq_run
    recorded, _ = report(run)
    metrics = recorded["metrics"]
    tested = summary(run)["metrics"]  # the same checkpoint's test decoding of the same batches
    assert metrics["bleu"] == pytest.approx(tested["test/bleu"], rel=1e-6)  # (logged as a float32)
    assert metrics["exact_match"] == pytest.approx(tested["test/exact_match"], abs=1e-6)
    assert metrics["examples"] == 128  # the run's limit_test_batches=2 batches of 64
    samples = recorded["samples"]
    assert [s["index"] for s in samples[:10]] == list(range(10))
    for sample in samples:
        assert sample["bleu"] == pytest.approx(sacrebleu.sentence_bleu(sample["output"], [sample["reference"]]).score)
        # the synthetic task reverses the source: its reference is the source backwards
        assert sample["reference"].split() == sample["source"].split()[::-1]
    # then the worst-scored sentences, lowest first
    assert [s["bleu"] for s in samples[10:]] == sorted(s["bleu"] for s in samples[10:])
    assert recorded["figures"] == ["sentence_bleu", "lengths"]


def test_seq2seq_page_draws_its_figures(seq2seq_run, chromium, tmp_path):
    recorded, _ = report(seq2seq_run)
    page = open_page(chromium, seq2seq_run / "report-test" / "report.html", tmp_path / "seq2seq.png")
    assert page["console"] == [] and page["drawn"] == [True, True]
    assert "Samples: the first sentences" in page["text"] and recorded["samples"][0]["source"] in page["text"]


def test_pretraining_report_gives_mlm_and_nsp_accuracy(tmp_path):
    run = train(tmp_path, "model=bert_pretrain", "data=synthetic_corpus", *QUICK)
    recorded, printed = report(run)
    metrics = recorded["metrics"]
    # NSP accuracy over the examples equals the run's test/nsp_acc (a mean over batches weighted by their size); the
    # masks are drawn from the same seed in both
    assert metrics["nsp_acc"] == pytest.approx(summary(run)["metrics"]["test/nsp_acc"], abs=1e-6)
    assert metrics["masked_tokens"] > 0 and 0 <= metrics["mlm_acc"] <= metrics["mlm_top5_acc"] <= 1
    assert math.isfinite(metrics["mlm_perplexity"]) and metrics["mlm_perplexity"] > 1
    nsp = recorded["nsp"]
    assert [row["class"] for row in nsp["classes"]] == ["IsNext", "NotNext"]
    assert sum(row["support"] for row in nsp["classes"]) == metrics["examples"]
    assert recorded["figures"] == [f"nsp_{name}" for name in CLASSIFIER_FIGURES]
    assert "Next-sentence prediction" in printed


def test_compare_report_puts_runs_side_by_side(digits_run, chromium, tmp_path):
    second = train(digits_run.parent.parent.parent / "second", "model=mlp", "data=digits", "trainer.max_epochs=1",
                   "optimizer.lr=0.0003", "callbacks=minimal", "logger=csv")
    report(digits_run)
    made = (digits_run / "report-test" / "metrics.json").stat().st_mtime_ns
    # a report made with overrides is not the run's report: compare makes that one again
    report(second, "trainer.limit_test_batches=1")
    result = run_cli("runs", "compare", str(digits_run), str(second), "--report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    page = digits_run.parent / "compare-report-test.html"
    assert f"Reports side by side: {page}" in result.stdout
    # the first run's report was up to date and kept; the second's was made
    assert (digits_run / "report-test" / "metrics.json").stat().st_mtime_ns == made
    assert f"Making the test report of {second}" in result.stderr
    assert json.loads((second / "report-test" / "metrics.json").read_text())["run"]["overrides"] == []
    shown = open_page(chromium, page, tmp_path / "compare.png")
    assert shown["console"] == [] and shown["drawn"] == [True] * 8
    text = shown["text"]
    accuracies = [json.loads((r / "report-test" / "metrics.json").read_text())["metrics"]["accuracy"]
                  for r in (digits_run, second)]
    for run, accuracy in zip((digits_run, second), accuracies):
        assert run.name.rsplit("-", 1)[1] in text and f"{accuracy:.4f}" in text
    assert "F1 per class" in text


def test_report_refusals_come_before_any_work(digits_run, tmp_path):
    result = run_cli("report", str(digits_run), "--split", "train", cwd=tmp_path)
    assert result.returncode == 2 and "--split train: choose test or val." in result.stderr
    assert not (digits_run / "report-train").exists() and "Traceback" not in result.stderr
    occupied = tmp_path / "mine"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    result = run_cli("report", str(digits_run), "--out", str(occupied), cwd=tmp_path)
    assert result.returncode == 2 and "holds no dlkit report" in result.stderr
    assert (occupied / "notes.txt").read_text() == "keep me" and len(list(occupied.iterdir())) == 1
    result = run_cli("report", str(digits_run), "--out", ".", cwd=tmp_path)
    assert result.returncode == 2 and "a report replaces the folder it is written to" in result.stderr
    assert (occupied / "notes.txt").is_file()
    result = run_cli("report", "nosuchrun", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    # --out a new folder: the report is written there, whole
    target = tmp_path / "elsewhere" / "r"
    result = run_cli("report", str(digits_run), "--out", str(target), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["report.html", "metrics.json", "figures.json", *(f"{n}.png" for n in CLASSIFIER_FIGURES)])
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_metrics_equal_scikit_learn_with_a_class_absent_and_with_two_classes():
    from dlkit.reporting.metrics import classification

    rng = np.random.default_rng(0)
    for classes, absent in ((5, 3), (2, None)):
        logits = rng.normal(size=(300, classes)) * 2
        labels = rng.integers(0, classes, 300)
        if absent is not None:  # class 3: no row has it, and it is never predicted
            labels[labels == absent] = 0
            logits[:, absent] = -50
        probabilities = torch.tensor(logits, dtype=torch.float32).softmax(-1)
        scores = classification(probabilities, torch.tensor(labels), [f"c{i}" for i in range(classes)])
        recorded = {"metrics": scores.metrics, "classes": scores.classes, "mistakes": scores.mistakes,
                    "confusion_matrix": {"labels": [f"c{i}" for i in range(classes)], "matrix": scores.confusion}}
        probabilities = probabilities.numpy()
        predicted = probabilities.argmax(1)
        present = sorted(set(labels) | set(predicted))
        for name in ("precision", "recall", "f1"):  # the macro means leave the absent class out, as scikit-learn
            assert scores.metrics[f"macro_{name}"] == pytest.approx(
                getattr(sk, f"{name}_score")(labels, predicted, average="macro", zero_division=0), abs=1e-6)
        if absent is not None:
            assert scores.classes[absent] == {"class": "c3", "precision": None, "recall": None, "f1": None,
                                              "support": 0, "auroc": None, "average_precision": None}
            scores.classes[absent].update(precision=0.0, recall=0.0, f1=0.0)  # (what scikit-learn gives it)
        assert len(present) == classes - (absent is not None)
        assert_classifier_numbers(recorded, probabilities, labels, recorded["confusion_matrix"]["labels"])


def test_texts_and_labels_are_shown_as_text_never_run_as_markup(tmp_path, chromium):
    hostile = "<script>document.title='owned'</script>"
    rows = ["text\tlabel"] + [f"{'good fine great' if i % 2 else 'bad dull awful'} <b>bold</b> {i % 7}\t"
                              f"{'<i>pos</i>' if i % 2 else hostile}" for i in range(240)]
    (tmp_path / "reviews.tsv").write_text("\n".join(rows) + "\n")
    run = train(tmp_path, "model=textcnn", "data=text_files", f"data.train_file={tmp_path / 'reviews.tsv'}",
                "trainer.max_epochs=1", "trainer.limit_train_batches=1", "callbacks=minimal", "logger=csv")
    recorded, _ = report(run, "trainer.limit_test_batches=null")
    assert [row["class"] for row in recorded["classes"]] == sorted(["<i>pos</i>", hostile])
    page = open_page(chromium, run / "report-test" / "report.html", tmp_path / "hostile.png")
    assert page["console"] == [] and all(page["drawn"]) and len(page["drawn"]) == 4
    assert chromium.title != "owned" and hostile in page["text"] and "<i>pos</i>" in page["text"]
    # in the tables and in the figures' legends the names are text too: plotly.js reads markup in names
    assert chromium.execute_script("return document.querySelectorAll('td i, td b').length") == 0
    legends = chromium.execute_script("return Array.from(document.querySelectorAll('#figure-roc .legendtext'))"
                                      ".map(t => t.textContent)")
    assert any(text.startswith("<i>pos</i> (") for text in legends), legends
