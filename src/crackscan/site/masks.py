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
from pathlib import Path
from typing import Sequence

import numpy as np

from ..images import ImageReadError, list_image_files, read_pixels
from ..errors import CrackscanError

CRACK_MIN_FRACTION = 0.005
CRACK, CLEAR, UNSURE = 1, 0, -1


@dataclasses.dataclass(frozen=True)
class MaskedPhoto:
    photo: Path
    mask: Path


def pair_with_masks(photos: str | os.PathLike | Sequence[str | os.PathLike], masks: str | os.PathLike
                    ) -> tuple[list[MaskedPhoto], list[tuple[str, str]]]:
    """Each photo with the mask of the same stem in ``masks``; photos without one are
    returned as (photo, reason) to report, not dropped silently."""
    masks = Path(masks)
    if not masks.is_dir():
        raise CrackscanError(f"masks folder not found: {masks}")
    sources = [photos] if isinstance(photos, (str, os.PathLike)) else list(photos)
    found = list_image_files(sources)
    if not found:
        raise CrackscanError(f"no photos found in {' '.join(map(str, sources))}")
    by_stem: dict[str, Path] = {}
    for mask in list_image_files([masks]):
        by_stem.setdefault(mask.stem, mask)
    paired, missing = [], []
    for photo in found:
        mask = by_stem.get(photo.stem)
        if mask is None:
            missing.append((str(photo), f"no mask named {photo.stem}.* in {masks}"))
        else:
            paired.append(MaskedPhoto(photo, mask))
    if not paired:
        raise CrackscanError(f"none of the {len(found)} photos has a mask of the same name in {masks}")
    return paired, missing


def read_mask(path: Path, width: int, height: int) -> np.ndarray:
    """The crack pixels of a mask as booleans; the mask must be the photo's size."""
    pixels = read_pixels(path, name=str(path))
    if pixels.shape[:2] != (height, width):
        raise ImageReadError(str(path), f"mask is {pixels.shape[1]}x{pixels.shape[0]} px, its photo "
                                        f"{width}x{height}", "unreadable")
    return pixels.max(axis=2) > 0


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
