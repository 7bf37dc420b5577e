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
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .data import DEFAULT_MAX_PIXELS, ImageReadError, ImageSource, list_image_files, read_pixels, resize_pixels
from .errors import CrackscanError

OVERLAY_MAX_SIDE = 1600  # overlays are for reading at a glance, not for pixel peeping
TILE_FIELDS = ("x", "y", "width", "height", "crack_probability", "label")


@dataclasses.dataclass(frozen=True)
class Tile:
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
        return None if self.pixels is None else Image.fromarray(self.pixels)

    def overlay(self, max_side: int = OVERLAY_MAX_SIDE) -> Image.Image:
        if self.pixels is None:
            raise CrackscanError("the photo is no longer held: scan again with keep_image=True")
        return draw_overlay(self.pixels, self.tiles, self.summary, max_side)

    def write(self, folder: str | os.PathLike) -> Path:
        """Writes overlay.png, tiles.csv and summary.json into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "tiles.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(TILE_FIELDS)
            for t in self.tiles:
                writer.writerow([t.x, t.y, t.width, t.height, f"{t.crack_probability:.6f}", t.label])
        self.overlay().save(folder / "overlay.png", compress_level=1)
        # summary.json last: its presence marks the photo as done when a survey resumes.
        (folder / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")
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
) -> ScanResult:
    """Scans one photo with a model (path or Predictor); returns the tile grid and summary."""
    from .predict import Predictor, load

    started = time.perf_counter()
    predictor = model if isinstance(model, Predictor) else load(model)
    tile = int(tile or predictor.info.patch_size)
    stride = int(stride or tile)
    if tile < 16:
        raise CrackscanError(f"tile must be at least 16 px, got {tile}")
    if not 1 <= stride:
        raise CrackscanError(f"stride must be at least 1 px, got {stride}")
    if not 0 < threshold < 1:
        raise CrackscanError(f"threshold must be between 0 and 1, got {threshold}")
    photo_pixels = read_pixels(photo, max_pixels)
    height, width = photo_pixels.shape[:2]
    xs, ys = tile_origins(width, tile, stride), tile_origins(height, tile, stride)
    boxes = [(x, y, min(tile, width), min(tile, height)) for y in ys for x in xs]
    if len(boxes) > 1_000_000:
        raise CrackscanError(f"{len(boxes):,} tiles: choose a larger --stride")

    size = predictor.input_size
    scale = size / tile
    pixels = resize_pixels(photo_pixels, max(1, round(width * scale)), max(1, round(height * scale)))
    probabilities = np.empty(len(boxes), np.float32)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        batch = np.stack([_crop(pixels, box, scale, size) for box in chunk])
        probabilities[start : start + len(chunk)] = predictor.crack_probability(batch)
        if progress is not None:
            progress.update(len(chunk))
    positive, names = predictor.info.positive_class, predictor.class_names
    negative = next(n for n in names if n != positive)
    tiles = [Tile(x, y, w, h, float(p), positive if p >= threshold else negative)
             for (x, y, w, h), p in zip(boxes, probabilities)]
    summary = {
        "photo": _name(photo),
        "width": width,
        "height": height,
        "tile": tile,
        "stride": stride,
        "threshold": threshold,
        "tiles": len(tiles),
        "cracked_tiles": int(np.sum(probabilities >= threshold)),
        "cracked_area_fraction": cracked_area_fraction(tiles, width, height, positive),
        "max_crack_probability": float(probabilities.max()) if len(probabilities) else 0.0,
        "model": str(predictor.path) if predictor.path else None,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return ScanResult(summary["photo"], width, height, tiles, summary, photo_pixels if keep_image else None)


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


def draw_overlay(pixels: np.ndarray, tiles: Sequence[Tile], summary: dict[str, Any], max_side: int) -> Image.Image:
    """The photo, cracked tiles shaded red by crack probability and outlined, with a legend."""
    height, width = pixels.shape[:2]
    factor = min(1.0, max_side / max(width, height))
    if factor < 1:
        pixels = resize_pixels(pixels, max(1, round(width * factor)), max(1, round(height * factor)))
    base = Image.fromarray(pixels).convert("RGBA")
    shade = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(shade)
    threshold = summary["threshold"]
    for t in tiles:
        if t.crack_probability < threshold:
            continue
        box = (t.x * factor, t.y * factor, (t.x + t.width) * factor - 1, (t.y + t.height) * factor - 1)
        strength = (t.crack_probability - threshold) / (1 - threshold)
        draw.rectangle(box, fill=(230, 30, 30, int(35 + 85 * strength)), outline=(255, 40, 40, 230), width=2)
    composed = Image.alpha_composite(base, shade)
    _draw_legend(composed, summary)
    return composed.convert("RGB")


def _draw_legend(image: Image.Image, summary: dict[str, Any]) -> None:
    draw = ImageDraw.Draw(image)
    font_size = max(12, image.width // 70)
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    lines = [
        f"cracked tiles: {summary['cracked_tiles']} of {summary['tiles']}"
        f" ({100 * summary['cracked_area_fraction']:.1f}% of area)",
        f"highest crack probability: {summary['max_crack_probability']:.2f}",
    ]
    pad = font_size // 2
    ramp_h = font_size
    text_w = max(draw.textlength(line, font=font) for line in lines)
    box_w = int(text_w + 2 * pad)
    box_h = int(len(lines) * (font_size + pad) + ramp_h + 3 * pad + font_size)
    x0, y0 = pad, image.height - box_h - pad
    draw.rectangle((x0, y0, x0 + box_w, y0 + box_h), fill=(255, 255, 255, 255), outline=(0, 0, 0, 255))
    y = y0 + pad
    for line in lines:
        draw.text((x0 + pad, y), line, fill=(0, 0, 0, 255), font=font)
        y += font_size + pad
    ramp_w = box_w - 2 * pad
    threshold = summary["threshold"]
    for i in range(ramp_w):
        strength = i / max(1, ramp_w - 1)
        alpha = (35 + 85 * strength) / 255
        colour = tuple(int(255 * (1 - alpha) + c * alpha) for c in (230, 30, 30))
        draw.line((x0 + pad + i, y, x0 + pad + i, y + ramp_h), fill=(*colour, 255))
    y += ramp_h + 2
    draw.text((x0 + pad, y), f"crack p {threshold:.2f}", fill=(0, 0, 0, 255), font=font)
    draw.text((x0 + pad + ramp_w - draw.textlength("1.00", font=font), y), "1.00", fill=(0, 0, 0, 255), font=font)


@dataclasses.dataclass
class SurveyOutcome:
    scanned: list[dict[str, Any]]
    resumed: list[dict[str, Any]]
    failed: list[tuple[str, str]]
    summary_csv: Path | None


def output_folder(out: Path, photo: Path, root: Path | None) -> Path:
    """One folder per photo, named after its path below the folder given (stems can repeat)."""
    relative = photo.relative_to(root) if root is not None and root in photo.parents else Path(photo.name)
    return out / "__".join(relative.with_suffix("").parts)


def scan_many(
    model: Any,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    tile: int | None = None,
    stride: int | None = None,
    threshold: float = 0.5,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    force: bool = False,
    progress: bool = False,
    on_failure: Any = None,
) -> SurveyOutcome:
    """Scans photos and folders of photos into ``out``; resumes an interrupted survey.

    A photo whose summary.json exists is not scanned again unless ``force``; an unreadable
    photo is reported through ``on_failure(path, reason)`` and skipped.
    """
    from .predict import Predictor, load
    from .progress import progress_bar

    predictor = model if isinstance(model, Predictor) else load(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[Path, Path]] = []
    for entry in inputs:
        root = Path(entry) if Path(entry).is_dir() else None
        for photo in list_image_files([entry]):
            jobs.append((photo, output_folder(out, photo, root)))
    scanned, resumed, failed = [], [], []
    photos_bar = progress_bar(total=len(jobs), desc="photos", unit="photo", enabled=progress)
    tiles_bar = progress_bar(desc="tiles", unit="tile", enabled=progress)
    for photo, folder in jobs:
        done = folder / "summary.json"
        if done.is_file() and not force:
            resumed.append(json.loads(done.read_text()))
        else:
            try:
                result = scan(predictor, photo, tile, stride, threshold, max_pixels, progress=tiles_bar)
            except ImageReadError as error:
                failed.append((str(photo), error.reason))
                if on_failure is not None:
                    on_failure(str(photo), error.reason)
            else:
                result.summary["photo"] = str(photo)
                result.summary["outputs"] = str(folder)
                result.write(folder)
                scanned.append(result.summary)
        photos_bar.update(1)
    photos_bar.close()
    tiles_bar.close()
    summaries = scanned + resumed
    summary_csv = write_survey_summary(out / "summary.csv", summaries) if summaries else None
    return SurveyOutcome(scanned, resumed, failed, summary_csv)


def write_survey_summary(path: Path, summaries: list[dict[str, Any]]) -> Path:
    fields = ["photo", "cracked_area_fraction", "cracked_tiles", "tiles", "max_crack_probability",
              "width", "height", "seconds", "outputs"]
    ranked = sorted(summaries, key=lambda s: (-s["cracked_area_fraction"], -s["max_crack_probability"], s["photo"]))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(ranked)
    return path


def _name(photo: Any) -> str:
    if isinstance(photo, (str, os.PathLike)):
        return str(photo)
    return getattr(photo, "filename", None) or "photo"

