"""A scanned photo's result: one typed object with optional parts, and its one writer.

``PhotoResult`` holds the tile grid and a typed ``PhotoSummary``; later stages add their
parts (a pixel crack mask, measured cracks) as optional fields, so a survey, the server, the
CLI and the overlay's legend all read the same fields, and a new figure is added once.
A photo's folder holds TILES_FILE, OVERLAY_FILE and SUMMARY_FILE, the summary last: a
complete summary.json marks the photo as done when a survey resumes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import CrackscanError
from ..files import atomic_open, atomic_path, write_text
from ..measure.cracks import CRACK_FIELDS
from .vectors import write_vectors
from .overlay import OVERLAY_JPEG_QUALITY, OVERLAY_MAX_SIDE, draw_crack_pixels, draw_tile_map

TILES_FILE = "tiles.csv"
# JPEG: a photo's crack map is a photo, and PNG would cost more than the scan itself with a
# small model (0.25 s for a 1600 px map, 6x the bytes).
OVERLAY_FILE = "overlay.jpg"
SUMMARY_FILE = "summary.json"
# A segmenter's scan: each pixel's crack probability x 255, at the photo's size (PNG: exact).
MASK_FILE = "mask.png"
# A segmenter's scan: each measured crack, a row of cracks.csv, and with its polylines in cracks.json.
CRACKS_FILE = "cracks.csv"
CRACK_POLYLINES_FILE = "cracks.json"
# The same cracks as vectors (photo.vectors, which names them): CRACK_VECTORS_FILE (GeoJSON in the
# photo's pixels), CRACK_DXF_FILE (for CAD), CRACK_MAP_FILE (GeoJSON in longitude and latitude,
# where the photo is georeferenced).
RESULT_FILES = (TILES_FILE, OVERLAY_FILE, SUMMARY_FILE)  # in the order they are written
# crack_pixel_share: a segmenter's share of the tile's pixels at or over the threshold (empty
# for a classifier, which has no pixels to count).
TILE_FIELDS = ("row", "col", "x", "y", "width", "height", "crack_probability", "label", "verdict",
               "crack_pixel_share")
VERDICTS = ("crack", "clear")  # the same words whatever the model's class names


@dataclasses.dataclass(frozen=True)
class Tile:
    row: int  # the tile's place in the grid, counted from the top left
    col: int
    x: int
    y: int
    width: int
    height: int
    crack_probability: float
    label: str  # the model's class name
    verdict: str = ""  # crack or clear, beside the class name
    crack_pixel_share: float | None = None

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height

    def to_dict(self) -> dict[str, Any]:
        """The tile as the server's answer and the page read it (TILE_FIELDS, by name)."""
        return {name: getattr(self, name) for name in TILE_FIELDS}


def photo_verdict(values: dict[str, Any]) -> str:
    """The one rule for whether a photo has a crack, which summary.csv, the report, the GeoJSON,
    the page, the CLI's line and /v1/scan all read: where cracks were measured (a segmenter's
    scan), a photo has a crack when at least one crack was measured, since a speck of crack
    pixels over the threshold is no crack; a classifier's photo when a tile reaches the threshold."""
    cracks = _count(values.get("cracks"))
    if cracks is not None:
        return VERDICTS[0] if cracks > 0 else VERDICTS[1]
    return VERDICTS[0] if (_count(values.get("cracked_tiles")) or 0) > 0 else VERDICTS[1]


def _count(value: Any) -> int | None:
    """A count as summary.json holds it; None when it is missing or not a count (a damaged file)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def plural(count: Any, noun: str) -> str:
    """'1 crack', '3 cracks'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclasses.dataclass
