"""Pixel crack segmentation: training on mask sets, whole-photo masks, exports, pixel figures."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import crackscan
from crackscan import synth
from crackscan.errors import CrackscanError
from crackscan.masks import read_mask_parts
from crackscan.model.info import ModelInfo
from crackscan.photo import segment
from crackscan.photo.result import MASK_FILE, read_tiles
from crackscan.photo.scan import scan
from crackscan.photo.segment import crack_probability_map
from crackscan.runtime.predictor import Predictor
from crackscan.segment.masksets import find_mask_sets
from crackscan.segment.pixels import PixelCounts, PixelScorer, pixel_counts
from crackscan.segment.train import train_segmenter
from crackscan.settings import TrainConfig

from .conftest import SHARED, TINY_SEGMENT


def test_the_mask_of_a_new_photo_overlaps_its_drawn_crack(tiny_segmenter: Path, tmp_path: Path) -> None:
    photos = synth.make_mask_set(tmp_path / "new", photos=4, size=260, seed=7)  # windows overlap: 260 > 96
    scorer = PixelScorer()
    for stem in ("001", "002", "003"):
        result = scan(tiny_segmenter, photos / "images" / f"{stem}.png")
        assert result.mask is not None and result.mask.shape == (260, 260)
        truth = np.asarray(Image.open(photos / "masks" / f"{stem}.png")) > 0
        scorer.add(result.mask / 255, truth)
    assert scorer.result().at_threshold["f1"] >= 0.6  # an untrained decoder scores ~0
    from crackscan.runs import SEGMENT_RUN_FILES

    assert all((tiny_segmenter / name).is_file() for name in SEGMENT_RUN_FILES)
    clear = scan(tiny_segmenter, photos / "images" / "000.png")  # index 0 of every 4 has no crack
    assert clear.summary.cracked_area_fraction < 0.002


def test_scan_writes_the_mask_at_the_photo_size_and_tiles_with_crack_shares(tiny_segmenter: Path, mask_set: Path,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "survey"
    done = subprocess.run([sys.executable, "-m", "crackscan.cli", "scan", str(tiny_segmenter),
                           str(mask_set / "images" / "001.png"), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    folder = next(p.parent for p in out.rglob(MASK_FILE))
    mask = np.asarray(Image.open(folder / MASK_FILE))
    assert mask.shape == (192, 192) and mask.dtype == np.uint8 and mask.max() > 128
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["task"] == "segment"
    assert summary["crack_pixels"] == int(np.count_nonzero(mask >= 128)) or abs(
        summary["crack_pixels"] - np.count_nonzero(mask >= 128)) <= 0.01 * mask.size
    tiles = read_tiles(folder)
    assert all(t.crack_pixel_share is not None for t in tiles)
    assert tiles[0].verdict == "crack"


def test_windows_blend_without_seams() -> None:
    """A model that says 0.7 everywhere gives 0.7 at every pixel, where one window or four meet."""

    class Constant:
        batch_size = 4

        def __call__(self, batch: np.ndarray) -> np.ndarray:
            return np.full((len(batch), 96, 96, 1), 0.7, np.float32)

    info = ModelInfo(("background", "crack"), "crack", 96, 227, task="segment")
    for shape in ((300, 410), (50, 70)):  # many windows; smaller than one window
        probability = crack_probability_map(Predictor(Constant(), info), np.zeros((*shape, 3), np.uint8))
        assert probability.shape == shape
        np.testing.assert_allclose(probability, 0.7, atol=1e-5)


class _ResizableConstant:
    """A fake fully convolutional runner: 0.7 everywhere, at its own size or any size asked."""

    batch_size = 4

    def __init__(self, height: int = 96, width: int = 96, sizes: list | None = None):
        self.height, self.width, self.sizes = height, width, [] if sizes is None else sizes

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.shape[1:3] == (self.height, self.width)
        return np.full((len(batch), self.height, self.width, 1), 0.7, np.float32)

    def sized(self, height: int, width: int) -> "_ResizableConstant":
        self.sizes.append((height, width))
        return _ResizableConstant(height, width, self.sizes)


def test_a_resizable_model_covers_a_photo_with_few_large_windows_without_seams(monkeypatch) -> None:
    info = ModelInfo(("background", "crack"), "crack", 96, 227, task="segment")
    monkeypatch.setattr(segment, "WINDOW_LARGEST", 256)
    runner = _ResizableConstant()
    probability = crack_probability_map(Predictor(runner, info), np.zeros((300, 700, 3), np.uint8))
    assert probability.shape == (300, 700)
    np.testing.assert_allclose(probability, 0.7, atol=1e-5)
    assert set(runner.sizes) == {(192, 256)}  # 316 px in two windows, 716 in three, each a multiple of 32
    runner.sizes.clear()
    crack_probability_map(Predictor(runner, info), np.zeros((80, 700, 3), np.uint8))
    assert runner.sizes == []  # a photo no higher than the model's window runs as training saw it


@pytest.mark.parametrize("length", [97, 256, 316, 1000, 4048, 6160])
def test_large_windows_cover_a_side_with_the_fewest_that_share_the_margin(length: int) -> None:
    side, origins = segment.window_layout(length, 96, 1024)
    assert side % segment.WINDOW_STEP == 0 and 96 <= side <= max(1024, -(-length // 32) * 32)
    assert origins[0] == 0 and origins[-1] + side >= length
    assert all(b - a <= side - segment.WINDOW_MARGIN for a, b in zip(origins, origins[1:]))
    fewer = len(origins) - 1
    assert fewer == 0 or fewer * 1024 - (fewer - 1) * segment.WINDOW_MARGIN < length


def test_a_photo_smaller_than_a_window_is_segmented_at_the_scale_training_read_it() -> None:
    """A 48 x 64 crop reaches a 96 px model scaled to 96 x 128, as training scales up such photos
    (its 2 px crack 4 px wide), and its map comes back at the crop's size, the crack where it
    was; a photo of a window or more is never scaled."""
    widths = []

    class DarkIsCrack:
        batch_size = 4

        def __call__(self, batch: np.ndarray) -> np.ndarray:
            widths.extend(int(np.count_nonzero(window[0, :, 0] < 110)) for window in batch)
            return (batch[..., :1] < 110).astype(np.float32)

    info = ModelInfo(("background", "crack"), "crack", 96, 227, task="segment")
    crop = np.full((48, 64, 3), 200, np.uint8)
    crop[:, 30:32] = 20  # a crack 2 px wide
    probability = crack_probability_map(Predictor(DarkIsCrack(), info), crop)
    assert probability.shape == (48, 64)
    assert probability[:, 30:32].min() > 0.9 and probability[:, :28].max() < 0.05 and probability[:, 34:].max() < 0.05
    assert max(widths) == 4
    widths.clear()
    photo = np.full((100, 120, 3), 200, np.uint8)
    photo[:, 30:32] = 20
    assert crack_probability_map(Predictor(DarkIsCrack(), info), photo).shape == (100, 120) and max(widths) == 2


def test_small_survey_crops_are_segmented_better_scaled_up_as_in_training(monkeypatch) -> None:
    """On real 133 px asphalt crops (GAPs384, which crackscan-seg never trained on), the scale-up
    finds more of their thin cracks than segmenting them at their own size."""
    gaps = SHARED / "data" / "real-photos" / "gaps384-train" if SHARED else None
    if gaps is None or not gaps.is_dir():
        pytest.skip("needs ../shared's gaps384-train")
    items, _ = find_mask_sets([gaps])
    test = [i for i in items if i.split == "test"][:120]
    model = crackscan.load("crackscan-seg")

    def f1(upscale_below: int | None) -> float:
        monkeypatch.setattr(segment, "UPSCALE_BELOW", upscale_below)
        total = PixelCounts()
        for item in test:
            result = scan(model, item.photo)
            truth, _ = read_mask_parts(item.mask, result.width, result.height)
            total += pixel_counts(result.mask >= 128, truth)
        return total.f1

    own_size, scaled_up = f1(0), f1(None)
    assert scaled_up > own_size + 0.01, (own_size, scaled_up)


@pytest.mark.slow  # four conversions of the segmenter, ONNX's among them: conversion belongs to the slow tier
def test_every_format_draws_the_same_mask(tiny_segmenter: Path, mask_set: Path, monkeypatch) -> None:
    photo = mask_set / "images" / "002.png"
    keras_mask = scan(tiny_segmenter / "model.keras", photo).mask >= 128
    float_export = crackscan.export(tiny_segmenter, "litert", force=True)
    assert float_export.check["passed"] and float_export.check["max_probability_difference"] < 1e-3
    # A LiteRT file runs large windows (runtime.resize) where Keras keeps the model's own: the
    # same network sees more context, so the masks agree closely, not pixel for pixel.
    large_windows = scan(float_export.path, photo).mask >= 128
    assert pixel_counts(large_windows, keras_mask).f1 >= 0.95
    monkeypatch.setattr(segment, "WINDOW_LARGEST", 0)  # the same windows for every format from here
    assert np.array_equal(scan(float_export.path, photo).mask >= 128, keras_mask) or \
        np.mean((scan(float_export.path, photo).mask >= 128) != keras_mask) < 1e-4
    int8_export = crackscan.export(tiny_segmenter, "litert", int8=True, force=True)
    int8_mask = scan(int8_export.path, photo).mask >= 128
    assert pixel_counts(int8_mask, keras_mask).f1 >= 0.9
    assert crackscan.load(int8_export.path).info.task == "segment"


def test_pixel_figures_count_within_the_tolerance() -> None:
    truth = np.zeros((40, 40), bool)
    truth[20, 5:35] = True  # a 1 px line, 30 px long
    shifted = np.roll(truth, 2, axis=0)
    assert pixel_counts(shifted, truth, tolerance=2).f1 == 1.0
    assert pixel_counts(shifted, truth, tolerance=0).f1 == 0.0
    assert pixel_counts(np.roll(truth, 3, axis=0), truth, tolerance=2).f1 == 0.0
    half = truth.copy()
    half[20, 20:35] = False
    counts = pixel_counts(half, truth, tolerance=0)
    assert (counts.precision, round(counts.recall, 3)) == (1.0, 0.5)
    ignored = np.ones((40, 40), bool)
    ignored[:, 20:] = False
    assert pixel_counts(half, truth, tolerance=0, counted=ignored).f1 == 1.0


def test_a_set_without_masks_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "photos" / "images").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(tmp_path / "photos" / "images" / "a.png")
    done = subprocess.run([sys.executable, "-m", "crackscan.cli", "train", str(tmp_path / "photos"), "--task", "segment",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "images/ and masks/" in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_mask_of_another_size_is_reported_and_skipped(mask_set: Path, tmp_path: Path, weights: str) -> None:
    broken = tmp_path / "set"
    (broken / "images").mkdir(parents=True)
    (broken / "masks").mkdir()
    for path in sorted((mask_set / "images").iterdir())[:12]:
        (broken / "images" / path.name).symlink_to(path)
        (broken / "masks" / path.name).symlink_to(mask_set / "masks" / path.name)
    (broken / "masks" / "000.png").unlink()
    Image.new("L", (50, 40)).save(broken / "masks" / "000.png")
    run = train_segmenter([broken], tmp_path / "run", TrainConfig(weights=weights, **{**TINY_SEGMENT, "epochs": 1}))
    assert any("000.png" in row["file"] and "50x40" in row["reason"] for row in run.metrics["skipped"])
    with pytest.raises(CrackscanError, match="not a mask set"):
        train_segmenter([tmp_path / "nothing"], tmp_path / "run2", TrainConfig(weights=weights, **TINY_SEGMENT))


def test_hard_negatives_are_all_clear_windows_split_by_content(mask_set: Path, tmp_path: Path) -> None:
    from crackscan.segment.masksets import find_negatives, training_windows

    clear = tmp_path / "clear"
    clear.mkdir()
    rng = np.random.default_rng(0)
    for index in range(10):
        Image.fromarray(synth.make_patch(rng, cracked=False, size=120)).save(clear / f"{index}.png")
    negatives = find_negatives([clear], (0.5, 0.1, 0.4), 42)
    assert len(negatives) == 10 and all(item.mask is None for item in negatives)
    assert {item.split for item in negatives} == {"train", "val", "test"}
    assert negatives == find_negatives([clear], (0.5, 0.1, 0.4), 42)  # by content: the same every time
    pixels, masks, weights, _ = training_windows(negatives, 96, 4, 0.0, rng, [])
    assert len(pixels) >= 10 and masks.sum() == 0 and weights.min() == 1  # every window kept, all clear


def test_the_skeleton_recall_term_counts_a_thin_crack_s_missed_centreline(monkeypatch) -> None:
    from crackscan.segment import train as segment_train

    monkeypatch.setattr(segment_train, "SKELETON_RECALL_WEIGHT", 1.0)
    mask = np.zeros((1, 32, 32), np.uint8)
    mask[0, 4:28, 10:12] = 1  # a crack 2 px wide
    skeleton = segment_train.tubed_skeletons(mask)
    assert skeleton[0, 4:28, 10:12].sum() == skeleton.sum() > 0 and skeleton[0, 16, 10:12].any()
    target = np.stack([mask, np.ones_like(mask), skeleton], axis=-1).astype(np.float32)
    found = mask[..., None].astype(np.float32) * 0.98 + 0.01
    missed = np.full_like(found, 0.01)
    with_term = [float(segment_train._loss(target, p)) for p in (found, missed)]
    without = [float(segment_train._loss(target[..., :2], p)) for p in (found, missed)]
    assert with_term[0] - without[0] < 0.05  # found: the term is near 0
    assert with_term[1] - without[1] > 0.9  # missed: the whole centreline counts


@pytest.mark.slow  # a training, if a tiny one: the fast tier checks the term itself above
def test_a_segmenter_trains_with_the_skeleton_recall_term_and_balanced_sets(mask_set: Path, tmp_path: Path, weights: str,
                                                          monkeypatch) -> None:
    from crackscan.segment import train as segment_train

    monkeypatch.setattr(segment_train, "SKELETON_RECALL_WEIGHT", 1.0)
    monkeypatch.setattr(segment_train, "BALANCE_SETS", True)
    run = train_segmenter([mask_set], tmp_path / "run", TrainConfig(weights=weights, **{**TINY_SEGMENT, "epochs": 2}))
    assert run.metrics["loss"]["skeleton_recall_weight"] == 1.0 and "skeleton recall" in run.metrics["loss"]["terms"]
    assert run.metrics["balanced_sets"]
    with open(run.path / "history.csv") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_drawn_lookalikes_are_straight_or_round_and_only_darken(real_data) -> None:
    """Each kind drawn on a real clear patch darkens it along straight full-length bands or in
    round pits, nowhere lightens it, and keeps its size."""
    from crackscan.synth import drawn_lookalike

    patch = np.asarray(Image.open(sorted((real_data / "Negative").glob("*.jpg"))[-1]).convert("RGB"))
    rng = np.random.default_rng(0)
    drawn = [drawn_lookalike(rng, patch) for _ in range(24)]
    for image in drawn:
        assert image.shape == patch.shape and image.dtype == np.uint8
        change = patch.astype(int) - image.astype(int)
        assert change.min() >= -1 and (change.max(axis=-1) > 20).sum() > 20  # darker only, visibly
    # The joints run across the whole patch: some rows or columns darkened from edge to edge.
    darkened = [(patch.astype(int) - image.astype(int)).max(axis=-1) > 10 for image in drawn]
    assert any(d.all(axis=0).any() or d.all(axis=1).any() or d[:, 0].any() and d[:, -1].any() for d in darkened)


def test_balanced_sets_weigh_the_same_whatever_their_size() -> None:
    from crackscan.segment.train import _set_balance

    groups = ["big"] * 90 + ["small"] * 10 + ["negatives"] * 20
    chance = _set_balance(groups)
    assert chance.sum() == pytest.approx(1)
    by_group = {name: chance[[g == name for g in groups]].sum() for name in set(groups)}
    assert all(share == pytest.approx(1 / 3) for share in by_group.values())
