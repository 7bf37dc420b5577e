"""Tiling a photo at the model's training patch scale.

The photo is scaled once by input_size / tile (227 px tiles -> 160 px model input), so each
tile is a plain crop of the scaled photo: the same pixels the model saw in training, at a
fraction of the cost of resizing every crop. The last row and column of tiles are aligned
to the far edges, so no border is ever dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import settings
from ..images import resize_pixels

# A 150 MP photo at the default 227 px tile is ~2,900 tiles; at half-tile stride ~11,600.
MAX_TILES = 1_000_000

Box = tuple[int, int, int, int]  # x, y, width, height in the photo's pixels


def tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets along one side: every ``stride``, plus one flush with the far edge."""
    if length <= tile:
        return [0]
    origins = list(range(0, length - tile + 1, stride))
    if origins[-1] + tile < length:
        origins.append(length - tile)
    return origins


def scan_geometry(info: Any, tile: int | None, stride: int | None) -> tuple[int, int]:
    """The tile side and stride a scan uses: the model's patch size (``info``: its ModelInfo)
    and no overlap unless set, checked by the same settings as the CLI's flags and the
    server's query."""
    tile = settings.TILE.check(info.patch_size if tile is None else tile)
    return tile, settings.STRIDE.check(tile if stride is None else stride)


def tile_count(width: int, height: int, tile: int, stride: int) -> int:
    return len(tile_origins(width, tile, stride)) * len(tile_origins(height, tile, stride))


def tile_grid(width: int, height: int, tile: int, stride: int) -> tuple[list[tuple[int, int]], list[Box]]:
    """Every tile's (row, col) and box, row by row from the top left."""
    xs, ys = tile_origins(width, tile, stride), tile_origins(height, tile, stride)
    boxes = [(x, y, min(tile, width), min(tile, height)) for y in ys for x in xs]
    grid = [(row, col) for row in range(len(ys)) for col in range(len(xs))]
    return grid, boxes


def crop(pixels: np.ndarray, box: Box, scale: float, size: int) -> np.ndarray:
    """A tile's model-ready pixels from the photo scaled by ``scale``."""
    x, y, w, h = box
    crop_w, crop_h = max(1, round(w * scale)), max(1, round(h * scale))
    sx = min(round(x * scale), max(0, pixels.shape[1] - crop_w))
    sy = min(round(y * scale), max(0, pixels.shape[0] - crop_h))
    cropped = pixels[sy : sy + crop_h, sx : sx + crop_w]
    if cropped.shape[:2] == (size, size):  # every whole tile: a view, no copy
        return cropped
    # A photo thinner than one tile: its whole short side becomes the tile.
    return resize_pixels(cropped, size, size)


def covered_fraction(boxes: list[Box], width: int, height: int) -> float:
    """Share of the photo covered by at least one of ``boxes`` (overlaps counted once)."""
    cell = 8  # px per mask cell: exact enough, and small for 50-megapixel photos
    mask = np.zeros((-(-height // cell), -(-width // cell)), bool)
    for x, y, w, h in boxes:
        mask[y // cell : -(-(y + h) // cell), x // cell : -(-(x + w) // cell)] = True
    return float(mask.mean()) if mask.size else 0.0


def owned_boxes(boxes: list[Box]) -> list[Box]:
    """Each box cut to the pixels it owns, so that boxes of a grid that overlap (the flush
    last row and column, or a stride under the tile) are drawn side by side, not over each
    other: along each axis, an overlap is split at its middle."""
    def spans(starts_and_sides: set[tuple[int, int]]) -> dict[int, tuple[int, int]]:
        ordered = sorted(starts_and_sides)
        owned = {}
        for i, (start, side) in enumerate(ordered):
            begin = start if i == 0 else max(start, (start + ordered[i - 1][0] + ordered[i - 1][1]) // 2)
            end = start + side if i == len(ordered) - 1 else min(start + side, (ordered[i + 1][0] + start + side) // 2)
            owned[start] = (begin, max(begin + 1, end))
        return owned

    across = spans({(x, w) for x, _, w, _ in boxes})
    down = spans({(y, h) for _, y, _, h in boxes})
    return [(across[x][0], down[y][0], across[x][1] - across[x][0], down[y][1] - down[y][0]) for x, y, _, _ in boxes]
