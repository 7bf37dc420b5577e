"""Could crackscan-nano's tiles tell crackscan-seg where no crack can be? (issue 34)

A first pass that skips the segmenter where a cheap model calls a region clear would cut the
segmenter's pixels; it may cost at most 0.005 pixel F1 on any shared mask set. For each set's
held-out photos this scans with crackscan-nano (227 px tiles, as `crackscan scan` does) and
counts, for several thresholds, the share of the true crack pixels that lie in tiles nano calls
under the threshold (what skipping them would lose at best: recall lost before the segmenter
even looks), and the share of the area such a pass would skip. The same area share is printed
for segment_speed.py's three 12 MP photos.

    python benchmarks/skip_pass.py

Results: results/skip-pass-nano.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common import DEFAULT_DATA, photo_of_patches, real_image_files, write_results

PHOTOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "real-photos"
SETS = ("deepcrack-train", "crack500-train", "road-asphalt", "asphalt-512", "masonry-224", "gaps384-train",
        "shadowcrack-train")
THRESHOLDS = (0.02, 0.05, 0.1, 0.2)


def main() -> None:
    import tempfile

    from PIL import Image

    import crackscan
    from crackscan.runtime.runners import cpu_name
    from crackscan.segment.masksets import find_mask_sets

    nano = crackscan.load("crackscan-nano")
    print(f"CPU: {cpu_name()}")
    figures: dict = {"thresholds": THRESHOLDS, "sets": {}, "photos_12mp": {}}
    print("| set | photos | true crack pixels in tiles under " + " / ".join(map(str, THRESHOLDS)) +
          " | area under the same |")
    print("|---|---:|---|---|")
    for name in SETS:
        items, _ = find_mask_sets([PHOTOS / name])
        photos = [item for item in items if item.split == "test"]
        lost, area = np.zeros(len(THRESHOLDS)), np.zeros(len(THRESHOLDS))
        crack_pixels = all_pixels = 0
        for item in photos:
            result = crackscan.scan(nano, item.photo, keep_image=False)
            truth = np.asarray(Image.open(item.mask).convert("L").resize((result.width, result.height))) > 127
            crack_pixels += int(truth.sum())
            all_pixels += result.width * result.height
            for tile in result.tiles:
                inside = truth[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width].sum()
                under = np.array([tile.crack_probability < t for t in THRESHOLDS])
                lost += under * inside
                area += under * tile.width * tile.height
        lost_share, area_share = lost / max(1, crack_pixels), area / max(1, all_pixels)
        figures["sets"][name] = {"photos": len(photos), "crack_pixels_skipped": lost_share.tolist(),
                                 "area_skipped": area_share.tolist()}
        print(f"| {name} | {len(photos)} | {' / '.join(f'{v:.3f}' for v in lost_share)} | "
              f"{' / '.join(f'{v:.3f}' for v in area_share)} |", flush=True)

    work = Path(tempfile.mkdtemp(prefix="crackscan-skip-pass-"))
    rng = np.random.default_rng(0)  # segment_speed.py's draw
    sources = {"deepcrack": sorted((PHOTOS / "deepcrack-train" / "images").glob("*.jpg")),
               "crack500": sorted((PHOTOS / "crack500-train" / "images").glob("*.jpg")),
               "ozgenel": real_image_files(DEFAULT_DATA)}
    for name, files in sources.items():
        photo = work / f"{name}.jpg"
        photo_of_patches(files, rng).save(photo, quality=92)
        levels = np.array([t.crack_probability for t in crackscan.scan(nano, photo, keep_image=False).tiles])
        figures["photos_12mp"][name] = [float(np.mean(levels < t)) for t in THRESHOLDS]
        print(f"{name} 12 MP photo: area nano calls under {THRESHOLDS}: "
              f"{', '.join(f'{v:.3f}' for v in figures['photos_12mp'][name])}")
    write_results("skip-pass-nano", figures)


if __name__ == "__main__":
    main()
