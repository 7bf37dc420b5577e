"""Site labels: tiles of a user's own photos, labelled crack or clear, as an ordinary dataset.

A labels folder is a class-folder patch dataset (``Positive/`` and ``Negative/`` holding
tile crops at their photo's pixels, as PNG) plus ``labels.csv``, which says for each crop
the photo and box it came from, its label, where the label came from (a mask, the web
page, a hand) and when. Anything that takes a dataset takes it; ``crackscan adapt`` is
what it is made for. Crops are written before labels.csv, each atomically, so the folder
is always a readable dataset.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..images import IMAGE_SUFFIXES, ImageReadError, read_pixels, resize_pixels
from ..datasets import Sample, find_dataset_for_model
from ..errors import CrackscanError
from ..files import TEXT_ENCODING, atomic_open, atomic_path, remove_partials, write_bytes
from ..masks import CLEAR, CRACK, ignore_value_of, pair_with_masks, read_mask_parts, tile_truth
from ..photo.tiling import tile_origins

LABELS_FILE = "labels.csv"
PHOTOS_FOLDER = ".photos"
FIELDS = ("file", "photo", "x", "y", "width", "height", "label", "source", "made")
DEFAULT_TILE = 227  # the Özgenel patch side, and so the built-in models' patch scale
DEFAULT_CLASSES = ("Negative", "Positive")  # (clear, crack)
CROP_NAME = re.compile(r"-x\d+-y\d+-\d+x\d+-[0-9a-f]{10}\.png$")  # the names LabelSet.add gives crops


@dataclasses.dataclass(frozen=True)
class Label:
    file: str  # the crop, relative to the labels folder
    photo: str
    x: int
    y: int
    width: int
    height: int
    label: str
    source: str
    made: str

    @property
    def key(self) -> tuple:
        return self.photo, self.x, self.y, self.width, self.height


class LabelSet:
    """The labels of one folder: read, added to (a tile labelled again replaces its earlier
    label), and saved."""

    def __init__(self, folder: str | os.PathLike, classes: Sequence[str] = DEFAULT_CLASSES):
        self.folder = Path(folder)
        self.clear_class, self.crack_class = classes
        self.labels: dict[tuple, Label] = {}
        for folder in (self.folder, self.folder / self.clear_class, self.folder / self.crack_class,
                       self.folder / PHOTOS_FOLDER):
            remove_partials(folder, older_than_s=5.0)  # a crop whose writer was killed (kill -9) mid-write
        path = self.folder / LABELS_FILE
        if path.is_file():
            for label in self._read(path):
                self.labels[label.key] = label

    def _read(self, path: Path) -> list[Label]:
        """labels.csv, checked: a damaged file is named and refused, never half read."""
        def damaged(why: str) -> CrackscanError:
            return CrackscanError(f"{path} is damaged ({why}): fix or remove it")

        read = []
        try:
            with open(path, newline="", **TEXT_ENCODING) as handle:
                reader = csv.DictReader(handle)
                if tuple(reader.fieldnames or ()) != FIELDS:
                    raise damaged(f"its header is not {','.join(FIELDS)}")
                for number, row in enumerate(reader, start=2):
                    try:
                        label = Label(**{**row, **{k: int(row[k]) for k in ("x", "y", "width", "height")}})
                    except (TypeError, ValueError):
                        raise damaged(f"line {number}") from None
                    crop = Path(label.file)
                    if crop.is_absolute() or ".." in crop.parts or not label.label:
                        raise damaged(f"line {number} names the crop {label.file!r:.80} as {label.label!r:.40}")
                    read.append(label)
        except csv.Error as error:
            raise damaged(str(error)) from None
        except OSError as error:
            raise CrackscanError(f"cannot read {path}: {error.strerror or error}") from None
        return read

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        counted = {self.crack_class: 0, self.clear_class: 0}
        for label in self.labels.values():
            counted[label.label] = counted.get(label.label, 0) + 1
        return counted

    def add(self, crop: np.ndarray, photo: str, box: tuple[int, int, int, int], crack: bool, source: str) -> Label:
        x, y, w, h = (int(v) for v in box)
        name = self.crack_class if crack else self.clear_class
        digest = hashlib.sha256(f"{photo}|{x}|{y}|{w}|{h}".encode("utf-8", "surrogateescape")).hexdigest()[:10]
        relative = f"{name}/{Path(photo).stem[:60]}-x{x}-y{y}-{w}x{h}-{digest}.png"
        with atomic_path(self.folder / relative) as temporary:
            Image.fromarray(np.ascontiguousarray(crop)).save(temporary, compress_level=1)
        earlier = self.labels.get((photo, x, y, w, h))
        if earlier is not None and earlier.file != relative:
            (self.folder / earlier.file).unlink(missing_ok=True)
        label = Label(relative, photo, x, y, w, h, name, source, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self.labels[label.key] = label
        return label

    def keep_photo(self, content: bytes, name: str) -> str:
        """Keeps a photo whose tiles are labelled (the web page's uploads) in the folder's
        .photos/, named by its content, and returns its path relative to the folder, which
        labels.csv records: adapt samples the photo's other tiles to learn the site's crack
        share. A dot folder is no class folder, so the labels stay an ordinary dataset."""
        suffix = Path(name).suffix.lower()
        relative = f"{PHOTOS_FOLDER}/{hashlib.sha256(content).hexdigest()[:16]}{suffix if suffix in IMAGE_SUFFIXES else ''}"
        if not (self.folder / relative).is_file():
            write_bytes(self.folder / relative, content)
        return relative

    def orphans(self) -> list[Path]:
        """Crops crackscan wrote that labels.csv does not list: what an interrupted ``label`` or
        page save leaves (crops are written before labels.csv). Files of any other name are
        the user's and never counted as such."""
        listed = {self.folder / label.file for label in self.labels.values()}
        return [path for name in (self.clear_class, self.crack_class) if (self.folder / name).is_dir()
                for path in sorted((self.folder / name).iterdir()) if CROP_NAME.search(path.name) and path not in listed]

    def save(self) -> Path:
        """labels.csv, and the folder made to hold exactly what it lists: orphan crops of an
        interrupted earlier write are removed."""
        for orphan in self.orphans():
            orphan.unlink(missing_ok=True)
        with atomic_open(self.folder / LABELS_FILE) as handle:
            writer = csv.writer(handle)
            writer.writerow(FIELDS)
            for label in self.labels.values():
                writer.writerow([getattr(label, field) for field in FIELDS])
        return self.folder / LABELS_FILE


def labelled_samples(folder: str | os.PathLike, class_names: Sequence[str], positive_class: str) -> list[Sample]:
    """A labels folder's tiles in the model's class indices: the crops labels.csv lists (an
    interrupted write's orphans are not labels), or, for a folder without labels.csv, every
    image of its class folders, as any dataset."""
    folder = Path(folder)
    if not (folder / LABELS_FILE).is_file():
        return find_dataset_for_model(folder, class_names, positive_class)[1]
    classes = list(class_names)
    negative = classes[1 - classes.index(positive_class)]
    labels = LabelSet(folder, (negative, positive_class))
    strangers = sorted({label.label for label in labels.labels.values()} - set(classes))
    if strangers:
        raise CrackscanError(f"{folder / LABELS_FILE} labels tiles {', '.join(strangers)}, which the model does not know "
                             f"(its classes: {', '.join(classes)})")
    samples = [Sample(folder / label.file, classes.index(label.label)) for label in labels.labels.values()
               if (folder / label.file).is_file()]
    if not samples:
        raise CrackscanError(f"{folder / LABELS_FILE} lists no tiles that are there")
    return samples


@dataclasses.dataclass
class SiteSample:
    pixels: np.ndarray  # tiles at the model's input size
    photos: int  # how many photos they came from


def unlabelled_site_tiles(folder: str | os.PathLike, size: int, count: int, max_photos: int = 12, seed: int = 0
                          ) -> SiteSample:
    """Up to ``count`` tiles, at random, of the photos ``labels.csv`` names (those still on
    disk, at most ``max_photos`` of them) that no label covers, resized to ``size``: the site
    as it is, for what the labels cannot say (how many of its tiles are cracks). Tiles are
    the labels' size on the scan grid. A folder without labels.csv gives none."""
    empty = SiteSample(np.zeros((0, size, size, 3), np.uint8), 0)
    folder = Path(folder)
    if not (folder / LABELS_FILE).is_file():
        return empty
    labels = LabelSet(folder).labels.values()
    sides = [label.width for label in labels if label.width == label.height]
    if not sides:
        return empty
    tile = max(set(sides), key=sides.count)
    taken: dict[Path, set[tuple[int, int]]] = {}
    for label in labels:
        path = Path(label.photo) if Path(label.photo).is_absolute() else folder / label.photo
        taken.setdefault(path, set()).add((label.x, label.y))
    rng = np.random.default_rng(seed)
    photos = [path for path in sorted(taken) if path.is_file()]
    photos = [photos[i] for i in rng.permutation(len(photos))[:max_photos]]
    crops, used = [], 0
    per_photo = -(-count // max(1, len(photos)))
    for path in photos:
        try:
            pixels = read_pixels(path, name=str(path))
        except ImageReadError:
            continue
        height, width = pixels.shape[:2]
        boxes = [(x, y) for y in tile_origins(height, tile, tile) for x in tile_origins(width, tile, tile)
                 if (x, y) not in taken[path]]
        for i in rng.permutation(len(boxes))[:per_photo]:
            x, y = boxes[i]
            crops.append(resize_pixels(pixels[y : y + tile, x : x + tile], size, size))
        used += 1
    if not crops:
        return empty
    return SiteSample(np.stack(crops[:count]), used)


@dataclasses.dataclass
class LabelsFromMasks:
    labels: LabelSet
    added: dict[str, int]
    available: dict[str, int]
    skipped: list[tuple[str, str]]


def labels_from_masks(
    photos: str | os.PathLike | Sequence[str | os.PathLike],
    masks: str | os.PathLike,
    out: str | os.PathLike,
    per_class: int = 25,
    seed: int = 0,
    tile: int = DEFAULT_TILE,
    force: bool = False,
    ignore_value: int | None = None,
) -> LabelsFromMasks:
    """Labels ``per_class`` crack and ``per_class`` clear tiles, drawn at random (seeded)
    from all the tiles of the photos whose masks say so (masks.tile_truth's rule; tiles in
    between are never drawn). An existing labels folder is added to only with ``force``."""
    if per_class < 1:
        raise CrackscanError(f"per_class must be at least 1, got {per_class}")
    if tile < 8:
        raise CrackscanError(f"tile must be at least 8 px, got {tile}")
    out = Path(out)
    if (out / LABELS_FILE).exists() and not force:
        raise CrackscanError(f"{out} already holds labels: pass --force to add to them")
    pairs, skipped = pair_with_masks(photos, masks)
    ignore_value = ignore_value_of(masks, ignore_value)
    candidates: dict[int, list[tuple[int, tuple[int, int, int, int]]]] = {CRACK: [], CLEAR: []}
    for index, pair in enumerate(pairs):
        try:
            height, width = read_pixels(pair.photo, name=str(pair.photo)).shape[:2]
            boxes = [(x, y, min(tile, width), min(tile, height))
                     for y in tile_origins(height, tile, tile) for x in tile_origins(width, tile, tile)]
            crack, ignored = read_mask_parts(pair.mask, width, height, ignore_value)
            truth = tile_truth(crack, boxes, ignored)
        except ImageReadError as error:
            skipped.append((str(pair.photo), error.reason))
            continue
        for box, truth_of_tile in zip(boxes, truth):
            if truth_of_tile in candidates:
                candidates[int(truth_of_tile)].append((index, box))
    rng = np.random.default_rng(seed)
    chosen = {kind: [found[i] for i in sorted(rng.permutation(len(found))[:per_class])]
              for kind, found in candidates.items()}
    labels = LabelSet(out)
    by_photo: dict[int, list[tuple[int, tuple[int, int, int, int]]]] = {}
    for kind, picked in chosen.items():
        for index, box in picked:
            by_photo.setdefault(index, []).append((kind, box))
    for index, wanted in sorted(by_photo.items()):
        pair = pairs[index]
        pixels = read_pixels(pair.photo, name=str(pair.photo))
        for kind, (x, y, w, h) in wanted:
            labels.add(pixels[y : y + h, x : x + w], str(pair.photo.absolute()), (x, y, w, h), kind == CRACK,
                       f"mask:{pair.mask}")
    labels.save()
    return LabelsFromMasks(labels, {labels.crack_class: len(chosen[CRACK]), labels.clear_class: len(chosen[CLEAR])},
                           {labels.crack_class: len(candidates[CRACK]), labels.clear_class: len(candidates[CLEAR])},
                           skipped)
