"""The numbers of a report, from a split's predictions: torchmetrics for classifiers, sacreBLEU for translations
(the library the task's own test/bleu comes from, so the two agree)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_average_precision,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_precision_recall_curve,
    multiclass_recall,
    multiclass_roc,
)

# calibration bins of the expected calibration error and the reliability diagram
BINS = 15
# the most points a drawn curve keeps (the areas under the curves are computed on every point)
CURVE_POINTS = 400
# NSP's classes: label 0, the second sentence follows the first; 1, it was drawn at random
NSP_CLASSES = ["IsNext", "NotNext"]


@dataclass
class Classification:
    """A classifier's report: headline metrics, one row per class, and what its figures draw."""

    metrics: dict[str, float | int | None]
    classes: list[dict[str, Any]]  # class, precision, recall, f1, support, auroc, average_precision
    confusion: list[list[int]]  # rows: the true class; columns: the predicted one
    calibration: list[dict[str, float]]  # per bin: low, high, count, confidence, accuracy
    mistakes: list[dict[str, Any]]  # the most confident wrong predictions: index, label, predicted, probability
    roc: list[tuple[list[float], list[float]]] = field(repr=False)  # per class (false, true positive rate)
    pr: list[tuple[list[float], list[float]]] = field(repr=False)  # per class (recall, precision)


@dataclass
class Translation:
    """A seq2seq report: corpus scores, per-sentence BLEU and lengths, samples with their references."""

    metrics: dict[str, float | int]
    samples: list[dict[str, Any]]  # position, output, reference, bleu: the first sentences, then the worst
    sentence_bleu: list[float] = field(repr=False)
    lengths: list[tuple[int, int]] = field(repr=False)  # (reference words, output words) per sentence


@dataclass
class Pretraining:
    """A BERT pre-training report: masked-LM metrics and the next-sentence classifier's report."""

    metrics: dict[str, float | int | None]
    nsp: Classification


def classification(probabilities: torch.Tensor, labels: torch.Tensor, names: list[str],
                   mistakes: int = 16) -> Classification:
    """Scores of class probabilities [N, C] against labels [N]: per-class precision, recall and F1 of the top-1
    label, one-vs-rest ROC and precision-recall curves with their areas, the confusion matrix, the expected
    calibration error over BINS equal-width bins of the top-1 probability, and the most confident mistakes."""
    count, classes = probabilities.shape
    options = {"num_classes": classes}
    support = torch.bincount(labels, minlength=classes)
    per_class = {name: function(probabilities, labels, average=None, **options).tolist() for name, function in
                 (("precision", multiclass_precision), ("recall", multiclass_recall), ("f1", multiclass_f1_score))}
    predicted_count = torch.bincount(probabilities.argmax(dim=1), minlength=classes)
    # a class no row has and none is predicted as has no precision, recall or F1 (the macro means leave it out, as
    # torchmetrics' and scikit-learn's do); one all or none of the rows have has no one-vs-rest curve
    seen = [int(s) > 0 or int(p) > 0 for s, p in zip(support.tolist(), predicted_count.tolist())]
    defined = [0 < int(s) < count for s in support.tolist()]
    auroc = multiclass_auroc(probabilities, labels, average=None, thresholds=None, **options).tolist()
    precision_at = multiclass_average_precision(probabilities, labels, average=None, thresholds=None, **options)
    rows = [{"class": name, **{key: per_class[key][c] if seen[c] else None for key in ("precision", "recall", "f1")},
             "support": int(support[c]), "auroc": auroc[c] if defined[c] else None,
             "average_precision": float(precision_at[c]) if defined[c] else None} for c, name in enumerate(names)]
    fpr, tpr, _ = multiclass_roc(probabilities, labels, thresholds=None, **options)
    precision, recall, _ = multiclass_precision_recall_curve(probabilities, labels, thresholds=None, **options)
    confidence, predicted = probabilities.max(dim=1)
    log_loss = -probabilities[torch.arange(count), labels].clamp(min=1e-12).log().mean()
    areas = [r["auroc"] for r in rows if r["auroc"] is not None]
    precisions = [r["average_precision"] for r in rows if r["average_precision"] is not None]
    metrics = {
        "accuracy": float(multiclass_accuracy(probabilities, labels, average="micro", **options)),
        "macro_precision": float(multiclass_precision(probabilities, labels, average="macro", **options)),
        "macro_recall": float(multiclass_recall(probabilities, labels, average="macro", **options)),
        "macro_f1": float(multiclass_f1_score(probabilities, labels, average="macro", **options)),
        "weighted_f1": float(multiclass_f1_score(probabilities, labels, average="weighted", **options)),
        "macro_auroc": float(np.mean(areas)) if areas else None,
        "macro_average_precision": float(np.mean(precisions)) if precisions else None,
        "ece": float(multiclass_calibration_error(probabilities, labels, n_bins=BINS, norm="l1", **options)),
        "log_loss": float(log_loss), "examples": count}
    wrong = torch.nonzero(predicted != labels).flatten()
    worst = wrong[confidence[wrong].argsort(descending=True, stable=True)][:mistakes].tolist()
    return Classification(
        metrics=metrics, classes=rows,
        confusion=multiclass_confusion_matrix(probabilities, labels, **options).tolist(),
        calibration=calibration_bins(confidence, predicted == labels),
        mistakes=[{"index": i, "label": names[int(labels[i])], "predicted": names[int(predicted[i])],
                   "probability": float(confidence[i]), "probability_of_label": float(probabilities[i, labels[i]])}
                  for i in worst],
        roc=[(_thin(f), _thin(t)) for f, t in zip(fpr, tpr)],
        pr=[(_thin(r), _thin(p)) for r, p in zip(recall, precision)])


