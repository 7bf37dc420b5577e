"""Crack measurement against known geometry, and crackscan-seg's measurements against the truth's.

1. Synthetic cracks of known geometry (crackscan.synth.crack_of_known_geometry): straight at
   every 15 degrees, arcs and branching cracks, widths 1-20 px. Printed: the worst length error
   and the worst width error of each width, and whether 1-2 px widths are flagged at the limit.
2. The held-out photos of each mask set in ../shared/data/real-photos (the test fifth that
   crackscan-seg never trained on): `crackscan.measure_cracks` on crackscan-seg's mask against the same
   measurement on the true mask, photo by photo: median relative error of the total crack
   length, of the widest crack's width and of each matched crack's max width (each true crack
   matched to the found crack whose box overlaps its box most, IoU >= 0.1), the median
   crack-count error and the share of photos whose count is within one of the truth's.
3. The time of measuring against the time of segmenting, on held-out photos resized to
   4032x3024 (12 MP), in the same run.

    python benchmarks/measure.py [--model crackscan-seg]
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT.parent / "shared" / "data" / "real-photos"
SETS = ("deepcrack-train", "crack500-train", "road-asphalt", "asphalt-512", "masonry-224")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crackscan-seg")
    parser.add_argument("--skip-photos", action="store_true")
    args = parser.parse_args()
    from crackscan.runtime.runners import cpu_name

    print(f"CPU: {cpu_name()}")
    synthetic()
    if not args.skip_photos:
        photos(args.model)


def synthetic() -> None:
    from crackscan.measure.cracks import measure
    from crackscan.synth import crack_of_known_geometry

    print("| width px | cases | worst length error | worst mean-width error | worst max-width error | at limit |")
    print("|---:|---:|---:|---:|---:|---|")
    for width in (1, 2, 3, 5, 8, 12, 20):
        length_errors, mean_errors, max_errors, flagged = [], [], [], []
        cases = []
        for angle in range(0, 180, 15):
            a = math.radians(angle)
            half = np.array([math.cos(a), -math.sin(a)]) * 120
            cases.append((np.array([[200, 200] - half, [200, 200] + half]), 240.0))
        for sweep in (1.2, 2.4):  # arcs of radius 150
            theta = np.linspace(0.2, 0.2 + sweep, 200)
            cases.append((np.stack([200 + 150 * np.cos(theta), 220 - 150 * np.sin(theta)], axis=1), 150 * sweep))
        for centreline, true_length in cases:
            found = measure(crack_of_known_geometry((400, 400), centreline, width))
            if len(found) != 1:
                length_errors.append(float("inf"))
                continue
            crack = found[0]
            length_errors.append(abs(crack.length_px - true_length) / true_length)
            mean_errors.append(abs(crack.mean_width_px - width))
            max_errors.append(abs(crack.max_width_px - width))
            flagged.append(crack.at_resolution_limit)
        print(f"| {width} | {len(cases)} | {100 * max(length_errors):.1f}% | {max(mean_errors):.2f} px | "
              f"{max(max_errors):.2f} px | {sum(flagged)} of {len(flagged)} |")
    branch = np.maximum(crack_of_known_geometry((400, 400), np.array([[50, 200], [350, 200]]), 5),
                        crack_of_known_geometry((400, 400), np.array([[200, 200], [300, 60]]), 5))
    [crack] = measure(branch)
    truth = 300 + math.hypot(100, 140)
    print(f"branching crack: type {crack.type}, length {crack.length_px:.1f} px against {truth:.1f} "
          f"({100 * (crack.length_px - truth) / truth:+.1f}%)")


def photos(model: str) -> None:
    import crackscan
    from crackscan.measure.cracks import measure
    from crackscan.segment.masksets import find_mask_sets
    from crackscan.masks import read_mask

    predictor = crackscan.load(model)
    items, _ = find_mask_sets([PHOTOS / name for name in SETS])
    print("\n| set | photos with cracks | median total-length error | median widest-width error | "
          "median matched-crack max-width error (matched) | median crack-count error | count within one | "
          "widest, true median px |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in SETS:
        length_errors, width_errors, count_errors, true_widths = [], [], [], []
        matched_errors, within_one, unmatched = [], [], 0
        for item in [i for i in items if i.dataset == name and i.split == "test"]:
            result = crackscan.scan(predictor, item.photo, keep_image=False)
            height, width = result.height, result.width
            truth = measure(read_mask(item.mask, width, height))
            said = result.cracks or []
            if not truth:
                continue
            true_length = sum(c.length_px for c in truth)
            length_errors.append(abs(sum(c.length_px for c in said) - true_length) / true_length)
            true_widest = max(c.max_width_px for c in truth)
            width_errors.append(abs(max((c.max_width_px for c in said), default=0) - true_widest) / true_widest)
            count_errors.append(abs(len(said) - len(truth)) / len(truth))
            within_one.append(abs(len(said) - len(truth)) <= 1)
            true_widths.append(true_widest)
            for crack in truth:
                match = max(said, key=lambda found: box_iou(crack, found), default=None)
                if match is None or box_iou(crack, match) < 0.1:
                    unmatched += 1
                    continue
                matched_errors.append(abs(match.max_width_px - crack.max_width_px) / crack.max_width_px)
        if length_errors:
            print(f"| {name} | {len(length_errors)} | {100 * statistics.median(length_errors):.1f}% | "
                  f"{100 * statistics.median(width_errors):.1f}% | {100 * statistics.median(matched_errors):.1f}% "
                  f"({len(matched_errors)} of {len(matched_errors) + unmatched}) | "
                  f"{100 * statistics.median(count_errors):.0f}% | {100 * np.mean(within_one):.0f}% | "
                  f"{statistics.median(true_widths):.1f} |", flush=True)
    measure_time(predictor, [i for i in items if i.split == "test"])


def box_iou(a, b) -> float:
    left, top = max(a.x, b.x), max(a.y, b.y)
    right, bottom = min(a.x + a.width, b.x + b.width), min(a.y + a.height, b.y + b.height)
    inter = max(0, right - left) * max(0, bottom - top)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union else 0.0


def measure_time(predictor, items, count: int = 3) -> None:
    """Segmenting and measuring a 12 MP photo, timed apart: measuring may add at most 30%."""
    import time

    from PIL import Image

    from crackscan.measure.cracks import measure
    from crackscan.photo.segment import crack_probability_map

    chosen = items[:: max(1, len(items) // count)][:count]
    print("\n| 12 MP photo (4032x3024, resized from) | segmenting s | measuring s | measuring / segmenting | cracks |")
    print("|---|---:|---:|---:|---:|")
    for item in chosen:
        pixels = np.asarray(Image.open(item.photo).convert("RGB").resize((4032, 3024), Image.BILINEAR))
        started = time.perf_counter()
        probability = crack_probability_map(predictor, pixels)
        segmenting = time.perf_counter() - started
        started = time.perf_counter()
        cracks = measure(probability)
        measuring = time.perf_counter() - started
        print(f"| {item.dataset}/{Path(item.photo).name} | {segmenting:.2f} | {measuring:.2f} | "
              f"{100 * measuring / segmenting:.0f}% | {len(cracks)} |", flush=True)


if __name__ == "__main__":
    main()
