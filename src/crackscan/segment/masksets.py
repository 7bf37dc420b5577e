"""Mask sets for training a segmenter: folders of ``images/`` and ``masks/`` with the same stems.

Each set is split by photo (by content, as classification splits are: a copied photo never
sits on both sides), so a photo's windows are all in one split. Photos are read at their own
scale: a crack 2 px wide must reach the model 2 px wide. Photos smaller than a window are
scaled up to one, never down.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..datasets import split_by_content
from ..errors import CrackscanError
from ..images import ImageReadError, read_pixels, resize_pixels
from ..photo.tiling import tile_origins
from ..masks import ignore_value_of, pair_with_masks, read_mask_parts

SPLIT_SEED = 42
SPLIT = (0.7, 0.1, 0.2)  # train, val, test: the test fifth of every set is never trained on


@dataclasses.dataclass(frozen=True)
class MaskedImage:
    photo: Path
    mask: Path | None  # None: a hard negative, a photo known to hold no crack (every pixel clear)
    dataset: str  # the set's folder name
    split: str
    sha256: str


def find_negatives(sources: Sequence[str | Path], split: tuple[float, ...] = SPLIT, seed: int = SPLIT_SEED,
                   limit: int | None = None) -> list[MaskedImage]:
    """Hard negatives: photos (files, folders, glob patterns) known to hold no crack, split by
    content as the mask sets are, so their test part can measure false alarms honestly; at
    most ``limit`` of each source, taken in the order of their content hashes."""
    from ..images import list_image_files

    found: list[MaskedImage] = []
    for source in sources:
        files = list_image_files([source])
        if not files:
            raise CrackscanError(f"no photos in {source} to use as negatives")
        hashes = [hashlib.sha256(path.read_bytes()).hexdigest() for path in files]
        splits = split_by_content([0] * len(files), hashes, split, seed)
        items = sorted((MaskedImage(path, None, Path(str(source)).name.split("*")[0] or "negatives", part, digest)
                        for path, part, digest in zip(files, splits, hashes)), key=lambda item: item.sha256)
        if limit is not None:
            items = [i for part in ("train", "val", "test") for i in [i for i in items if i.split == part][:limit]]
        found += items
    return found


def find_mask_sets(folders: Sequence[str | Path], split: tuple[float, ...] = SPLIT, seed: int = SPLIT_SEED
                   ) -> tuple[list[MaskedImage], list[tuple[str, str]]]:
    """Every photo with a mask in ``folders`` (each holding images/ and masks/), with its
    split; photos without a mask come back as (photo, reason) to report."""
    found: list[MaskedImage] = []
    skipped: list[tuple[str, str]] = []
    for folder in map(Path, folders):
        images, masks = folder / "images", folder / "masks"
        if not images.is_dir() or not masks.is_dir():
            raise CrackscanError(f"{folder} is not a mask set: it needs images/ and masks/ folders with the same file "
                                 "names (masks: 0 = background, any other value = crack)")
        paired, missing = pair_with_masks(images, masks)
        skipped += missing
        hashes = [hashlib.sha256(item.photo.read_bytes()).hexdigest() for item in paired]
        splits = split_by_content([0] * len(paired), hashes, split, seed)
        found += [MaskedImage(item.photo, item.mask, folder.name, part, digest)
                  for item, part, digest in zip(paired, splits, hashes)]
    return found, skipped


def read_masked(item: MaskedImage, min_side: int = 0, ignore_value: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A photo's pixels, its crack mask and its weights (0 where the mask says ignore:
    ``ignore_value``, else its folder's masks.json), at the photo's scale, or scaled up so its
    short side is ``min_side``."""
    pixels = read_pixels(item.photo)
    height, width = pixels.shape[:2]
    if item.mask is None:
        crack, ignored = np.zeros((height, width), bool), None
    else:
        crack, ignored = read_mask_parts(item.mask, width, height, ignore_value_of(item.mask.parent, ignore_value))
    weights = np.ones((height, width), np.float32) if ignored is None else (~ignored).astype(np.float32)
    return scaled_up(pixels, crack, weights, min_side)


