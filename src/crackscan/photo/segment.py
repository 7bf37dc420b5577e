"""Scanning one photo with a segmenter: a crack probability for every pixel, then tiles from it.

The segmenter learned at the photo's own scale (a 2 px crack is 2 px to it), so the photo is
never resized: it is covered by overlapping windows of the model's input size, and each
window's map is blended in with weights that fall towards its edges (where a window sees
least context), so no seam shows where windows meet. Memory is the photo plus two float
maps of its size: a 50 MP photo stays well under 1.5 GB.

The tile grid the survey, the server and the page read is kept: each tile's crack
probability is the level that at least SPECK_SHARE of its pixels reach (one bright speck is
not a crack), its crack-pixel share is beside it, and the photo's crack area is its share of
crack pixels.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..errors import Cancelled, LimitExceeded
from ..images import ImageSource, read_for_shrinking, resize_pixels
from ..measure.options import Measuring
from ..runtime.predictor import Predictor
from .result import PhotoResult, PhotoSummary, Tile
from .tiling import MAX_TILES, tile_count, tile_grid, tile_origins

WINDOW_OVERLAP = 0.25  # of a window's side, on each side it shares with the next (a fixed-size model)
# A model that can be resized (runtime.resize) runs windows of up to WINDOW_LARGEST px a side
# sharing WINDOW_MARGIN px with their neighbours (0: the model's own size, as a fixed one).
WINDOW_LARGEST = 1024
WINDOW_MARGIN = 64
WINDOW_STEP = 32  # the network's largest stride: a window's side is a multiple of it
# Test-time flips: each window's map is the mean of the model's maps of the window as it is and
# flipped along these axes (0 rows, 1 columns; (0, 1) both), unflipped. () is one pass.
TEST_TIME_FLIPS: tuple[tuple[int, ...], ...] = ()
# A photo whose short side is under this many px (None: the model's window) is segmented scaled
# up until it is that, as training reads a photo smaller than a window (segment.masksets.
# read_masked), and its map brought back to the photo's size; 0: never. On the shared sets'
# held-out crops it lifted pixel F1 on all three sets of small photos and changed no other
# (masonry 224 px +0.024, GAPs384 133 px +0.035, ShadowCrack 160 px +0.028:
# results/segmentation-upscale-to-256.json against -shipped-7sets.json). Twice the size,
# whatever the photo's, did better on GAPs384 but cost masonry 0.010 (-upscale-2x-below-256.json).
UPSCALE_BELOW: int | None = None
EDGE_PAD = 16  # px the photo is mirrored out by beyond its right and bottom edges (crack_probability_map)
SPECK_SHARE = 0.0025  # of a tile's pixels: ~130 px of a 227 px tile, a crack 1 px wide and 130 px long


def blend_line(size: int, margin: int) -> np.ndarray:
    """One axis of a window's blending weights: 1 inside, falling linearly to near 0 over
    ``margin`` px at its ends (a window's weights are the outer product of its two lines)."""
    ramp = np.minimum(1.0, (np.arange(size) + 0.5) / max(1, margin))
    return np.minimum(ramp, ramp[::-1]).astype(np.float32)


def crack_probability_map(predictor: Predictor, pixels: np.ndarray, batch_size: int | None = None,
                          should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Each pixel's crack probability (H x W float32) for a photo's pixels (H x W x 3), its
    windows in batches of ``batch_size`` (default: the runner's own, whose interpreter is sized
    for it: a batch of 8 under a runner of 32 went through one window at a time).

    The photo is mirrored out by EDGE_PAD px beyond its right and bottom edges before it is
    windowed, so no window's own right or bottom border lies on the photo's edge: there
    TensorFlow pads a stride-2 convolution with zeros on that side only, and a dark photo's
    right and bottom edges came out as rows of short "cracks". (Mirroring the right and
    bottom by 32 px cost up to 0.014 pixel F1 on a shared set, by 16 px at most 0.007, two
    sets up: results/segmentation-pad-after-32.json, -16.json.)"""
    height, width = pixels.shape[:2]
    batch_size = batch_size or predictor.batch_size
    least = predictor.input_size if UPSCALE_BELOW is None else UPSCALE_BELOW
    if min(height, width) < least:
        import cv2

        scale = least / min(height, width)
        larger = resize_pixels(pixels, max(least, round(width * scale)), max(least, round(height * scale)))
        return cv2.resize(_window_map(predictor, larger, batch_size, should_stop), (width, height),
                          interpolation=cv2.INTER_AREA)
    return _window_map(predictor, pixels, batch_size, should_stop)


def window_layout(length: int, size: int, largest: int | None) -> tuple[int, list[int]]:
    """One axis of a photo's windows: their side and where each starts.

    A model of a fixed size (``largest`` None) gets windows of its size overlapping by
    WINDOW_OVERLAP of a side. A resizable one gets as few windows as cover ``length`` with at
    most ``largest`` px each and WINDOW_MARGIN px shared by neighbours, all of one side (a
    multiple of WINDOW_STEP, so each is the network's own grid), spread evenly: a 4048 px side
    is five windows of 864 px, where windows of 256 px overlapping by 64 sent each pixel
    through the network 1.33 times on each axis."""
    if largest is None:
        margin = int(size * WINDOW_OVERLAP)
        return size, tile_origins(max(length, size), size, size - margin)
    count = max(1, -(-(length - WINDOW_MARGIN) // (largest - WINDOW_MARGIN)))
    side = -(-(length + (count - 1) * WINDOW_MARGIN) // count)
    side = max(size, -(-side // WINDOW_STEP) * WINDOW_STEP)
    if count == 1 or side >= length:
        return side, [0]
    return side, [round(index * (length - side) / (count - 1)) for index in range(count)]


def _window_map(predictor: Predictor, pixels: np.ndarray, batch_size: int,
                should_stop: Callable[[], bool] | None) -> np.ndarray:
    size = predictor.input_size
    height, width = pixels.shape[:2]
    # Only after the photo: its left and top borders show no such artefact.
    after = min(EDGE_PAD, height - 1, width - 1)
    canvas_h, canvas_w = height + after, width + after
    # A photo no wider or higher than the model's window is run as training saw such photos
    # (scaled up to one window, segment.masksets.read_masked): a larger window would only add
    # mirrored pixels, and cost the three sets of small crops 0.012-0.023 pixel F1
    # (results/segmentation-windows-1024-small-photos-too.json against -baseline-zen3.json).
    largest = WINDOW_LARGEST if WINDOW_LARGEST and WINDOW_LARGEST > size and min(height, width) > size else None
    side_h, rows = window_layout(canvas_h, size, largest)
    side_w, cols = window_layout(canvas_w, size, largest)
    runner = predictor.runner
    if (side_h, side_w) != (size, size):
        runner = predictor.sized(side_h, side_w)
        if runner is None:  # the format fixes the window: the model's own size
            largest = None
            side_h, rows = window_layout(canvas_h, size, None)
            side_w, cols = window_layout(canvas_w, size, None)
            runner = predictor.runner
        else:
            batch_size = max(1, batch_size * size * size // (side_h * side_w))
    margin = int(size * WINDOW_OVERLAP) if largest is None else WINDOW_MARGIN
    line_h, line_w = blend_line(side_h, margin), blend_line(side_w, margin)
    weights = np.outer(line_h, line_w)
    # The canvas holds every window whole: a window may reach past the photo (mirrored there).
    total = np.zeros((max(canvas_h, rows[-1] + side_h), max(canvas_w, cols[-1] + side_w)), np.float32)
    # The windows are a grid and each one's weights the outer product of two lines, so their sum
    # is the outer product of the lines' sums along each axis: no second photo-sized map (200 MB
    # at 50 MP).
    row_sum, col_sum = np.zeros(total.shape[0], np.float32), np.zeros(total.shape[1], np.float32)
    for y in rows:
        row_sum[y:y + side_h] += line_h
    for x in cols:
        col_sum[x:x + side_w] += line_w
    corners = [(x, y) for y in rows for x in cols]
    decoder = predictor.decoder
    for start in range(0, len(corners), batch_size):
        if should_stop is not None and should_stop():
            raise Cancelled(f"scan stopped after {start} of {len(corners)} windows")
        chunk = corners[start:start + batch_size]
        batch = np.stack([mirrored_window(pixels, x, y, side_w, side_h) for x, y in chunk])
        maps = decoder.crack_map(runner(batch), predictor.info)
        if TEST_TIME_FLIPS:
            for axes in TEST_TIME_FLIPS:
                batch_axes = tuple(a + 1 for a in axes)  # a batch's and its maps' axis 0 is the window
                flipped = np.ascontiguousarray(np.flip(batch, batch_axes))
                maps = maps + np.flip(decoder.crack_map(runner(flipped), predictor.info), batch_axes)
            maps = maps / (1 + len(TEST_TIME_FLIPS))
        for (x, y), crack in zip(chunk, maps):
            total[y:y + side_h, x:x + side_w] += crack * weights
    total /= row_sum[:, None]
    total /= col_sum[None, :]
    return total[:height, :width]


def mirrored_window(pixels: np.ndarray, x: int, y: int, size: int, size_h: int | None = None) -> np.ndarray:
    """The window at (x, y), ``size`` px wide and ``size_h`` (default ``size``) high, of the
    photo mirrored out beyond its edges (as np.pad's "reflect", repeated for a photo smaller
    than the window), gathered from the photo itself: no mirrored copy of the whole photo is made."""
    height, width = pixels.shape[:2]
    size_h = size if size_h is None else size_h
    if 0 <= x and 0 <= y and x + size <= width and y + size_h <= height:
        return pixels[y:y + size_h, x:x + size]
    rows = _reflected(np.arange(y, y + size_h), height)
    cols = _reflected(np.arange(x, x + size), width)
    return pixels[rows[:, None], cols[None, :]]


def _reflected(index: np.ndarray, length: int) -> np.ndarray:
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.abs(index) % period
    return np.where(folded >= length, period - folded, folded)


def tile_levels(probability: np.ndarray, boxes: list[tuple[int, int, int, int]], threshold: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each tile's crack level (the probability at least SPECK_SHARE of its pixels reach) and
    its share of pixels at or over ``threshold``."""
    levels = np.empty(len(boxes), np.float32)
    shares = np.empty(len(boxes), np.float32)
    for index, (x, y, w, h) in enumerate(boxes):
        values = probability[y:y + h, x:x + w].ravel()
        k = max(1, int(SPECK_SHARE * values.size))
        levels[index] = np.partition(values, values.size - k)[values.size - k]
        shares[index] = np.count_nonzero(values >= threshold) / values.size
    return levels, shares


def scan_segmenter(predictor: Predictor, photo: ImageSource, tile: int, stride: int, threshold: float,
                   max_pixels: int | None, keep_image: bool, max_tiles: int | None,
                   should_stop: Callable[[], bool] | None, name: str, measuring: Measuring | None = None,
                   batch_size: int = 8) -> PhotoResult:
    """What ``photo.scan.scan`` returns, for a segmenter: the result carries the mask and the
    cracks measured on it (``measuring``: the scale, classes and limit; pixels only without).
    ``batch_size`` is the classifier's tiles a batch; windows go in crack_probability_map's batches."""
    started = time.perf_counter()
    pixels, (width, height) = read_for_shrinking(photo, None, max_pixels)
    count = tile_count(width, height, tile, stride)
    limit = MAX_TILES if max_tiles is None else max_tiles
    if count > limit:
        raise LimitExceeded(f"{width}x{height} px at tile {tile} and stride {stride} makes {count:,} tiles, over "
                            f"the limit of {limit:,} per photo: choose a larger stride or tile")
    probability = crack_probability_map(predictor, pixels, should_stop=should_stop)
    grid, boxes = tile_grid(width, height, tile, stride)
    levels, shares = tile_levels(probability, boxes, threshold)
    positive, negative = predictor.info.positive_class, predictor.info.negative_class
    tiles = [Tile(row, col, x, y, w, h, float(p), *((positive, "crack") if p >= threshold else (negative, "clear")),
                  crack_pixel_share=float(share))
             for (row, col), (x, y, w, h), p, share in zip(grid, boxes, levels, shares)]
    crack_pixels = int(np.count_nonzero(probability >= threshold))
    summary = PhotoSummary(
        photo=name, width=width, height=height, tile=tile, stride=stride, threshold=threshold, tiles=len(tiles),
        rows=grid[-1][0] + 1, cols=grid[-1][1] + 1, cracked_tiles=int(np.sum(levels >= threshold)),
        cracked_area_fraction=crack_pixels / (width * height), max_crack_probability=float(probability.max()),
        model=str(predictor.path) if predictor.path else None, seconds=0.0)
    summary.record({"task": predictor.info.task, "crack_pixels": crack_pixels})
    cracks, figures = (measuring or Measuring()).cracks(probability, photo, threshold, pixels)
    summary.record(figures.to_dict())
    mask = np.round(probability * 255).astype(np.uint8)
    summary.seconds = round(time.perf_counter() - started, 3)
    return PhotoResult(name, width, height, tiles, summary, pixels if keep_image else None, mask=mask, cracks=cracks)
