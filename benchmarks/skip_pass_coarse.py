"""Could crackscan-seg's own pass at a lower resolution tell it where no crack can be? (issue 34)

The second skip-pass candidate beside skip_pass.py's crackscan-nano: run the segmenter on the
photo shrunk by 2 or 4 (a quarter or a sixteenth of the pixels), and run it at full resolution
only in the BLOCK px blocks where that coarse map reaches a threshold, with one block of
neighbours for the network's context. For each photo this counts the share of the area such a
pass must still run at full resolution, and the share of the full-resolution map's own crack
pixels (>= 0.5) in the blocks it would skip: what skipping costs before any truth is consulted
(a lost crack pixel costs recall; 0.005 pixel F1 is the budget). The photos:
- segment_speed.py's three 12 MP photos (dense: every part is a crack photo);
- road-asphalt's 1920x1080 road-survey photos (thin cracks on mostly clear pavement, the kind of
  photo where a skip pass would pay), all 40, since the reference is the model's own map.

    python benchmarks/skip_pass_coarse.py

Results: results/skip-pass-coarse.json.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from common import DEFAULT_DATA, photo_of_patches, real_image_files, write_results

PHOTOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "real-photos"
FACTORS = (2, 4)
THRESHOLDS = (0.02, 0.05, 0.1, 0.2)
BLOCK = 128


def needed_blocks(coarse: np.ndarray, threshold: float, shape: tuple[int, int]) -> np.ndarray:
    """The full-resolution pixels a skip pass would still run: the BLOCK px blocks where the coarse
    map (at full size) reaches ``threshold``, and their neighbours."""
    import cv2

    height, width = shape
    rows, cols = -(-height // BLOCK), -(-width // BLOCK)
    padded = np.zeros((rows * BLOCK, cols * BLOCK), bool)
    padded[:height, :width] = coarse >= threshold
    hit = padded.reshape(rows, BLOCK, cols, BLOCK).any(axis=(1, 3))
    hit = cv2.dilate(hit.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return np.kron(hit, np.ones((BLOCK, BLOCK), bool))[:height, :width]


def main() -> None:
    import cv2

    import crackscan
    from crackscan.images import read_for_shrinking
    from crackscan.photo import segment
    from crackscan.runtime.runners import cpu_name

    seg = crackscan.load("crackscan-seg")
    print(f"CPU: {cpu_name()}")
    work = Path(tempfile.mkdtemp(prefix="crackscan-skip-coarse-"))
    rng = np.random.default_rng(0)  # segment_speed.py's draw
    groups: dict[str, list[Path]] = {}
    for name, files in {"deepcrack": sorted((PHOTOS / "deepcrack-train" / "images").glob("*.jpg")),
                        "crack500": sorted((PHOTOS / "crack500-train" / "images").glob("*.jpg")),
                        "ozgenel": real_image_files(DEFAULT_DATA)}.items():
        photo = work / f"{name}.jpg"
        photo_of_patches(files, rng).save(photo, quality=92)
        groups[f"{name} 12 MP"] = [photo]
    groups["road-asphalt"] = sorted((PHOTOS / "road-asphalt" / "images").iterdir())

    figures: dict = {"factors": FACTORS, "thresholds": THRESHOLDS, "block_px": BLOCK, "groups": {}}
    print("| photos | shrunk by | coarse pass / full map | area still run at " + " / ".join(map(str, THRESHOLDS)) +
          " | map's crack pixels skipped at the same |")
    print("|---|---:|---:|---|---|")
    for group, photos in groups.items():
        full_s = 0.0
        coarse_s = {factor: 0.0 for factor in FACTORS}
        area = {factor: np.zeros(len(THRESHOLDS)) for factor in FACTORS}
        lost = {factor: np.zeros(len(THRESHOLDS)) for factor in FACTORS}
        all_pixels = crack_pixels = 0
        for photo in photos:
            pixels, _ = read_for_shrinking(photo, None, None)
            height, width = pixels.shape[:2]
            started = time.perf_counter()
            crack = segment.crack_probability_map(seg, pixels) >= 0.5
            full_s += time.perf_counter() - started
            all_pixels += height * width
            crack_pixels += int(crack.sum())
            for factor in FACTORS:
                small = cv2.resize(pixels, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
                started = time.perf_counter()
                coarse = segment.crack_probability_map(seg, small)
                coarse_s[factor] += time.perf_counter() - started
                coarse = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
                for index, threshold in enumerate(THRESHOLDS):
                    needed = needed_blocks(coarse, threshold, (height, width))
                    area[factor][index] += needed.sum()
                    lost[factor][index] += (crack & ~needed).sum()
        figures["groups"][group] = {"photos": len(photos), "full_map_s": full_s, "by_factor": {}}
        for factor in FACTORS:
            area_share, lost_share = area[factor] / all_pixels, lost[factor] / max(1, crack_pixels)
            figures["groups"][group]["by_factor"][factor] = {
                "coarse_over_full_map": coarse_s[factor] / full_s, "area_still_run": area_share.tolist(),
                "crack_pixels_skipped": lost_share.tolist()}
            print(f"| {group} ({len(photos)}) | {factor} | {coarse_s[factor] / full_s:.2f} | "
                  f"{' / '.join(f'{v:.3f}' for v in area_share)} | {' / '.join(f'{v:.4f}' for v in lost_share)} |",
                  flush=True)
    write_results("skip-pass-coarse", figures)


if __name__ == "__main__":
    main()
