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
3. Photos of known cracks (crackscan.synth.photo_of_known_crack: 2, 3, 4, 6 and 9 px wide,
   anti-aliased, optical blur sigma 0.7 px, noise, JPEG q 90, bent, at random angles): each
   crack's length-weighted mean width, read off crackscan-seg's mask alone and on the photo
   (measure.profiles), and its length, against the truth; the same with the true mask made
   1 px fatter on each side (a segmenter's mask) so the reading is judged apart from what the
   segmenter finds; and lines drawn 6 and 10 px wide by PIL (7 and 11 px on their own masks), their max width.
4. Types: each true crack's type (the same rule on the true mask) against the type of the found
   crack it matches, and measure()'s length on the true masks against their skeleton's length
   (each skeleton pixel's steps to its 8-neighbours, 1 or 1.414, counted once), per photo.
5. The time of measuring against the time of segmenting, on held-out photos resized to
   4032x3024 (12 MP), in the same run.

    python benchmarks/measure.py [--model crackscan-seg] [--skip-photos] [--sets S ...]

Results: results/measure.json (the tables' figures).
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
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--photo-cases", type=int, default=8, help="synthetic photos per width")
    args = parser.parse_args()
    import crackscan
    from crackscan.runtime.runners import cpu_name

    print(f"CPU: {cpu_name()}")
    results: dict = {"cpu": cpu_name(), "model": args.model}
    synthetic()
    predictor = crackscan.load(args.model)
    results["synthetic_photos"] = synthetic_photos(predictor, args.photo_cases)
    results["drawn_lines"] = drawn_lines(predictor)
    if not args.skip_photos:
        results["sets"] = photos(predictor, args.sets)
    from common import write_results

    write_results("measure", results)


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


def photos(predictor, sets: list[str]) -> dict:
    import crackscan
    from crackscan.measure.cracks import measure
    from crackscan.segment.masksets import find_mask_sets
    from crackscan.masks import read_mask

    items, _ = find_mask_sets([PHOTOS / name for name in sets])
    figures: dict = {}
    print("\n| set | photos with cracks | median total-length error | median widest-width error | "
          "median matched-crack max-width error (matched) | median crack-count error | count within one | "
          "widest, true median px |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in sets:
        length_errors, width_errors, count_errors, true_widths = [], [], [], []
        matched_errors, within_one, unmatched = [], [], 0
        types_agree, types_seen, skeleton_errors = 0, {"true": {}, "found": {}}, []
        for item in [i for i in items if i.dataset == name and i.split == "test"]:
            result = crackscan.scan(predictor, item.photo, keep_image=False)
            height, width = result.height, result.width
            true_mask = read_mask(item.mask, width, height)
            truth = measure(true_mask)
            said = result.cracks or []
            if not truth:
                continue
            skeleton = skeleton_length(true_mask)
            if skeleton > 0:
                skeleton_errors.append((sum(c.length_px for c in truth) - skeleton) / skeleton)
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
                types_agree += match.type == crack.type
                types_seen["true"][crack.type] = types_seen["true"].get(crack.type, 0) + 1
                types_seen["found"][match.type] = types_seen["found"].get(match.type, 0) + 1
        if matched_errors:
            figures[name] = {
                "photos": len(length_errors), "median_total_length_error": statistics.median(length_errors),
                "median_matched_max_width_error": statistics.median(matched_errors),
                "type_agreement": types_agree / len(matched_errors), "matched_cracks": len(matched_errors),
                "types_on_true_masks": types_seen["true"], "types_found": types_seen["found"],
                "median_length_vs_skeleton": statistics.median(skeleton_errors),
                "median_abs_length_vs_skeleton": statistics.median(abs(e) for e in skeleton_errors)}
            print(f"  {name}: type agreement {100 * types_agree / len(matched_errors):.1f}% of "
                  f"{len(matched_errors)} matched cracks (true {types_seen['true']}, found {types_seen['found']}); "
                  f"measure() on the true masks against their skeleton: median {100 * figures[name]['median_length_vs_skeleton']:+.1f}% "
                  f"(|median| {100 * figures[name]['median_abs_length_vs_skeleton']:.1f}%)", flush=True)
        if length_errors:
            print(f"| {name} | {len(length_errors)} | {100 * statistics.median(length_errors):.1f}% | "
                  f"{100 * statistics.median(width_errors):.1f}% | {100 * statistics.median(matched_errors):.1f}% "
                  f"({len(matched_errors)} of {len(matched_errors) + unmatched}) | "
                  f"{100 * statistics.median(count_errors):.0f}% | {100 * np.mean(within_one):.0f}% | "
                  f"{statistics.median(true_widths):.1f} |", flush=True)
    figures["measure_time"] = measure_time(predictor, [i for i in items if i.split == "test"])
    return figures


def skeleton_length(mask: np.ndarray) -> float:
    """A mask's skeleton length: each skeleton pixel's steps to its 8-neighbours (1 or 1.414), once."""
    from skimage.morphology import skeletonize

    bones = skeletonize(np.asarray(mask) > 0)
    straight = np.count_nonzero(bones[:, 1:] & bones[:, :-1]) + np.count_nonzero(bones[1:, :] & bones[:-1, :])
    diagonal = np.count_nonzero(bones[1:, 1:] & bones[:-1, :-1]) + np.count_nonzero(bones[1:, :-1] & bones[:-1, 1:])
    return float(straight + math.sqrt(2) * diagonal)


def _bent_centreline(rng, size: int) -> np.ndarray:
    along = np.linspace(0, 1, 60)
    angle = rng.uniform(0, math.pi)
    direction = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    return size / 2 + (along[:, None] - 0.5) * 0.7 * size * direction + \
        (np.sin(along * math.pi) * rng.uniform(-0.05, 0.05) * size)[:, None] * normal


def synthetic_photos(predictor, cases: int) -> dict:
    import cv2

    from crackscan.measure.cracks import measure
    from crackscan.photo.segment import crack_probability_map
    from crackscan.synth import photo_of_known_crack

    rng = np.random.default_rng(2026)
    print("\n| true width px | photos | mask alone: mean width | on the photo: mean width | worst error on the photo | "
          "share of length found | length error (found) | true mask 1 px fatter: mean width | its length error |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    table = {}
    for width in (2, 3, 4, 6, 9):
        on_mask, on_photo, found_share, length_errors, fat_widths, fat_lengths = [], [], [], [], [], []
        for _ in range(cases):
            centreline = _bent_centreline(rng, 512)
            photo, coverage = photo_of_known_crack(rng, (512, 512), centreline, width)
            true_length = float(np.sum(np.hypot(*np.diff(centreline, axis=0).T)))
            probability = crack_probability_map(predictor, photo)
            mask_cracks, photo_cracks = measure(probability), measure(probability, photo=photo)
            if photo_cracks:
                weights = [c.length_px for c in photo_cracks]
                on_photo.append(np.average([c.mean_width_px for c in photo_cracks], weights=weights))
                on_mask.append(np.average([c.mean_width_px for c in mask_cracks], weights=[c.length_px for c in mask_cracks]))
                found = sum(weights)
                found_share.append(min(1.0, found / true_length))
                length_errors.append(found / true_length - 1)
            else:
                found_share.append(0.0)
            fat = cv2.dilate((coverage >= 0.5).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            [crack] = measure(fat, photo=photo)[:1] or [None]
            if crack is not None:
                fat_widths.append(crack.mean_width_px)
                fat_lengths.append(crack.length_px / true_length - 1)
        row = {"photos": cases, "mask_alone_mean_width": float(np.mean(on_mask)) if on_mask else None,
               "photo_mean_width": float(np.mean(on_photo)) if on_photo else None,
               "photo_worst_error": float(np.max(np.abs(np.array(on_photo) - width))) if on_photo else None,
               "share_of_length_found": float(np.mean(found_share)),
               "length_error_found": float(np.median(length_errors)) if length_errors else None,
               "fat_true_mask_mean_width": float(np.mean(fat_widths)),
               "fat_true_mask_worst_error": float(np.max(np.abs(np.array(fat_widths) - width))),
               "fat_true_mask_worst_length_error": float(np.max(np.abs(fat_lengths)))}
        table[width] = row
        show = lambda v, f="{:.2f}": "-" if v is None else f.format(v)  # noqa: E731
        print(f"| {width} | {cases} | {show(row['mask_alone_mean_width'])} | {show(row['photo_mean_width'])} | "
              f"{show(row['photo_worst_error'])} | {100 * row['share_of_length_found']:.0f}% | "
              f"{show(row['length_error_found'], '{:+.1%}')} | {row['fat_true_mask_mean_width']:.2f} "
              f"(worst {row['fat_true_mask_worst_error']:.2f}) | {100 * row['fat_true_mask_worst_length_error']:.1f}% |",
              flush=True)
    return table


def drawn_lines(predictor) -> dict:
    """Lines drawn 6 and 10 px wide by PIL on concrete, blurred, JPEG: their max width read on
    crackscan-seg's mask alone and on the photo, against the same reading of their own mask."""
    from PIL import Image, ImageDraw

    from crackscan.measure.cracks import measure
    from crackscan.photo.segment import crack_probability_map
    from crackscan.synth import concrete_texture, photographed

    rng = np.random.default_rng(6)
    figures = {}
    print("\n| drawn width | own mask max px | mask alone max px | on the photo max px | error on the photo |")
    print("|---:|---:|---:|---:|---:|")
    for width in (6, 10):
        mask = Image.new("L", (600, 400), 0)
        ImageDraw.Draw(mask).line([(60, 300), (300, 120), (540, 180)], fill=255, width=width)
        drawn = np.asarray(mask) > 0
        surface = concrete_texture(rng, 400, 600)
        photo = photographed(rng, np.where(drawn[..., None], surface * 0.3, surface))  # blur 0.7, noise, JPEG q 90
        own = max(measure(drawn), key=lambda c: c.length_px).max_width_px
        probability = crack_probability_map(predictor, photo)
        alone = max(measure(probability), key=lambda c: c.length_px, default=None)
        read = max(measure(probability, photo=photo), key=lambda c: c.length_px, default=None)
        figures[width] = {"own_mask_max": own, "mask_alone_max": alone and alone.max_width_px,
                          "photo_max": read and read.max_width_px}
        print(f"| {width} | {own:.2f} | {alone.max_width_px if alone else float('nan'):.2f} | "
              f"{read.max_width_px if read else float('nan'):.2f} | "
              f"{(read.max_width_px - own) / own if read else float('nan'):+.1%} |", flush=True)
    return figures


def box_iou(a, b) -> float:
    left, top = max(a.x, b.x), max(a.y, b.y)
    right, bottom = min(a.x + a.width, b.x + b.width), min(a.y + a.height, b.y + b.height)
    inter = max(0, right - left) * max(0, bottom - top)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union else 0.0


def measure_time(predictor, items, count: int = 3) -> list:
    """Segmenting and measuring a 12 MP photo, timed apart: measuring may add at most 30%."""
    import time

    from PIL import Image

    from crackscan.measure.cracks import measure
    from crackscan.photo.segment import crack_probability_map

    chosen = items[:: max(1, len(items) // count)][:count]
    timed = []
    print("\n| 12 MP photo (4032x3024, resized from) | segmenting s | measuring s | measuring / segmenting | cracks |")
    print("|---|---:|---:|---:|---:|")
    for item in chosen:
        pixels = np.asarray(Image.open(item.photo).convert("RGB").resize((4032, 3024), Image.BILINEAR))
        started = time.perf_counter()
        probability = crack_probability_map(predictor, pixels)
        segmenting = time.perf_counter() - started
        started = time.perf_counter()
        cracks = measure(probability, photo=pixels)  # widths read on the photo, as a scan reads them
        measuring = time.perf_counter() - started
        timed.append({"photo": f"{item.dataset}/{Path(item.photo).name}", "segmenting_s": segmenting,
                      "measuring_s": measuring, "cracks": len(cracks)})
        print(f"| {item.dataset}/{Path(item.photo).name} | {segmenting:.2f} | {measuring:.2f} | "
              f"{100 * measuring / segmenting:.0f}% | {len(cracks)} |", flush=True)
    return timed


if __name__ == "__main__":
    main()
