"""Tile truth from pixel crack masks: which tiles of a photo are cracks, clear, or neither.

A mask is an image the size of its photo, at the photo's path in a folder of its own; any
non-black pixel is crack. A set may mark pixels to ignore with one value (a drone set marks
formwork joints 128): ``--ignore-value``, or ``{"ignore_value": 128}`` in a ``masks.json``
beside the masks. Ignored pixels count neither way. A tile is a crack when at least
CRACK_MIN_FRACTION of its other pixels are crack and clear when none are; a tile in between
(a crack grazing its corner), or all ignored, is neither and is left out of every count,
because calling it either way would grade the model on a coin toss.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from .images import ImageReadError, list_image_files, read_mask_values
from .errors import CrackscanError

CRACK_MIN_FRACTION = 0.005
CRACK, CLEAR, UNSURE = 1, 0, -1


@dataclasses.dataclass(frozen=True)
class MaskedPhoto:
    photo: Path
    mask: Path
    # The photo's path below the photos' root, without its suffix: where its outputs go
    # (photos of the same name in two folders must not share an overlay).
    relative: Path


def pair_with_masks(photos: str | os.PathLike | Sequence[str | os.PathLike], masks: str | os.PathLike
                    ) -> tuple[list[MaskedPhoto], list[tuple[str, str]]]:
    """Each photo with its mask: the mask at the photo's path below the photos' root, under
    ``masks`` (photos/north/a.jpg -> masks/north/a.*); in a flat masks folder, masks/a.*
    when no other photo is named a. Photos without a mask, or with two (a.png and a.jpg),
    are returned as (photo, reason) to report, not dropped silently."""
    masks = Path(masks)
    if not masks.is_dir():
        raise CrackscanError(f"masks folder not found: {masks}")
    sources = [photos] if isinstance(photos, (str, os.PathLike)) else list(photos)
    found = list_image_files(sources)
    if not found:
        raise CrackscanError(f"no photos found in {' '.join(map(str, sources))}")
    by_place: dict[tuple[str, ...], list[Path]] = {}
    for mask in list_image_files([masks]):
        by_place.setdefault(mask.relative_to(masks).with_suffix("").parts, []).append(mask)
    absolute = [Path(os.path.abspath(photo)) for photo in found]
    # The photos' root: the folder named, or the photos' common folder.
    named = [Path(os.path.abspath(source)) for source in sources]
    root = named[0] if len(named) == 1 and named[0].is_dir() else \
        Path(os.path.commonpath([str(path.parent) for path in absolute]))
    stems = Counter(photo.stem for photo in found)
    paired, missing = [], []
    for photo, full in zip(found, absolute):
        relative = full.relative_to(root).with_suffix("")
        candidates = by_place.get(relative.parts)
        if candidates is None and len(relative.parts) > 1:
            flat = by_place.get((photo.stem,))
            if flat is not None and stems[photo.stem] > 1:
                missing.append((str(photo), f"{flat[0]} could be the mask of {stems[photo.stem]} photos named "
                                            f"{photo.stem}: put each photo's mask at its own path, "
                                            f"{masks / relative}.png"))
                continue
            candidates = flat
        if candidates is None:
            missing.append((str(photo), f"no mask {masks / relative}.* (masks are matched by their path below the "
                                        "masks folder)"))
        elif len(candidates) > 1:
            missing.append((str(photo), f"two masks match it ({', '.join(str(c) for c in candidates)}): keep one"))
        else:
            paired.append(MaskedPhoto(photo, candidates[0], relative))
    if not paired:
        raise CrackscanError(f"none of the {len(found)} photos has a mask at its path in {masks}")
    return paired, missing


MASKS_SETTINGS_FILE = "masks.json"


def ignore_value_of(masks: str | os.PathLike, given: int | None = None) -> int | None:
    """The mask value to ignore: ``given``, else the masks folder's masks.json, else none."""
    if given is not None:
        return _checked_ignore_value(given, "--ignore-value")
    path = Path(masks) / MASKS_SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
        value = values.get("ignore_value") if isinstance(values, dict) else None
    except (OSError, ValueError) as error:
        raise CrackscanError(f"{path} is damaged ({error}): it should read like {{\"ignore_value\": 128}}") from None
    return None if value is None else _checked_ignore_value(value, str(path))


def _checked_ignore_value(value: object, source: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 255:
        raise CrackscanError(f"{source}: the ignored mask value must be a whole number from 1 to 255, got {value!r}")
    return value


def read_mask_parts(path: Path, width: int, height: int, ignore_value: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """A mask's crack pixels and, with ``ignore_value``, its ignored pixels, as booleans; the
    mask must be the photo's size."""
    values = read_mask_values(path)
    if values.shape != (height, width):
        raise ImageReadError(str(path), f"mask is {values.shape[1]}x{values.shape[0]} px, its photo "
                                        f"{width}x{height}", "unreadable")
    if ignore_value is None:
        return values > 0, None
    ignored = values == ignore_value
    return (values > 0) & ~ignored, ignored


def read_mask(path: Path, width: int, height: int, ignore_value: int | None = None) -> np.ndarray:
    """The crack pixels of a mask as booleans (any non-black, non-transparent, non-ignored pixel)."""
    return read_mask_parts(path, width, height, ignore_value)[0]


def tile_truth(mask: np.ndarray, boxes: Sequence[tuple[int, int, int, int]], ignored: np.ndarray | None = None
               ) -> np.ndarray:
    """CRACK, CLEAR or UNSURE for each (x, y, width, height) box, from a boolean crack mask
    and, where pixels are ignored, the boolean mask of them (they count neither way)."""
    crack_sums = _summed_area(mask)
    ignored_sums = _summed_area(ignored) if ignored is not None else None
    truth = np.empty(len(boxes), np.int8)
    for index, (x, y, w, h) in enumerate(boxes):
        crack = _box_sum(crack_sums, x, y, w, h)
        counted = w * h - (_box_sum(ignored_sums, x, y, w, h) if ignored_sums is not None else 0)
        if counted == 0:
            truth[index] = UNSURE
        else:
            truth[index] = CLEAR if crack == 0 else CRACK if crack >= CRACK_MIN_FRACTION * counted else UNSURE
    return truth


def _summed_area(mask: np.ndarray) -> np.ndarray:
    """A summed-area table: every box's sum in constant time, whatever the tile count."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    return table


def _box_sum(table: np.ndarray, x: int, y: int, w: int, h: int) -> int:
    return int(table[y + h, x + w] - table[y, x + w] - table[y + h, x] + table[y, x])
