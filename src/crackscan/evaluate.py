"""Metrics from labels and probabilities, and evaluating a model on a labelled folder."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from . import plots, runs
from .data import ImageReadError, Skipped, find_dataset_for_model, iter_labelled_batches, write_skipped_csv
from .errors import CrackscanError
from .files import atomic_open, atomic_path, refuse_overwrite, write_text
from .masks import CLEAR, CRACK, CRACK_MIN_FRACTION, UNSURE, pair_with_masks, read_mask, tile_truth
from .predict import Predictor, load
from .progress import progress_bar
from .scan import OVERLAY_JPEG_QUALITY, OVERLAY_MAX_SIDE, ScanResult, photo_at, scan, scan_geometry


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


@dataclasses.dataclass
class Evaluation:
    metrics: dict[str, Any]
    skipped: list[tuple[str, str]]
    in_training_split: int
    out: Path | None = None


def evaluate(
    model: Any,
    data: str | Path,
    split: str = "all",
    out: str | Path | None = None,
    progress: bool = False,
    force: bool = False,
) -> Evaluation:
    """Evaluates a model (path, run folder or Predictor) on a labelled folder.

    With a run folder and ``split`` train/val/test, only the images of that part of the
    run's split are used, matched by content hash, so a copy of the data anywhere works.
    With ``split="all"``, images the model was trained on are counted and reported.
    ``out`` receives metrics.json, confusion_matrix.png and skipped.csv; a run folder as
    ``out`` gets them in evaluations/DATA-SPLIT/, beside the run's own files, not over them.
    Existing files are replaced only with ``force``.
    """
    predictor = model if isinstance(model, Predictor) else load(model)
    run_dir = runs.folder_of(model) if not isinstance(model, Predictor) else None
    split_hashes = runs.split_hashes(run_dir) if run_dir else None
    if split != "all" and split_hashes is None:
        raise CrackscanError(f"--split {split} needs a run folder with split.csv, not a bare model file")
    if split not in ("all", "train", "val", "test"):
        raise CrackscanError(f"split must be all, train, val or test, got {split!r}")

    out_dir = evaluation_folder(Path(out), data, split) if out is not None else None
    if out_dir is not None:
        for name in EVALUATION_FILES:
            refuse_overwrite(out_dir / name, force)
    info = predictor.info
    dataset, samples = find_dataset_for_model(data, info.class_names, info.positive_class)

    labels: list[int] = []
    probabilities: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    in_training = 0
    bar = progress_bar(total=len(samples), desc="evaluating", unit="img", enabled=progress)
    batch_size = getattr(predictor.runner, "batch_size", 32)
    for batch in iter_labelled_batches(samples, info.input_size, batch_size, dataset.root):
        skipped.extend((s.path, s.reason) for s in batch.skipped)
        keep = []
        for row, facts in enumerate(batch.facts):
            if split_hashes is not None:
                if split == "all":
                    in_training += facts.sha256 in split_hashes["train"]
                elif facts.sha256 not in split_hashes[split]:
                    continue
            keep.append(row)
        if keep:
            labels.extend(batch.labels[keep].tolist())
            probabilities.append(predictor.probabilities(batch.images[keep]))
        bar.update(len(batch.indices) + len(batch.skipped))
    bar.close()
    if not labels:
        raise CrackscanError(f"no readable images of the {split} split in {data}")
    metrics = classification_metrics(labels, np.concatenate(probabilities), info.class_names, info.positive_index)
    metrics["skipped"] = len(skipped)
    metrics["model"] = str(runs.model_path(model)) if not isinstance(model, Predictor) else str(predictor.path)
    metrics["data"] = str(Path(data).resolve())
    metrics["split"] = split
    if split_hashes is not None and split == "all":
        metrics["in_training_split"] = in_training
    if out_dir is not None:
        write_skipped_csv(out_dir / "skipped.csv", [Skipped(p, r) for p, r in skipped])
        plots.confusion_matrix(metrics["confusion_matrix"], out_dir / "confusion_matrix.png")
        write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return Evaluation(metrics, skipped, in_training, out_dir)


EVALUATION_FILES = ("metrics.json", "confusion_matrix.png", "skipped.csv")


def evaluation_folder(out: Path, data: str | Path, split: str) -> Path:
    """Where an evaluation's files go: ``out``, or below it when ``out`` is a run folder."""
    if out.exists() and not out.is_dir():
        raise CrackscanError(f"--out {out} is a file, not a folder")
    if runs.is_run(out):
        return out / "evaluations" / f"{Path(data).resolve().name}-{split}"
    return out


# Overlay colours of tile outcomes against the masks: strong, and apart for colour-blind eyes.
OUTCOME_RGB = {"true positive": (0, 200, 80), "false positive": (255, 140, 0), "false negative": (220, 0, 200)}
PHOTO_EVALUATION_FILES = ("metrics.json", "photos.csv", "skipped.csv")


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


