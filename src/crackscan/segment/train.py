"""`crackscan train DATA... --task segment`: a pixel crack segmenter from mask sets, on a CPU.

The backbone is frozen, so each training window goes through it once: its five maps
(model.segmenter.TAPS) are cached in float16, and only the light decoder is trained on the
cache, with horizontal and vertical flips of the cached maps (the backbone is close enough to
flip-equivariant that flipping its maps stands in for flipping the photo, for free). The loss
is cross-entropy plus soft Dice: a crack is 1-5% of a window's pixels, and cross-entropy
alone learns to say "background" everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import _tf, runs
from ..errors import CrackscanError
from ..files import write_text
from ..model.info import ModelInfo
from ..model.keras_archive import save_keras_model
from ..model.segmenter import TAPS, backbone_taps, build_decoder, end_to_end
from ..progress import Progress, as_progress
from ..settings import SEGMENT_TRAIN, TrainConfig
from ..version import __version__
from .masksets import MaskedImage, find_mask_sets, find_negatives, training_windows
from .pixels import PixelScorer

SEGMENT_CLASSES = ("background", "crack")
# The tile grid a segmenter's scan reports on: Özgenel's patch scale, as the classifiers'.
SEGMENT_PATCH_SIZE = 227
NEGATIVE_SPLIT = (0.5, 0.1, 0.4)


@dataclasses.dataclass
class SegmentRun:
    path: Path
    metrics: dict[str, Any]
    config: TrainConfig


def train_segmenter(data: Sequence[str | Path], out: str | Path, config: TrainConfig, force: bool = False,
                    progress: Progress | bool = False, windows_per_photo: int = SEGMENT_TRAIN["windows_per_photo"],
                    empty_share: float = SEGMENT_TRAIN["empty_share"], negatives: Sequence[str | Path] = (),
                    negatives_per_source: int | None = None) -> SegmentRun:
    """Trains a segmenter on the mask sets ``data`` (folders of images/ and masks/) into the
    run folder ``out``: model.keras (task segment), metrics.json, history, plots. ``negatives``
    are photos (files, folders, patterns) known to hold no crack: all-clear masks, split by
    content like the sets (at most ``negatives_per_source`` of each source per split)."""
    report = as_progress(progress)
    started = time.perf_counter()
    items, skipped = find_mask_sets(data, config.split, config.seed)
    # Negatives are split half for training: a false alarm is measured on photos never trained on,
    # and small folders of look-alikes would otherwise hold out one or two.
    items += find_negatives(negatives, NEGATIVE_SPLIT, config.seed, negatives_per_source)
    parts = {part: [item for item in items if item.split == part] for part in ("train", "val", "test")}
    if not parts["train"] or not parts["val"]:
        raise CrackscanError(f"{len(items)} photos with masks are too few to train and validate on: "
                             "use at least 10 (split by photo, train:val:test " f"{config.split})")
    rng = np.random.default_rng(config.seed)
    size = config.image_size
    with runs.writing(out, force) as folder:
        report.step(f"reading windows of {size} px from {len(parts['train'])} training and {len(parts['val'])} "
                    f"validation photos")
        train = training_windows(parts["train"], size, windows_per_photo, empty_share, rng, skipped)
        val = training_windows(parts["val"], size, windows_per_photo, empty_share, rng, skipped)
        taps = backbone_taps(config)
        report.step(f"the frozen backbone over {len(train[0]) + len(val[0])} windows, once")
        embed_started = time.perf_counter()
        train_maps = _embed(taps, train[0], config.embed_batch_size)
        val_maps = _embed(taps, val[0], config.embed_batch_size)
        embed_s = time.perf_counter() - embed_started
        decoder = build_decoder(config, tuple(m.shape[-1] for m in train_maps))
        report.step(f"training the decoder ({decoder.count_params():,} weights) for up to {config.epochs} epochs")
        fit_started = time.perf_counter()
        groups = [parts["train"][owner].dataset if parts["train"][owner].mask is not None else "negatives"
                  for owner in train[3]]
        history, best_epoch = _fit_decoder(decoder, train, train_maps, val, val_maps, config, report, groups)
        fit_s = time.perf_counter() - fit_started
        # A fresh copy: the trained one carries its compiled loss, which Keras would save with it.
        saved_decoder = build_decoder(config, tuple(m.shape[-1] for m in train_maps))
        saved_decoder.set_weights(decoder.get_weights())
        model = end_to_end(taps, saved_decoder)
        info = ModelInfo(SEGMENT_CLASSES, "crack", size, SEGMENT_PATCH_SIZE, "MobileNetV2", config.alpha, __version__,
                         task="segment")
        probability = _predict(decoder, val[0], val_maps)
        scorer = PixelScorer()
        for p, truth, weight in zip(probability, val[1], val[2]):
            scorer.add(p, truth > 0, weight > 0)
        report.step("writing the run")
        save_keras_model(model, folder / runs.MODEL_FILE, info)
        config.save(folder / runs.CONFIG_FILE)
        runs.write_history(folder, history)
        _write_split(folder, items)
        _write_plots(folder, history, val, probability)
        metrics = {
            "task": "segment",
            "data": [str(Path(d).resolve()) for d in data],
            "negatives": [str(n) for n in negatives],
            "photos": {part: len(group) for part, group in parts.items()},
            "photos_by_set": _count_by_set(items),
            "windows": {"train": len(train[0]), "val": len(val[0]), "size_px": size,
                        "per_photo": windows_per_photo, "empty_share": empty_share},
            "skipped": [{"file": f, "reason": r} for f, r in skipped],
            "val": scorer.result().to_dict(),
            "balanced_sets": BALANCE_SETS,
            "loss": {"terms": "cross-entropy + soft Dice" + (" + skeleton recall" if SKELETON_RECALL_WEIGHT else ""),
                     "skeleton_recall_weight": SKELETON_RECALL_WEIGHT},
            "best_epoch": best_epoch,
            "epochs_run": len(history),
            "decoder": {"weights": int(decoder.count_params()), "taps": [name for name, _ in TAPS]},
            "timing": {"embed_s": round(embed_s, 1), "fit_s": round(fit_s, 1),
                       "total_s": round(time.perf_counter() - started, 1)},
            "test": {"photos": len(parts["test"]), "note": "held out: crackscan evaluate MODEL PHOTOS --masks MASKS "
                                                           "grades them"},
        }
        runs.write_metrics(folder, metrics)
        runs.finish(folder, _common_root(data), {"task": "segment"})
    return SegmentRun(Path(out), metrics, config)


def _embed(taps: Any, pixels: np.ndarray, batch_size: int) -> list[np.ndarray]:
    chunks: list[list[np.ndarray]] = [[] for _ in TAPS]
    for start in range(0, len(pixels), batch_size):
        outputs = taps(pixels[start:start + batch_size].astype(np.float32), training=False)
        for chunk, output in zip(chunks, outputs):
            chunk.append(np.asarray(output).astype(np.float16))
    return [np.concatenate(chunk) for chunk in chunks]


# Each training epoch draws its windows so that every mask set, and the negatives together, weigh
# the same, however many windows each gave (with replacement; as many windows as there are). False:
# every window once an epoch, so the largest sets weigh most.
BALANCE_SETS = False
# Skeleton recall (Kirchhoff et al., ECCV 2024) beside cross-entropy and Dice, at this weight: the
# share of each true crack's centreline (its skeleton, up to 3 px wide) the map misses, so a thin crack's
# few pixels count as much as a wide one's many. 0: not used.
SKELETON_RECALL_WEIGHT = 0.0


def _loss(y_true: Any, y_pred: Any) -> Any:
    """Weighted cross-entropy plus soft Dice (plus skeleton recall where y_true has a third
    channel); y_true packs the mask, the pixel weights (0 where the mask says ignore) and the
    true mask's tubed skeleton as channels."""
    ops = _tf.keras().ops
    truth, weight = y_true[..., :1], y_true[..., 1:2]
    p = ops.clip(y_pred, 1e-6, 1 - 1e-6)
    cross = -(truth * ops.log(p) + (1 - truth) * ops.log(1 - p))
    cross = ops.sum(cross * weight) / ops.maximum(ops.sum(weight), 1.0)
    overlap = ops.sum(p * truth * weight, axis=(1, 2, 3))
    dice = 1 - (2 * overlap + 1) / (ops.sum(p * weight, axis=(1, 2, 3)) + ops.sum(truth * weight, axis=(1, 2, 3)) + 1)
    loss = cross + ops.mean(dice)
    if y_true.shape[-1] > 2:
        skeleton = y_true[..., 2:3] * weight
        loss = loss + SKELETON_RECALL_WEIGHT * (1 - (ops.sum(p * skeleton) + 1) / (ops.sum(skeleton) + 1))
    return loss


