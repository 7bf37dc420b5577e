"""Metrics: of a classifier from labels and probabilities, and of tiles graded against masks."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .masks import CRACK, UNSURE

def classification_metrics(
    labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str], positive_index: int
) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 and ROC-AUC for the positive (crack) class, the
    cross-entropy loss and the confusion matrix (rows: actual, columns: predicted)."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = len(class_names)
    if len(labels) == 0:
        return {"count": 0}
    predicted = probabilities.argmax(axis=1)
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    is_positive = labels == positive_index
    said_positive = predicted == positive_index
    true_pos = int(np.sum(is_positive & said_positive))
    precision = _ratio(true_pos, int(said_positive.sum()))
    recall = _ratio(true_pos, int(is_positive.sum()))
    f1 = _ratio(2 * precision * recall, precision + recall) if precision is not None and recall is not None else None
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0)
    return {
        "count": int(len(labels)),
        "counts": {name: int(np.sum(labels == i)) for i, name in enumerate(class_names)},
        "accuracy": float(np.mean(predicted == labels)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(is_positive, probabilities[:, positive_index]),
        "loss": float(-np.mean(np.log(picked))),
        "errors": int(np.sum(predicted != labels)),
        "confusion_matrix": {"labels": list(class_names), "matrix": matrix.tolist()},
    }


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties averaged."""
    is_positive = np.asarray(is_positive, dtype=bool)
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over runs of equal scores, so ties count half.
    _, starts, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(starts, counts):
        ranks[order[start : start + count]] = start + (count + 1) / 2.0
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def format_metrics(name: str, metrics: dict[str, Any]) -> str:
    if not metrics.get("count"):
        return f"{name}: no images"

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    auc = metrics["roc_auc"]
    return (
        f"{name}: {metrics['count']} images, accuracy {pct(metrics['accuracy'])} "
        f"({metrics['errors']} wrong), precision {pct(metrics['precision'])}, recall {pct(metrics['recall'])}, "
        f"F1 {pct(metrics['f1'])}, ROC-AUC {'n/a' if auc is None else f'{auc:.5f}'}, loss {metrics['loss']:.4f}"
    )


def tile_metrics(truth: np.ndarray, said_crack: np.ndarray) -> dict[str, Any]:
    """Tile counts and precision, recall, F1, accuracy over the tiles whose truth is sure."""
    sure = truth != UNSURE
    crack, said = truth[sure] == CRACK, said_crack[sure]
    tp, fp = int(np.sum(crack & said)), int(np.sum(~crack & said))
    fn, tn = int(np.sum(crack & ~said)), int(np.sum(~crack & ~said))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {"tiles": int(sure.sum()), "unsure_tiles": int((~sure).sum()), "crack_tiles": tp + fn,
            "true_positives": tp, "false_positives": fp, "false_negatives": fn, "true_negatives": tn,
            "precision": precision, "recall": recall, "f1": f1, "accuracy": _ratio(tp + tn, tp + fp + fn + tn)}


def format_tile_metrics(metrics: dict[str, Any]) -> str:
    def figure(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return (f"tiles of {metrics['photos']} photos ({metrics['tile']} px, stride {metrics['stride']}): {metrics['tiles']} "
            f"graded, {metrics['crack_tiles']} with cracks, {metrics['unsure_tiles']} left out (under "
            f"{100 * metrics['crack_min_fraction']:g}% crack); precision {figure(metrics['precision'])}, recall "
            f"{figure(metrics['recall'])}, F1 {figure(metrics['f1'])}, accuracy {figure(metrics['accuracy'])}")
