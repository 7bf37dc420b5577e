"""Evaluating a model: on a labelled folder of patches, and on whole photos against crack masks."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from . import plots, runs
from .datasets import Skipped, find_dataset_for_model, iter_labelled_batches, write_skipped_csv
from .errors import CrackscanError
from .files import atomic_open, atomic_path, file_sha256, refuse_overwrite, write_text
from .images import ImageReadError
from .metrics import classification_metrics, tile_metrics
from .model.registry import resolve
from .model.tasks import task_of
from .photo.overlay import OVERLAY_JPEG_QUALITY, OVERLAY_MAX_SIDE, draw_outcome_map
from .photo.result import PhotoResult
from .photo.scan import scan
from .photo.tiling import owned_boxes, scan_geometry
from .progress import Progress, as_progress
from .runtime.predictor import Predictor, as_predictor
from .segment.pixels import PixelScorer
from .masks import (CLEAR, CRACK, CRACK_MIN_FRACTION, UNSURE, ignore_value_of, pair_with_masks, read_mask_parts,
                         tile_truth)


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
    progress: Progress | bool = False,
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
    predictor = as_predictor(model)
    run_dir = resolve(model).run if not isinstance(model, Predictor) else None
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
    bar = as_progress(progress).bar(total=len(samples), desc="evaluating", unit="img")
    for batch in iter_labelled_batches(samples, info.input_size, predictor.batch_size, dataset.root):
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
    metrics["model"] = str(predictor.path)
    metrics["data"] = str(Path(data).resolve())
    metrics["split"] = split
    if split_hashes is not None and split == "all":
        metrics["in_training_split"] = in_training
    if out_dir is not None:
        write_skipped_csv(out_dir / runs.SKIPPED_FILE, [Skipped(p, r) for p, r in skipped])
        plots.confusion_matrix(metrics["confusion_matrix"], out_dir / runs.CONFUSION_MATRIX_PLOT)
        write_text(out_dir / runs.METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return Evaluation(metrics, skipped, in_training, out_dir)


EVALUATION_FILES = (runs.METRICS_FILE, runs.CONFUSION_MATRIX_PLOT, runs.SKIPPED_FILE)


def evaluation_folder(out: Path, data: str | Path, split: str) -> Path:
    """Where an evaluation's files go: ``out``, or below it when ``out`` is a run folder."""
    if out.exists() and not out.is_dir():
        raise CrackscanError(f"--out {out} is a file, not a folder")
    if runs.is_run(out):
        return out / runs.EVALUATIONS_FOLDER / f"{Path(data).resolve().name}-{split}"
    return out