@dataclasses.dataclass
class PhotoEvaluation:
    metrics: dict[str, Any]
    photos: list[dict[str, Any]]
    skipped: list[tuple[str, str]]
    out: Path | None = None


def evaluate_photos(
    model: Any,
    photos: str | Path | Sequence[str | Path],
    masks: str | Path,
    tile: int | None = None,
    stride: int | None = None,
    threshold: float = 0.5,
    out: str | Path | None = None,
    force: bool = False,
    progress: bool = False,
) -> PhotoEvaluation:
    """Tile precision, recall, F1 and accuracy of a model on whole photos with crack masks.

    Each photo is scanned as ``scan`` would, and each tile graded against the mask of the
    same name (masks.tile_truth: crack, clear, or left out). ``out`` receives metrics.json,
    photos.csv (a row per photo), skipped.csv and overlays/NAME.png, where true positives,
    false positives and false negatives have their own colours. A photo without a readable
    mask of its size is reported and skipped.
    """
    predictor = model if isinstance(model, Predictor) else load(model)
    pairs, skipped = pair_with_masks(photos, masks)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise CrackscanError(f"--out {out_dir} is a file, not a folder")
        for name in PHOTO_EVALUATION_FILES:
            refuse_overwrite(out_dir / name, force)
    rows, truths, saids = [], [], []
    bar = progress_bar(total=len(pairs), desc="evaluating photos", unit="photo", enabled=progress)
    for pair in pairs:
        bar.update(1)
        try:
            result = scan(predictor, pair.photo, tile, stride, threshold, keep_image=out_dir is not None)
            crack_pixels = read_mask(pair.mask, result.width, result.height)
        except ImageReadError as error:
            skipped.append((str(pair.photo), error.reason))
            continue
        truth = tile_truth(crack_pixels, [(t.x, t.y, t.width, t.height) for t in result.tiles])
        said = np.array([t.crack_probability >= threshold for t in result.tiles], bool)
        truths.append(truth)
        saids.append(said)
        rows.append({"photo": str(pair.photo), "mask": str(pair.mask), **tile_metrics(truth, said)})
        if out_dir is not None:
            with atomic_path(out_dir / "overlays" / f"{pair.photo.stem}.jpg") as temporary:
                outcome_overlay(result, truth, said).save(temporary, quality=OVERLAY_JPEG_QUALITY)
    bar.close()
    if not rows:
        raise CrackscanError(f"none of the {len(pairs)} photos with masks could be evaluated")
    tile, stride = scan_geometry(predictor, tile, stride)
    metrics = {**tile_metrics(np.concatenate(truths), np.concatenate(saids)), "photos": len(rows),
               "skipped": len(skipped), "tile": tile, "stride": stride, "threshold": threshold,
               "crack_min_fraction": CRACK_MIN_FRACTION, "model": str(predictor.path),
               "photos_folder": str(photos), "masks_folder": str(masks)}
    if out_dir is not None:
        write_skipped_csv(out_dir / "skipped.csv", [Skipped(p, r) for p, r in skipped])
        with atomic_open(out_dir / "photos.csv") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return PhotoEvaluation(metrics, rows, skipped, out_dir)


def outcome_overlay(result: ScanResult, truth: np.ndarray, said: np.ndarray, max_side: int = OVERLAY_MAX_SIDE
                    ) -> Image.Image:
    """The photo with each graded tile outlined in its outcome's colour; a legend below."""
    scale = min(1.0, max_side / max(result.width, result.height))
    photo = Image.fromarray(photo_at(result.pixels, result.width, result.height, scale))
    draw = ImageDraw.Draw(photo)
    for t, sure, crack, positive in zip(result.tiles, truth, truth == CRACK, said):
        if sure == UNSURE or (sure == CLEAR and not positive):
            continue
        outcome = "true positive" if crack and positive else "false positive" if positive else "false negative"
        box = [round(t.x * scale) + 1, round(t.y * scale) + 1, round((t.x + t.width) * scale) - 2,
               round((t.y + t.height) * scale) - 2]
        draw.rectangle(box, outline=OUTCOME_RGB[outcome], width=max(2, round(3 * scale)))
    legend = Image.new("RGB", (photo.width, 22), (255, 255, 255))
    pen = ImageDraw.Draw(legend)
    x = 6
    for outcome, colour in OUTCOME_RGB.items():
        pen.rectangle([x, 5, x + 12, 17], outline=colour, width=3)
        pen.text((x + 16, 5), outcome, fill=(0, 0, 0))
        x += 24 + int(pen.textlength(outcome))
    framed = Image.new("RGB", (photo.width, photo.height + legend.height))
    framed.paste(photo, (0, 0))
    framed.paste(legend, (0, photo.height))
    return framed
