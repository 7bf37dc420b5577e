"""Tile truth from pixel crack masks: which tiles of a photo are cracks, clear, or neither.

A mask is an image the size of its photo, with the same file stem, in a folder of its own;
any non-black pixel is crack. A tile is a crack when at least CRACK_MIN_FRACTION of its
pixels are crack and clear when none are; a tile in between (a crack grazing its corner)
is neither and is left out of every count, because calling it either way would grade the
model on a coin toss.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from ..images import ImageReadError, list_image_files, read_mask_values
from ..errors import CrackscanError

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


def read_mask(path: Path, width: int, height: int) -> np.ndarray:
    """The crack pixels of a mask as booleans (any non-black, non-transparent pixel); the
    mask must be the photo's size."""
    values = read_mask_values(path)
    if values.shape != (height, width):
        raise ImageReadError(str(path), f"mask is {values.shape[1]}x{values.shape[0]} px, its photo "
                                        f"{width}x{height}", "unreadable")
    return values > 0


def tile_truth(mask: np.ndarray, boxes: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """CRACK, CLEAR or UNSURE for each (x, y, width, height) box, from a boolean mask."""
    # A summed-area table answers every box in constant time, whatever the tile count.
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    truth = np.empty(len(boxes), np.int8)
    for index, (x, y, w, h) in enumerate(boxes):
        crack = table[y + h, x + w] - table[y, x + w] - table[y + h, x] + table[y, x]
        truth[index] = CLEAR if crack == 0 else CRACK if crack >= CRACK_MIN_FRACTION * w * h else UNSURE
    return truth