def tubed_skeletons(masks: np.ndarray) -> np.ndarray:
    """Each window's true crack centreline, dilated to 3 px within the crack (uint8 0/1)."""
    import cv2
    from skimage.morphology import skeletonize

    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    # Kept inside the crack: a 1-2 px crack's tube is the crack itself, not pixels beside it.
    return np.stack([cv2.dilate(skeletonize(mask > 0).astype(np.uint8), cross) * (mask > 0) if mask.any() else
                     np.zeros_like(mask, np.uint8) for mask in masks]).astype(np.uint8)


class _FlippedBatches:
    """Batches of (pixels, maps) -> (mask, weight), each window flipped at random; with
    ``crop``, each batch cut to a crop x crop part of its windows at a random place (a
    multiple of the coarsest map's stride, so every map is cut where the backbone saw it in
    context), for a decoder built for any size: a quarter of the pixels a step."""

    def __new__(cls, windows: tuple, maps: list[np.ndarray], batch_size: int, seed: int, flips: bool,
                draw: np.ndarray | None = None, crop: int | None = None, draws: int | None = None) -> Any:
        keras = _tf.keras()

        class Batches(keras.utils.PyDataset):
            def __init__(self) -> None:
                super().__init__()
                self.rng = np.random.default_rng(seed)
                self.order = np.arange(len(windows[0]))
                if draw is not None:
                    self.on_epoch_end()

            def __len__(self) -> int:
                return int(np.ceil(len(self.order) / batch_size))

            def on_epoch_end(self) -> None:
                if draw is None:
                    self.rng.shuffle(self.order)
                else:  # windows drawn by their set's weight, ``draws`` of them (default: as many as there are)
                    self.order = self.rng.choice(len(draw), draws or len(draw), p=draw)

            def __getitem__(self, index: int) -> tuple:
                rows = np.sort(self.order[index * batch_size:(index + 1) * batch_size])
                arrays = [windows[0][rows].astype(np.float32), *(m[rows].astype(np.float32) for m in maps)]
                target = np.stack([part[rows] for part in (windows[1], windows[2], *windows[4:])], axis=-1
                                  ).astype(np.float32)
                if crop is not None:
                    arrays, target = self.cropped(arrays, target)
                if flips:
                    for axis in (2, 1):  # columns, rows of N x H x W x C
                        if self.rng.random() < 0.5:
                            arrays = [np.flip(a, axis) for a in arrays]
                            target = np.flip(target, axis)
                return tuple(np.ascontiguousarray(a) for a in arrays), np.ascontiguousarray(target)

            def cropped(self, arrays: list[np.ndarray], target: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
                size, coarsest = target.shape[1], TAPS[-1][1]
                places = (size - crop) // coarsest + 1
                y, x = (int(v) * coarsest for v in self.rng.integers(0, places, 2))
                strides = [1, *(stride for _, stride in TAPS)]
                arrays = [a[:, y // s:(y + crop) // s, x // s:(x + crop) // s] for a, s in zip(arrays, strides)]
                return arrays, target[:, y:y + crop, x:x + crop]

        return Batches()


def _fit_decoder(decoder: Any, train: tuple, train_maps: list[np.ndarray], val: tuple, val_maps: list[np.ndarray],
                 config: TrainConfig, report: Progress, groups: list[str] | None = None
                 ) -> tuple[list[dict[str, float]], int]:
    keras = _tf.keras()
    keras.utils.set_random_seed(config.seed)
    decoder.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=_loss)
    history: list[dict[str, float]] = []
    best = (np.inf, 0, None)

    class Epochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            nonlocal best
            logs = logs or {}
            history.append({"epoch": epoch + 1, "loss": float(logs.get("loss", np.nan)),
                            "val_loss": float(logs.get("val_loss", np.nan))})
            report.step(f"epoch {epoch + 1}/{config.epochs}: loss {history[-1]['loss']:.4f}, validation loss "
                        f"{history[-1]['val_loss']:.4f}")
            if history[-1]["val_loss"] < best[0] - config.min_delta:
                best = (history[-1]["val_loss"], epoch + 1, decoder.get_weights())
            elif config.patience and epoch + 1 - best[1] >= config.patience:
                self.model.stop_training = True

    if SKELETON_RECALL_WEIGHT:  # each window's skeleton beside its mask, for the loss's third term
        train, val = (*train, tubed_skeletons(train[1])), (*val, tubed_skeletons(val[1]))
    draw = _set_balance(groups) if BALANCE_SETS and groups is not None else None
    decoder.fit(_FlippedBatches(train, train_maps, config.batch_size, config.seed, flips=True, draw=draw),
                validation_data=_FlippedBatches(val, val_maps, config.batch_size, config.seed, flips=False),
                epochs=config.epochs, verbose=0, callbacks=[Epochs()])
    if best[2] is not None:
        decoder.set_weights(best[2])
    return history, best[1]


def _set_balance(groups: list[str]) -> np.ndarray:
    """Each window's chance to be drawn: every group (a set, or the negatives) the same in all."""
    names, index, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    chance = 1.0 / (len(names) * counts[index])
    return chance / chance.sum()


def _predict(decoder: Any, pixels: np.ndarray, maps: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
    out = []
    for start in range(0, len(pixels), batch_size):
        batch = [pixels[start:start + batch_size].astype(np.float32),
                 *(m[start:start + batch_size].astype(np.float32) for m in maps)]
        out.append(np.asarray(decoder(batch, training=False))[..., 0])
    return np.concatenate(out)


def _count_by_set(items: list[MaskedImage]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for item in items:
        counts.setdefault(item.dataset, {"train": 0, "val": 0, "test": 0})[item.split] += 1
    return counts


def _write_split(folder: Path, items: list[MaskedImage]) -> None:
    rows = [{"photo": str(i.photo.resolve()), "mask": str(i.mask.resolve()) if i.mask else "", "set": i.dataset,
             "split": i.split,
             "sha256": i.sha256} for i in items]
    write_text(folder / runs.SEGMENT_SPLIT_FILE, json.dumps(rows, indent=1) + "\n")


def _common_root(data: Sequence[str | Path]) -> Path:
    import os

    return Path(os.path.commonpath([str(Path(d).resolve()) for d in data]))


def _write_plots(folder: Path, history: list[dict[str, float]], val: tuple, probability: np.ndarray) -> None:
    """Loss curves, and a grid of validation windows: photo, true mask, predicted mask."""
    from .. import plots

    plots.loss_curves(history, folder / runs.TRAINING_CURVES_PLOT)
    order = np.argsort([-int(m.sum()) for m in val[1]])[:6]  # the most cracked windows say the most
    plots.image_grid([[val[0][i], val[1][i] * 255, (probability[i] * 255).astype(np.uint8)] for i in order],
                     ["photo", "true mask", "predicted"], folder / runs.SEGMENT_GRID_PLOT)