def calibration_bins(confidence: torch.Tensor, correct: torch.Tensor) -> list[dict[str, float]]:
    """The non-empty bins of the reliability diagram, binned as torchmetrics' calibration error bins them: BINS
    equal-width bins [k / BINS, (k + 1) / BINS) of the top-1 probability, a probability of exactly 1 in a bin of its
    own; each with its rows' count, mean probability and accuracy."""
    bounds = torch.linspace(0, 1, BINS + 1, dtype=confidence.dtype)
    which = torch.bucketize(confidence, bounds, right=True) - 1
    bins = []
    for number in which.unique().tolist():
        members = which == number
        low = float(bounds[number])
        bins.append({"low": low, "high": float(bounds[number + 1]) if number < BINS else low,
                     "count": int(members.sum()), "confidence": float(confidence[members].mean()),
                     "accuracy": float(correct[members].float().mean())})
    return bins


def _thin(curve: torch.Tensor) -> list[float]:
    """A curve's values, at most CURVE_POINTS of them evenly along it (its first and last point kept)."""
    values = curve.tolist()
    if len(values) <= CURVE_POINTS:
        return values
    keep = np.unique(np.linspace(0, len(values) - 1, CURVE_POINTS).round().astype(int))
    return [values[i] for i in keep]


def translation(outputs: list[str], references: list[str], samples: int = 10) -> Translation:
    """Corpus BLEU and chrF (sacreBLEU, default settings), exact match, the length ratio (output words over reference
    words, as BLEU's brevity penalty counts them), per-sentence BLEU; the first `samples` sentences and the
    `samples` worst-scored ones."""
    import sacrebleu

    bleu = sacrebleu.corpus_bleu(outputs, [references])
    chrf = sacrebleu.corpus_chrf(outputs, [references])
    scores = [sacrebleu.sentence_bleu(o, [r]).score for o, r in zip(outputs, references)]
    metrics = {"bleu": bleu.score, "chrf": chrf.score,
               "exact_match": sum(o == r for o, r in zip(outputs, references)) / max(1, len(outputs)),
               "length_ratio": bleu.sys_len / max(1, bleu.ref_len), "examples": len(outputs)}
    worst = sorted(range(len(outputs)), key=lambda i: (scores[i], i))[:samples]
    shown = list(dict.fromkeys([*range(min(samples, len(outputs))), *worst]))
    return Translation(
        metrics=metrics,
        samples=[{"position": i, "output": outputs[i], "reference": references[i], "bleu": scores[i]} for i in shown],
        sentence_bleu=scores, lengths=[(len(r.split()), len(o.split())) for o, r in zip(outputs, references)])


def pretraining(outputs: dict[str, torch.Tensor], mistakes: int = 16) -> Pretraining:
    """Masked-LM accuracy (top-1 and top-5 over the masked tokens) and perplexity (exp of their mean loss); the
    next-sentence classifier scored as any classifier."""
    top, labels = outputs["mlm_top"], outputs["mlm_labels"]
    masked = len(labels)
    nsp = classification(outputs["nsp_probabilities"], outputs["nsp_labels"], NSP_CLASSES, mistakes)
    metrics = {"mlm_acc": float((top[:, 0] == labels).float().mean()) if masked else None,
               "mlm_top5_acc": float((top == labels[:, None]).any(dim=1).float().mean()) if masked else None,
               "mlm_perplexity": float(outputs["mlm_loss"].mean().exp()) if masked else None,
               "masked_tokens": masked, "nsp_acc": nsp.metrics["accuracy"], "nsp_auroc": nsp.metrics["macro_auroc"],
               "examples": len(outputs["nsp_labels"])}
    return Pretraining(metrics=metrics, nsp=nsp)