PHOTO_EVALUATION_FILES = (runs.METRICS_FILE, "photos.csv", runs.SKIPPED_FILE)


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
    progress: Progress | bool = False,
    ignore_value: int | None = None,
) -> PhotoEvaluation:
    """Tile precision, recall, F1 and accuracy of a model on whole photos with crack masks.

    Each photo is scanned as ``scan`` would, and each tile graded against its mask
    (masks.tile_truth: crack, clear, or left out; pixels of ``ignore_value``, or of the value
    the masks folder's masks.json names, count neither way). ``out`` receives metrics.json,
    photos.csv (a row per photo), skipped.csv and overlays/NAME.png, where true positives,
    false positives and false negatives have their own colours. A photo without a readable
    mask of its size is reported and skipped.
    """
    predictor = as_predictor(model)
    pairs, skipped = pair_with_masks(photos, masks)
    ignore_value = ignore_value_of(masks, ignore_value)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise CrackscanError(f"--out {out_dir} is a file, not a folder")
        for name in PHOTO_EVALUATION_FILES:
            refuse_overwrite(out_dir / name, force)
    rows, truths, saids = [], [], []
    pixels = PixelScorer(threshold)
    bar = as_progress(progress).bar(total=len(pairs), desc="evaluating photos", unit="photo")
    for pair in pairs:
        bar.update(1)
        try:
            result = scan(predictor, pair.photo, tile, stride, threshold, keep_image=out_dir is not None)
            crack_pixels, ignored = read_mask_parts(pair.mask, result.width, result.height, ignore_value)
        except ImageReadError as error:
            skipped.append((str(pair.photo), error.reason))
            continue
        truth = tile_truth(crack_pixels, [(t.x, t.y, t.width, t.height) for t in result.tiles], ignored)
        said = np.array([t.crack_probability >= threshold for t in result.tiles], bool)
        truths.append(truth)
        saids.append(said)
        photo_pixels = pixels.add(pixel_probability(result), crack_pixels, None if ignored is None else ~ignored)
        rows.append({"photo": str(pair.photo), "mask": str(pair.mask), **tile_metrics(truth, said),
                     "pixel_f1_2px": round(photo_pixels.f1, 4), "pixel_precision_2px": round(photo_pixels.precision, 4),
                     "pixel_recall_2px": round(photo_pixels.recall, 4), "true_crack_pixels": photo_pixels.truth,
                     "said_crack_pixels": photo_pixels.predicted})
        if out_dir is not None:
            with atomic_path(out_dir / "overlays" / pair.relative.with_suffix(".jpg")) as temporary:
                outcome_overlay(result, truth, said).save(temporary, quality=OVERLAY_JPEG_QUALITY)
    bar.close()
    if not rows:
        raise CrackscanError(f"none of the {len(pairs)} photos with masks could be evaluated")
    tile, stride = scan_geometry(predictor.info, tile, stride)
    metrics = {**tile_metrics(np.concatenate(truths), np.concatenate(saids)), "photos": len(rows),
               "skipped": len(skipped), "tile": tile, "stride": stride, "threshold": threshold,
               "crack_min_fraction": CRACK_MIN_FRACTION, "ignored_mask_value": ignore_value,
               "model": str(predictor.path), "task": predictor.info.task,
               "model_sha256": file_sha256(predictor.path) if predictor.path else None,
               "pixel": {**pixels.result().to_dict(), "from": "the model's crack mask" if task_of(predictor.info).per_pixel
                         else "the tile map (each pixel has its tile's crack probability)"},
               "photos_folder": str(photos), "masks_folder": str(masks),
               "worst_photos": worst_photos(rows)}
    if out_dir is not None:
        write_skipped_csv(out_dir / runs.SKIPPED_FILE, [Skipped(p, r) for p, r in skipped])
        with atomic_open(out_dir / PHOTO_EVALUATION_FILES[1]) as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        write_text(out_dir / runs.METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return PhotoEvaluation(metrics, rows, skipped, out_dir)



WORST_PHOTOS = 5


def worst_photos(rows: list[dict[str, Any]], count: int = WORST_PHOTOS) -> list[dict[str, Any]]:
    """The photos a model does worst on, by pixel F1 within 2 px, lowest first: where to look
    (their overlays) to see how it fails. A photo with no crack in its mask and none said
    scores 1; one with no crack in its mask and some said scores 0 (a false alarm)."""
    ranked = sorted(rows, key=lambda row: (row["pixel_f1_2px"], -row["said_crack_pixels"], row["photo"]))
    return [{"photo": row["photo"], "pixel_f1_2px": row["pixel_f1_2px"],
             "pixel_precision_2px": row["pixel_precision_2px"], "pixel_recall_2px": row["pixel_recall_2px"],
             "true_crack_pixels": row["true_crack_pixels"], "said_crack_pixels": row["said_crack_pixels"]}
            for row in ranked[:count]]


def pixel_probability(result: PhotoResult) -> np.ndarray:
    """Each pixel's crack probability: a segmenter's mask, or for a classifier the tile map
    (each pixel has the probability of the tile that owns it), so both kinds are graded alike."""
    if result.mask is not None:
        return result.mask.astype(np.float32) / 255
    probability = np.zeros((result.height, result.width), np.float32)
    for (x, y, w, h), tile in zip(owned_boxes([t.box for t in result.tiles]), result.tiles):
        probability[y:y + h, x:x + w] = tile.crack_probability
    return probability


def outcome_overlay(result: PhotoResult, truth: np.ndarray, said: np.ndarray, max_side: int = OVERLAY_MAX_SIDE
                    ) -> Image.Image:
    """The photo with each graded tile outlined in its outcome's colour; a legend below."""
    outcomes = []
    for sure, crack, positive in zip(truth, truth == CRACK, said):
        if sure == UNSURE or (sure == CLEAR and not positive):
            outcomes.append(None)
        else:
            outcomes.append("true positive" if crack and positive else "false positive" if positive
                            else "false negative")
    return draw_outcome_map(result.pixels, result.width, result.height, [t.box for t in result.tiles], outcomes,
                            max_side)
