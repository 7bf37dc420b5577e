"""Scanning one photo: tiles at the training patch scale, classified in streamed batches.

Tiles are classified in streamed batches, so memory stays bounded for 50-megapixel photos.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np

from .. import settings
from ..errors import Cancelled, LimitExceeded
from ..images import ImageSource, read_for_shrinking, resize_pixels
from ..model.tasks import task_of
from ..runtime.predictor import Predictor, as_predictor
from ..settings import DEFAULT_MAX_PIXELS
from .result import PhotoResult, PhotoSummary, Tile
from ..measure.options import Measuring
from .tiling import MAX_TILES, covered_fraction, crop, scan_geometry, tile_count, tile_grid


def scan(
    model: Any,
    photo: ImageSource,
    tile: int | None = None,
    stride: int | None = None,
    threshold: float = 0.5,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    batch_size: int = 64,
    keep_image: bool = True,
    max_tiles: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    measuring: Measuring | None = None,
) -> PhotoResult:
    """Scans one photo with a model (a name, path or Predictor); returns the tile grid and summary.

    ``max_tiles`` refuses a photo and tiling that would make more tiles (LimitExceeded),
    before any tile is classified; ``should_stop`` is asked between batches, and a True
    ends the scan with Cancelled (the server's client has gone). A segmenter's scan also
    measures the cracks in its mask, with ``measuring``'s scale, width classes and limit.
    """
    predictor = as_predictor(model)
    tile, stride = scan_geometry(predictor.info, tile, stride)
    settings.THRESHOLD.check(threshold)
    photo_scan = task_of(predictor.info).implementation("photo_scan")  # tiles, or pixels at the photo's scale
    return photo_scan(predictor, photo, tile, stride, threshold, max_pixels, keep_image, max_tiles, should_stop,
                      _name(photo), measuring, batch_size=batch_size)


def scan_tiles(predictor: Predictor, photo: ImageSource, tile: int, stride: int, threshold: float,
               max_pixels: int | None, keep_image: bool, max_tiles: int | None,
               should_stop: Callable[[], bool] | None, name: str, measuring: Measuring | None = None,
               batch_size: int = 64) -> PhotoResult:
    """What ``scan`` returns, for a classifier: each tile resized to the model's input and
    classified, in streamed batches (``measuring`` has no mask to measure here)."""
    started = time.perf_counter()
    scale = predictor.input_size / tile

    def scaled(w: int, h: int) -> tuple[int, int]:
        return max(1, round(w * scale)), max(1, round(h * scale))

    photo_pixels, (width, height) = read_for_shrinking(photo, scaled, max_pixels)
    count = tile_count(width, height, tile, stride)
    limit = MAX_TILES if max_tiles is None else max_tiles
    if count > limit:  # before a box is made: a flood of such requests must cost nothing
        raise LimitExceeded(f"{width}x{height} px at tile {tile} and stride {stride} makes {count:,} tiles, over "
                            f"the limit of {limit:,} per photo: choose a larger stride or tile")
    grid, boxes = tile_grid(width, height, tile, stride)

    size = predictor.input_size
    pixels = resize_pixels(photo_pixels, *scaled(width, height))
    probabilities = np.empty(len(boxes), np.float32)
    for start in range(0, len(boxes), batch_size):
        if should_stop is not None and should_stop():
            raise Cancelled(f"scan stopped after {start} of {len(boxes)} tiles")
        chunk = boxes[start : start + batch_size]
        batch = np.stack([crop(pixels, box, scale, size) for box in chunk])
        probabilities[start : start + len(chunk)] = predictor.crack_probability(batch)
    positive, negative = predictor.info.positive_class, predictor.info.negative_class
    tiles = [Tile(row, col, x, y, w, h, float(p), *((positive, "crack") if p >= threshold else (negative, "clear")))
             for (row, col), (x, y, w, h), p in zip(grid, boxes, probabilities)]
    cracked = [box for box, p in zip(boxes, probabilities) if p >= threshold]
    summary = PhotoSummary(
        photo=name, width=width, height=height, tile=tile, stride=stride, threshold=threshold,
        tiles=len(tiles), rows=grid[-1][0] + 1, cols=grid[-1][1] + 1, cracked_tiles=len(cracked),
        cracked_area_fraction=covered_fraction(cracked, width, height),
        max_crack_probability=float(probabilities.max()) if len(probabilities) else 0.0,
        model=str(predictor.path) if predictor.path else None, seconds=round(time.perf_counter() - started, 3))
    return PhotoResult(summary.photo, width, height, tiles, summary, photo_pixels if keep_image else None)


def _name(photo: Any) -> str:
    if isinstance(photo, (str, os.PathLike)):
        return str(photo)
    return getattr(photo, "filename", None) or "photo"
