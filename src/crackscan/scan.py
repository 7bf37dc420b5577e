"""Scanning whole photos: tiles at the training patch scale, a crack map and a summary.

The photo is scaled once by input_size / tile (227 px tiles -> 160 px model input), so each
tile is a plain crop of the scaled photo: the same pixels the model saw in training, at a
fraction of the cost of resizing every crop. Tiles are classified in streamed batches, so
memory stays bounded for 50-megapixel photos. The last row and column of tiles are aligned
to the far edges, so no border is ever dropped.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import settings
from .data import DEFAULT_MAX_PIXELS, ImageSource, read_for_shrinking, resize_pixels
from .errors import Cancelled, CrackscanError, LimitExceeded
from .files import atomic_open, atomic_path, write_text
from .predict import Predictor, load

OVERLAY_MAX_SIDE = 1600  # overlays are for reading at a glance, not for pixel peeping
OVERLAY_FILE = "overlay.jpg"
OVERLAY_JPEG_QUALITY = 90
# A 150 MP photo at the default 227 px tile is ~2,900 tiles; at half-tile stride ~11,600.
MAX_TILES = 1_000_000
TILE_FIELDS = ("row", "col", "x", "y", "width", "height", "crack_probability", "label")


@dataclasses.dataclass(frozen=True)
class Tile:
    row: int  # the tile's place in the grid, counted from the top left
    col: int
    x: int
    y: int
    width: int
    height: int
    crack_probability: float
    label: str


@dataclasses.dataclass
class ScanResult:
    source: str
    width: int
    height: int
    tiles: list[Tile]
    summary: dict[str, Any]
    pixels: np.ndarray | None = dataclasses.field(default=None, repr=False)

    @property
    def image(self) -> Image.Image | None:
        """The photo as decoded for the scan: a large photo scanned by a small model may be
        held at 1/2 to 1/8 of its size (``width`` and ``height`` are its true size)."""
        return None if self.pixels is None else Image.fromarray(self.pixels)

    def overlay(self, max_side: int = OVERLAY_MAX_SIDE) -> Image.Image:
        if self.pixels is None:
            raise CrackscanError("the photo is no longer held: scan again with keep_image=True")
        return draw_overlay(self.pixels, self.width, self.height, self.tiles, self.summary, max_side)

    def write(self, folder: str | os.PathLike) -> Path:
        """Writes overlay.jpg, tiles.csv and summary.json into ``folder``, each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(folder / "tiles.csv") as handle:
            writer = csv.writer(handle)
            writer.writerow(TILE_FIELDS)
            for t in self.tiles:
                writer.writerow([t.row, t.col, t.x, t.y, t.width, t.height, f"{t.crack_probability:.6f}", t.label])
        # JPEG: a photo's crack map is a photo, and PNG would cost more than the scan itself
        # with a small model (0.25 s for a 1600 px map, 6x the bytes).
        with atomic_path(folder / OVERLAY_FILE) as temporary:
            self.overlay().save(temporary, quality=OVERLAY_JPEG_QUALITY)
        # summary.json last: a complete one marks the photo as done when a survey resumes.
        write_text(folder / "summary.json", json.dumps(self.summary, indent=2) + "\n")
        return folder


def tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets along one side: every ``stride``, plus one flush with the far edge."""
    if length <= tile:
        return [0]
    origins = list(range(0, length - tile + 1, stride))
    if origins[-1] + tile < length:
        origins.append(length - tile)
    return origins


def scan(
    model: Any,
    photo: ImageSource,
    tile: int | None = None,
    stride: int | None = None,
    threshold: float = 0.5,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    batch_size: int = 64,
    keep_image: bool = True,
    progress: Any = None,
    max_tiles: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ScanResult:
    """Scans one photo with a model (path or Predictor); returns the tile grid and summary.

    ``max_tiles`` refuses a photo and tiling that would make more tiles (LimitExceeded),
    before any tile is classified; ``should_stop`` is asked between batches, and a True
    ends the scan with Cancelled (the server's client has gone).
    """
    started = time.perf_counter()
    predictor = model if isinstance(model, Predictor) else load(model)
    tile, stride = scan_geometry(predictor, tile, stride)
    settings.THRESHOLD.check(threshold)
    scale = predictor.input_size / tile

    def scaled(w: int, h: int) -> tuple[int, int]:
        return max(1, round(w * scale)), max(1, round(h * scale))

    photo_pixels, (width, height) = read_for_shrinking(photo, scaled, max_pixels)
    xs, ys = tile_origins(width, tile, stride), tile_origins(height, tile, stride)
    count = len(xs) * len(ys)
    limit = MAX_TILES if max_tiles is None else max_tiles
    if count > limit:
        raise LimitExceeded(f"{width}x{height} px at tile {tile} and stride {stride} makes {count:,} tiles, over the "
                            f"limit of {limit:,} per photo: choose a larger stride or tile")
    boxes = [(x, y, min(tile, width), min(tile, height)) for y in ys for x in xs]
    grid = [(row, col) for row in range(len(ys)) for col in range(len(xs))]

    size = predictor.input_size
    pixels = resize_pixels(photo_pixels, *scaled(width, height))
    probabilities = np.empty(len(boxes), np.float32)
    for start in range(0, len(boxes), batch_size):
        if should_stop is not None and should_stop():
            raise Cancelled(f"scan stopped after {start} of {len(boxes)} tiles")
        chunk = boxes[start : start + batch_size]
        batch = np.stack([_crop(pixels, box, scale, size) for box in chunk])
        probabilities[start : start + len(chunk)] = predictor.crack_probability(batch)
        if progress is not None:
            progress.update(len(chunk))
    positive, negative = predictor.info.positive_class, predictor.info.negative_class
    tiles = [Tile(row, col, x, y, w, h, float(p), positive if p >= threshold else negative)
             for (row, col), (x, y, w, h), p in zip(grid, boxes, probabilities)]
    summary = {
        "photo": _name(photo),
        "width": width,
        "height": height,
        "tile": tile,
        "stride": stride,
        "threshold": threshold,
        "tiles": len(tiles),
        "rows": len(ys),
        "cols": len(xs),
        "cracked_tiles": int(np.sum(probabilities >= threshold)),
        "cracked_area_fraction": cracked_area_fraction(tiles, width, height, positive),
        "max_crack_probability": float(probabilities.max()) if len(probabilities) else 0.0,
        "model": str(predictor.path) if predictor.path else None,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return ScanResult(summary["photo"], width, height, tiles, summary, photo_pixels if keep_image else None)


def scan_geometry(predictor: Any, tile: int | None, stride: int | None) -> tuple[int, int]:
    """The tile side and stride a scan uses: the model's patch size and no overlap unless set,
    checked by the same settings as the CLI's flags and the server's query."""
    tile = settings.TILE.check(predictor.info.patch_size if tile is None else tile)
    return tile, settings.STRIDE.check(tile if stride is None else stride)


def _crop(pixels: np.ndarray, box: tuple[int, int, int, int], scale: float, size: int) -> np.ndarray:
    x, y, w, h = box
    crop_w, crop_h = max(1, round(w * scale)), max(1, round(h * scale))
    sx = min(round(x * scale), max(0, pixels.shape[1] - crop_w))
    sy = min(round(y * scale), max(0, pixels.shape[0] - crop_h))
    crop = pixels[sy : sy + crop_h, sx : sx + crop_w]
    if crop.shape[:2] == (size, size):  # every whole tile: a view, no copy
        return crop
    # A photo thinner than one tile: its whole short side becomes the tile.
    return resize_pixels(crop, size, size)


def cracked_area_fraction(tiles: Sequence[Tile], width: int, height: int, positive: str) -> float:
    """Share of the photo covered by at least one cracked tile (overlaps counted once)."""
    cell = 8  # px per mask cell: exact enough, and small for 50-megapixel photos
    mask = np.zeros((-(-height // cell), -(-width // cell)), bool)
    for t in tiles:
        if t.label == positive:
            mask[t.y // cell : -(-(t.y + t.height) // cell), t.x // cell : -(-(t.x + t.width) // cell)] = True
    return float(mask.mean()) if mask.size else 0.0


def draw_overlay(pixels: np.ndarray, width: int, height: int, tiles: Sequence[Tile], summary: dict[str, Any],
                 max_side: int) -> Image.Image:
    """The photo, cracked tiles shaded red by crack probability and outlined, and below it a
    legend strip: below, not on the photo, where it would hide cracks on a small photo.
    ``pixels`` may hold the photo at a reduced size; tiles are in the photo's ``width`` x
    ``height``."""
    factor = min(1.0, max_side / max(width, height))
    base = Image.fromarray(photo_at(pixels, width, height, factor)).convert("RGBA")
    shade = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(shade)
    threshold = summary["threshold"]
    for t in tiles:
        if t.crack_probability < threshold:
            continue
        box = (t.x * factor, t.y * factor, (t.x + t.width) * factor - 1, (t.y + t.height) * factor - 1)
        draw.rectangle(box, fill=(*CRACK_RGB, _shade_alpha(t.crack_probability, threshold)), outline=(255, 40, 40, 230),
                       width=2)
    photo = Image.alpha_composite(base, shade).convert("RGB")
    return _with_legend_strip(photo, summary)


CRACK_RGB = (230, 30, 30)


def photo_at(pixels: np.ndarray, width: int, height: int, factor: float) -> np.ndarray:
    """The photo's pixels at ``factor`` of its true ``width`` x ``height``."""
    return resize_pixels(pixels, max(1, round(width * factor)), max(1, round(height * factor)))


def _shade_alpha(probability: float, threshold: float) -> int:
    strength = (probability - threshold) / (1 - threshold)
    return int(35 + 85 * strength)


def _with_legend_strip(photo: Image.Image, summary: dict[str, Any]) -> Image.Image:
    """The photo with a white strip below it: the figures and the shading's colour ramp,
    with text sized to the photo's width so that it reads the same at any size."""
    font_size = max(11, min(28, photo.width // 45))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    pad = max(4, font_size // 2)
    threshold = summary["threshold"]
    lines = [
        f"cracked tiles: {summary['cracked_tiles']} of {summary['tiles']} "
        f"({100 * summary['cracked_area_fraction']:.1f}% of area); highest crack probability "
        f"{summary['max_crack_probability']:.2f}",
        f"shading: crack probability from {threshold:.2f} (light) to 1.00 (dark)",
    ]
    ramp_h = font_size
    strip_h = len(lines) * (font_size + pad) + ramp_h + 3 * pad
    composed = Image.new("RGB", (photo.width, photo.height + strip_h), (255, 255, 255))
    composed.paste(photo, (0, 0))
    draw = ImageDraw.Draw(composed)
    y = photo.height + pad
    for line in lines:
        draw.text((pad, y), line, fill=(0, 0, 0), font=font)
        y += font_size + pad
    ramp_w = max(1, min(photo.width - 2 * pad, 40 * font_size))
    for i in range(ramp_w):
        alpha = _shade_alpha(threshold + (1 - threshold) * i / max(1, ramp_w - 1), threshold) / 255
        colour = tuple(int(255 * (1 - alpha) + c * alpha) for c in CRACK_RGB)
        draw.line((pad + i, y, pad + i, y + ramp_h), fill=colour)
    draw.rectangle((pad, y, pad + ramp_w, y + ramp_h), outline=(0, 0, 0))
    return composed


def _name(photo: Any) -> str:
    if isinstance(photo, (str, os.PathLike)):
        return str(photo)
    return getattr(photo, "filename", None) or "photo"