class PhotoSummary:
    """A scanned photo's figures: what summary.json, summary.csv, the server's answer, the
    CLI's line and the overlay's legend all show."""

    photo: str
    width: int
    height: int
    tile: int
    stride: int
    threshold: float
    tiles: int
    rows: int
    cols: int
    cracked_tiles: int
    cracked_area_fraction: float
    max_crack_probability: float
    model: str | None
    seconds: float
    # In a survey: the photo's folder of results, relative to the survey folder, and what the
    # result was made from (the photo file's identity and the model's hash), which resuming compares.
    outputs: str | None = None
    recorded: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return photo_verdict({**self.recorded, "cracked_tiles": self.cracked_tiles})

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "recorded"}
        if self.outputs is None:
            del values["outputs"]
        return {**values, **self.recorded, "verdict": self.verdict}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PhotoSummary":
        """A summary.json read back; refused (ValueError) when it lacks a figure."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"recorded"}
        missing = sorted(fields - {"outputs"} - set(values))
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        # The verdict is not read back but decided again, by the one rule (photo_verdict).
        return cls(**{k: v for k, v in values.items() if k in fields},
                   recorded={k: v for k, v in values.items() if k not in fields and k != "verdict"})

    def record(self, values: dict[str, Any]) -> None:
        """Sets figures by name, as a dict's update would; names that are no field are kept
        in ``recorded`` (and written to summary.json beside the figures)."""
        fields = {f.name for f in dataclasses.fields(self)} - {"recorded"}
        for key, value in values.items():
            if key == "verdict":  # decided by photo_verdict, never set
                continue
            if key in fields:
                setattr(self, key, value)
            else:
                self.recorded[key] = value

    def legend(self) -> list[str]:
        if "crack_pixels" in self.recorded:
            lines = [f"crack pixels: {100 * self.cracked_area_fraction:.2f}% of the photo; tiles with cracks: "
                     f"{self.cracked_tiles} of {self.tiles}; highest crack probability {self.max_crack_probability:.2f}"]
            r = self.recorded
            if "cracks" in r:
                mm = r.get("mm_per_pixel")
                length = f"{r['total_length_mm'] / 1000:.2f} m" if mm else f"{r['total_length_px']:.0f} px"
                widest = (f"{r['max_width_mm']:.2f} mm" if mm else f"{r['max_width_px']:.1f} px") \
                    if r.get("max_width_px") is not None else "-"
                lines.append(f"{plural(r['cracks'], 'crack')}, {length} long in all, widest {widest}; scale: "
                             + (f"{mm:.3g} mm/px" if mm else "none (pixels only)"))
            return lines
        return [f"cracked tiles: {self.cracked_tiles} of {self.tiles} ({100 * self.cracked_area_fraction:.1f}% of "
                f"area); highest crack probability {self.max_crack_probability:.2f}"]

    def line(self, folder: str | os.PathLike | None = None) -> str:
        """The photo in one line, as a survey prints it (``folder``: where its results are)."""
        cracks = self.recorded.get("cracks")
        if cracks is not None:  # a segmenter's: its verdict is its measured cracks
            found = (f"{plural(cracks, 'crack')} measured, {100 * self.cracked_area_fraction:.2f}% crack pixels, "
                     f"highest p {self.max_crack_probability:.2f}")
        else:
            found = (f"{self.cracked_tiles} of {self.tiles} tiles cracked ({100 * self.cracked_area_fraction:.1f}% "
                     f"of area, highest p {self.max_crack_probability:.2f})")
        return f"{self.photo}: {self.verdict}, {found} in {self.seconds:.2f} s -> {folder or self.outputs}"


@dataclasses.dataclass
class PhotoResult:
    """One scanned photo: its tiles and summary, and the pixels as decoded for the scan
    (a large photo scanned by a small model may be held at 1/2 to 1/8 of its size;
    ``width`` and ``height`` are its true size). ``mask`` and ``cracks`` are the parts of
    the stages to come (a pixel crack map, measured cracks): None until a stage adds them."""

    source: str
    width: int
    height: int
    tiles: list[Tile]
    summary: PhotoSummary
    pixels: np.ndarray | None = dataclasses.field(default=None, repr=False)
    mask: np.ndarray | None = dataclasses.field(default=None, repr=False)
    cracks: list[Any] | None = None

    @property
    def image(self) -> Image.Image | None:
        return None if self.pixels is None else Image.fromarray(self.pixels)

    def overlay(self, max_side: int = OVERLAY_MAX_SIDE) -> Image.Image:
        if self.pixels is None:
            raise CrackscanError("the photo is no longer held: scan again with keep_image=True")
        if self.mask is not None:
            return draw_crack_pixels(self.pixels, self.width, self.height, self.mask, self.summary.threshold,
                                     self.summary.legend(), max_side, self.cracks or [])
        return draw_tile_map(self.pixels, self.width, self.height, [t.box for t in self.tiles],
                             [t.crack_probability for t in self.tiles], self.summary.threshold,
                             self.summary.legend(), max_side)

    def write(self, folder: str | os.PathLike) -> Path:
        """Writes RESULT_FILES into ``folder``, each atomically, the summary last."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(folder / TILES_FILE) as handle:
            writer = csv.writer(handle)
            writer.writerow(TILE_FIELDS)
            for t in self.tiles:
                writer.writerow([t.row, t.col, t.x, t.y, t.width, t.height, f"{t.crack_probability:.6f}", t.label,
                                 t.verdict, "" if t.crack_pixel_share is None else f"{t.crack_pixel_share:.6f}"])
        if self.mask is not None:
            with atomic_path(folder / MASK_FILE) as temporary:
                Image.fromarray(self.mask).save(temporary, format="PNG", compress_level=1)
        if self.cracks is not None:
            with atomic_open(folder / CRACKS_FILE) as handle:
                writer = csv.DictWriter(handle, fieldnames=list(CRACK_FIELDS))
                writer.writeheader()
                writer.writerows(crack.row() for crack in self.cracks)
            write_text(folder / CRACK_POLYLINES_FILE, json.dumps(
                {"photo": self.source, "width": self.width, "height": self.height,
                 "mm_per_pixel": self.summary.recorded.get("mm_per_pixel"),
                 "scale_source": self.summary.recorded.get("scale_source"),
                 "cracks": [crack.to_dict() for crack in self.cracks]}, separators=(",", ":")) + "\n")
            write_vectors(folder, self.cracks, self.source, self.width, self.height, self.summary.recorded)
        with atomic_path(folder / OVERLAY_FILE) as temporary:
            self.overlay().save(temporary, quality=OVERLAY_JPEG_QUALITY)
        write_text(folder / SUMMARY_FILE, json.dumps(self.summary.to_dict(), indent=2) + "\n")
        return folder


def read_tiles(folder: Path) -> list[Tile]:
    """A photo folder's tiles.csv read back."""
    with open(folder / TILES_FILE, newline="") as handle:
        return [Tile(int(r["row"]), int(r["col"]), int(r["x"]), int(r["y"]), int(r["width"]), int(r["height"]),
                     float(r["crack_probability"]), r["label"], r.get("verdict") or "",
                     float(r["crack_pixel_share"]) if r.get("crack_pixel_share") else None)
                for r in csv.DictReader(handle)]