def scaled_up(pixels: np.ndarray, crack: np.ndarray, weights: np.ndarray, min_side: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A photo, its crack mask and its pixel weights scaled up so its short side is
    ``min_side`` (as a scan reads a photo smaller than a window), or as they are."""
    height, width = pixels.shape[:2]
    if min(width, height) >= min_side:
        return pixels, crack, weights
    scale = min_side / min(width, height)
    size = max(min_side, round(width * scale)), max(min_side, round(height * scale))
    return (resize_pixels(pixels, *size), resize_pixels(crack.astype(np.uint8) * 255, *size) >= 128,
            (resize_pixels((weights * 255).astype(np.uint8), *size) >= 128).astype(np.float32))


def windows(width: int, height: int, size: int, stride: int | None = None) -> list[tuple[int, int]]:
    """The top-left corners of ``size`` windows covering a photo, the last flush with its edges."""
    stride = stride or size
    return [(x, y) for y in tile_origins(height, size, stride) for x in tile_origins(width, size, stride)]


def training_windows(items: Sequence[MaskedImage], size: int, per_photo: int, empty_share: float,
                     rng: np.random.Generator, skipped: list[tuple[str, str]]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Windows of ``size`` px from each photo: up to ``per_photo``, those with cracks first and
    about ``empty_share`` of the rest, as pixels (uint8), masks (uint8 0/1) and weights; and
    which photo each came from. Unreadable photos or masks are reported in ``skipped``."""
    pixels, masks, weights, owners = [], [], [], []
    for index, item in enumerate(items):
        try:
            photo, crack, weight = read_masked(item, size)
        except ImageReadError as error:
            skipped.append((str(error.source), error.reason))
            continue
        corners = windows(photo.shape[1], photo.shape[0], size)
        cracked = [c for c in corners if crack[c[1]:c[1] + size, c[0]:c[0] + size].any()]
        empty = [c for c in corners if c not in cracked]
        # A hard negative's windows are all kept: the clear pixels are the point of it.
        kept_empty = empty if item.mask is None else [c for c in empty if rng.random() < empty_share] or empty[:1]
        chosen = cracked + kept_empty
        if len(chosen) > per_photo:
            chosen = [chosen[i] for i in sorted(rng.choice(len(chosen), per_photo, replace=False))]
        for x, y in chosen:
            pixels.append(photo[y:y + size, x:x + size])
            masks.append(crack[y:y + size, x:x + size].astype(np.uint8))
            weights.append(weight[y:y + size, x:x + size].astype(np.float16))
            owners.append(index)
    if not pixels:
        raise CrackscanError("no readable photo with a mask to train on")
    return np.stack(pixels), np.stack(masks), np.stack(weights), owners


def run_photos(run: Path, parts: tuple[str, ...]) -> list[MaskedImage]:
    """The photos of a segmenter's run in ``parts`` of its split, as its split.json lists them."""
    import json

    from .. import runs

    try:
        rows = json.loads((Path(run) / runs.SEGMENT_SPLIT_FILE).read_text())
        items = [MaskedImage(Path(r["photo"]), Path(r["mask"]) if r["mask"] else None, r["set"], r["split"], r["sha256"])
                 for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CrackscanError(f"cannot read {Path(run) / runs.SEGMENT_SPLIT_FILE} ({error})") from None
    return [item for item in items if item.split in parts and item.photo.is_file()
            and (item.mask is None or item.mask.is_file())]


def sample_windows(run: Path, parts: tuple[str, ...], size: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """About ``count`` windows (pixels, boolean masks) of a run's photos in ``parts``: two a
    photo, cracked ones first, photos drawn by ``seed``."""
    items = run_photos(run, parts)
    if not items:
        raise CrackscanError(f"the {'/'.join(parts)} photos of {run} are gone from where it was trained: "
                             "they check and calibrate the export")
    rng = np.random.default_rng(seed)
    picked = [items[i] for i in rng.permutation(len(items))[: max(1, count // 2)]]
    pixels, masks, _, _ = training_windows(picked, size, 2, 0.5, rng, [])
    return pixels[:count], masks[:count].astype(bool)
