"""Pixel-level figures of a crack mask against the truth: the crack-segmentation protocol.

Precision and recall with a tolerance (DeepCrack, CrackForest): a predicted crack pixel
within ``tolerance`` px of a true one is right, and a true crack pixel within ``tolerance``
px of a predicted one is found; exact-match (tolerance 0) beside it. ODS: F1 of the whole
set at the one threshold that is best for it; OIS: the mean of each photo's best F1.
Counts are summed over a set's photos before the ratios are taken, as the benchmarks do.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import cv2
import numpy as np

TOLERANCE_PX = 2
ODS_THRESHOLDS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))


@dataclasses.dataclass
class PixelCounts:
    """Counts to sum over photos: predicted crack pixels near a true one, all predicted,
    true crack pixels near a predicted one, all true."""

    predicted_hit: int = 0
    predicted: int = 0
    truth_hit: int = 0
    truth: int = 0

    def __iadd__(self, other: "PixelCounts") -> "PixelCounts":
        self.predicted_hit += other.predicted_hit
        self.predicted += other.predicted
        self.truth_hit += other.truth_hit
        self.truth += other.truth
        return self

    @property
    def precision(self) -> float:
        return self.predicted_hit / self.predicted if self.predicted else float(self.truth == 0)

    @property
    def recall(self) -> float:
        return self.truth_hit / self.truth if self.truth else float(self.predicted == 0)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def figures(self) -> dict[str, float]:
        return {"precision": round(self.precision, 4), "recall": round(self.recall, 4), "f1": round(self.f1, 4)}


def _near(mask: np.ndarray, tolerance: int) -> np.ndarray:
    if tolerance == 0:
        return mask
    size = 2 * tolerance + 1
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.dilate(mask.astype(np.uint8), disk).astype(bool)


def pixel_counts(predicted: np.ndarray, truth: np.ndarray, tolerance: int = TOLERANCE_PX,
                 counted: np.ndarray | None = None) -> PixelCounts:
    """Counts for one photo; ``counted`` False marks pixels to ignore (they count neither way)."""
    predicted, truth = predicted.astype(bool), truth.astype(bool)
    if counted is not None:
        predicted, truth = predicted & counted, truth & counted
    return PixelCounts(int(np.sum(predicted & _near(truth, tolerance))), int(predicted.sum()),
                       int(np.sum(truth & _near(predicted, tolerance))), int(truth.sum()))


@dataclasses.dataclass
class PixelEvaluation:
    """A set's pixel figures at a threshold, with ODS and OIS over ODS_THRESHOLDS."""

    at_threshold: dict[str, float]
    exact: dict[str, float]
    ods: dict[str, float]
    ois_f1: float
    photos: int

    def to_dict(self) -> dict:
        return {f"tolerance_{TOLERANCE_PX}px": self.at_threshold, "exact": self.exact, "ods": self.ods,
                "ois_f1": round(self.ois_f1, 4), "photos": self.photos}


class PixelScorer:
    """Adds photos one by one (probability map and truth), keeps only counts: a set of
    thousands of photos is graded in the memory of one."""

    def __init__(self, threshold: float = 0.5, tolerance: int = TOLERANCE_PX):
        self.threshold = threshold
        self.tolerance = tolerance
        self.main = PixelCounts()
        self.exact = PixelCounts()
        self.per_threshold = [PixelCounts() for _ in ODS_THRESHOLDS]
        self.best_per_photo: list[float] = []

    def add(self, probability: np.ndarray, truth: np.ndarray, counted: np.ndarray | None = None) -> PixelCounts:
        said = probability >= self.threshold
        photo = pixel_counts(said, truth, self.tolerance, counted)
        self.main += photo
        self.exact += pixel_counts(said, truth, 0, counted)
        best = 0.0
        for counts, threshold in zip(self.per_threshold, ODS_THRESHOLDS):
            at = pixel_counts(probability >= threshold, truth, self.tolerance, counted)
            counts += at
            best = max(best, at.f1)
        self.best_per_photo.append(best)
        return photo

    def result(self) -> PixelEvaluation:
        best = max(range(len(ODS_THRESHOLDS)), key=lambda i: self.per_threshold[i].f1)
        ods = {**self.per_threshold[best].figures(), "threshold": float(ODS_THRESHOLDS[best])}
        ois = float(np.mean(self.best_per_photo)) if self.best_per_photo else 0.0
        return PixelEvaluation(self.main.figures(), self.exact.figures(), ods, ois, len(self.best_per_photo))


def pixel_f1(pairs: Iterable[tuple[np.ndarray, np.ndarray]], tolerance: int = TOLERANCE_PX) -> float:
    """F1 over (predicted mask, true mask) pairs, counts summed."""
    total = PixelCounts()
    for predicted, truth in pairs:
        total += pixel_counts(predicted, truth, tolerance)
    return total.f1
