"""Pixel crack masks: crackscan-seg against the truth and against the built-in classifiers.

For each mask set in ../shared/data/real-photos, its held-out test photos (the fifth of each
set that `train --task segment` and `make models` never train on: crackscan.segment.masksets
splits by content) are graded with `crackscan evaluate --masks`:

- pixel F1 within 2 px and exact, ODS and OIS of crackscan-seg (threshold 0.5), and its worst
  photos of each set by name; gaps384-train and shadowcrack-train, which the shipped model never
  trained on, are graded on the same held-out fifth, so a model trained on them compares;
- tile F1 of crackscan-seg's mask and of crackscan-base's and crackscan-nano's tiles, zero-shot,
  on the same tile grid (227 px; masonry-224's 224 px crops in 112 px tiles);
- false alarms: tiles flagged (and photos given a crack, by the product's verdict) on the
  photos-no-masks photos that hold no crack, per kind (noncrack, like_crack), crackscan-seg
  against crackscan-base: the held-out part only (crackscan-seg trains
  on the other part of them as hard negatives; the split is by content, as for the sets);
- speed: one 4032x3024 photo scanned and written, crackscan-seg against crackscan-base, the
  median of 3 in turns; the peak memory of `crackscan scan` on one 50 MP photo;
- with --run (the segmenter's run folder): its float model.keras against the int8 file.

    python benchmarks/segmentation.py [--model crackscan-seg] [--run runs/builtin/crackscan-seg]
        [--window-overlap 0.25] [--edge-pad 32] [--flips none|h|hv|all] [--upscale-below PX]
        [--sets S ...] [--label LABEL] [--skip-classifiers] [--skip-speed]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import DEFAULT_DATA, photo_of_patches, real_image_files, write_results

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT.parent / "shared" / "data" / "real-photos"
SETS = {"deepcrack-train": 227, "crack500-train": 227, "road-asphalt": 227, "asphalt-512": 227, "masonry-224": 112,
        "gaps384-train": 66, "shadowcrack-train": 80}
# Sets the shipped crackscan-seg was not trained on (none of their photos): photos from sites it never saw.
UNSEEN_BY_SHIPPED = ("gaps384-train", "shadowcrack-train")
NOT_CRACKS = ("noncrack", "like_crack")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crackscan-seg")
    parser.add_argument("--run", type=Path, help="the segmenter's run, to compare its float model with --model")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-classifiers", action="store_true", help="leave out the classifiers' tile F1")
    parser.add_argument("--window-overlap", type=float,
                        help="a segmenter's window overlap, a share of its side (default: the product's)")
    parser.add_argument("--window-largest", type=int,
                        help="px, a side of the largest window a resizable model runs (0: the model's own size)")
    parser.add_argument("--window-margin", type=int, help="px neighbouring large windows share")
    parser.add_argument("--label", default="crackscan-seg", help="names the results file: results/segmentation-LABEL.json")
    parser.add_argument("--edge-pad", type=int,
                        help="px a photo is mirrored out by before windowing (default: the product's; 0: none)")
    parser.add_argument("--flips", choices=("none", "h", "hv", "all"),
                        help="test-time flips: h = columns, hv = columns and rows apart, all = and both (default: the product's)")
    parser.add_argument("--upscale-below", type=int,
                        help="segment photos whose short side is under this px scaled up to it (default: the "
                             "product's, the model's window; 0: never)")
    parser.add_argument("--sets", nargs="+", choices=tuple(SETS), help="only these sets (default: all)")
    args = parser.parse_args()

    import crackscan
    from crackscan.photo import segment

    if args.window_overlap is not None:
        segment.WINDOW_OVERLAP = args.window_overlap
    if args.window_largest is not None:
        segment.WINDOW_LARGEST = args.window_largest
    if args.window_margin is not None:
        segment.WINDOW_MARGIN = args.window_margin
    if args.edge_pad is not None:
        segment.EDGE_PAD = args.edge_pad
    if args.flips is not None:
        segment.TEST_TIME_FLIPS = {"none": (), "h": ((1,),), "hv": ((1,), (0,)), "all": ((1,), (0,), (0, 1))}[args.flips]
    if args.upscale_below is not None:
        segment.UPSCALE_BELOW = args.upscale_below
    sets = {name: SETS[name] for name in (args.sets or SETS)}
    from crackscan.evaluate import evaluate_photos
    from crackscan.runtime.runners import cpu_name
    from crackscan.segment.masksets import find_mask_sets

    print(f"CPU: {cpu_name()}; model {args.model}; windows up to {segment.WINDOW_LARGEST or 'the model'}'s px sharing "
          f"{segment.WINDOW_MARGIN} px (fixed-size models: overlapping by {segment.WINDOW_OVERLAP:g} of a side); "
          f"photos mirrored out by {segment.EDGE_PAD} px; test-time flips {segment.TEST_TIME_FLIPS or 'none'}; "
          f"small photos scaled up below {'the window' if segment.UPSCALE_BELOW is None else segment.UPSCALE_BELOW} px")
    recorded: dict = {"model": args.model, "window_largest_px": segment.WINDOW_LARGEST,
                      "window_margin_px": segment.WINDOW_MARGIN, "window_overlap": segment.WINDOW_OVERLAP, "edge_pad_px": segment.EDGE_PAD,
                      "test_time_flips": [list(a) for a in segment.TEST_TIME_FLIPS],
                      "upscale_below_px": segment.UPSCALE_BELOW, "sets": {}}
    seg = crackscan.load(args.model)
    classifiers = {name: crackscan.load(name) for name in ("crackscan-base", "crackscan-nano")}
    float_model = crackscan.load(args.run / "model.keras") if args.run else None
    items, _ = find_mask_sets([PHOTOS / name for name in sets])
    print("| set | test photos | pixel F1 2 px | precision | recall | exact F1 | ODS | OIS | tile F1 seg | base | nano |"
          + (" float pixel F1 |" if float_model else ""))
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if float_model else ""))
    for name, tile in sets.items():
        photos = [item.photo for item in items if item.dataset == name and item.split == "test"]
        masks = PHOTOS / name / "masks"
        graded = evaluate_photos(seg, photos, masks, tile=tile).metrics
        px = graded["pixel"]
        tiles = {label: np.nan if args.skip_classifiers else evaluate_photos(model, photos, masks, tile=tile).metrics["f1"]
                 for label, model in classifiers.items()}
        row = (f"| {name} | {graded['photos']} | {px['tolerance_2px']['f1']:.3f} | {px['tolerance_2px']['precision']:.3f} "
               f"| {px['tolerance_2px']['recall']:.3f} | {px['exact']['f1']:.3f} | {px['ods']['f1']:.3f} | "
               f"{px['ois_f1']:.3f} | {graded['f1']:.3f} | {tiles['crackscan-base']:.3f} | {tiles['crackscan-nano']:.3f} |")
        recorded["sets"][name] = {"test_photos": graded["photos"], "pixel_f1_2px": px["tolerance_2px"]["f1"],
                                  "precision_2px": px["tolerance_2px"]["precision"],
                                  "recall_2px": px["tolerance_2px"]["recall"], "exact_f1": px["exact"]["f1"],
                                  "ods": px["ods"]["f1"], "ois": px["ois_f1"], "tile_f1": graded["f1"],
                                  "unseen_by_shipped_model": name in UNSEEN_BY_SHIPPED,
                                  "worst_photos": [(Path(w["photo"]).name, w["pixel_f1_2px"]) for w in graded["worst_photos"]],
                                  **({} if args.skip_classifiers else {"tile_f1_base": tiles["crackscan-base"],
                                                                       "tile_f1_nano": tiles["crackscan-nano"]})}
        if float_model:
            float_f1 = evaluate_photos(float_model, photos, masks, tile=tile).metrics['pixel']['tolerance_2px']['f1']
            recorded["sets"][name]["float_pixel_f1_2px"] = float_f1
            row += f" {float_f1:.3f} |"
        print(row, flush=True)

    from crackscan.segment.masksets import find_negatives
    from crackscan.segment.train import NEGATIVE_SPLIT

    negatives = find_negatives([str(PHOTOS / "photos-no-masks" / f"{kind}_*") for kind in NOT_CRACKS], NEGATIVE_SPLIT)
    clear = sorted(item.photo for item in negatives if item.split == "test")
    flagged: dict = {}
    for label, model in (("crackscan-seg", seg), ("crackscan-base", classifiers["crackscan-base"])):
        for kind in NOT_CRACKS:
            results = [crackscan.scan(model, photo, keep_image=False) for photo in clear if photo.name.startswith(kind)]
            flagged[label, kind] = (sum(r.summary.cracked_tiles for r in results), sum(r.summary.tiles for r in results),
                                    sum(r.summary.verdict == "crack" for r in results), len(results))
    print(f"\nheld-out no-crack photos ({len(clear)}), tiles flagged (photos with a crack):")
    print("| kind | photos | crackscan-seg | crackscan-base |\n|---|---:|---:|---:|")
    for kind in NOT_CRACKS:
        seg_row, base_row = flagged["crackscan-seg", kind], flagged["crackscan-base", kind]
        print(f"| {kind} | {seg_row[3]} | {seg_row[0]} of {seg_row[1]} ({seg_row[2]}) | {base_row[0]} of {base_row[1]} "
              f"({base_row[2]}) |")
    totals = {label: [sum(flagged[label, kind][i] for kind in NOT_CRACKS) for i in range(4)]
              for label in ("crackscan-seg", "crackscan-base")}
    print(f"false alarms, seg / base: {totals['crackscan-seg'][0] / max(1, totals['crackscan-base'][0]):.2f} "
          "(target at most 0.33)")
    recorded["false_alarms"] = {label: {"tiles_flagged": c, "tiles": t, "photos_flagged": p, "photos": n,
                                        "by_kind": {kind: dict(zip(("tiles_flagged", "tiles", "photos_flagged", "photos"),
                                                                   flagged[label, kind])) for kind in NOT_CRACKS}}
                                for label, (c, t, p, n) in totals.items()}
    write_results(f"segmentation-{args.label}", recorded)
    if not args.skip_speed:
        _speed(args.model)


def _speed(model: str) -> None:
    import crackscan

    work = Path(tempfile.mkdtemp(prefix="crackscan-seg-speed-"))
    rng = np.random.default_rng(0)
    files = real_image_files(DEFAULT_DATA)
    photo = work / "photo.jpg"
    photo_of_patches(files, rng).save(photo, quality=92)
    models = {"crackscan-base": crackscan.load("crackscan-base"), "crackscan-seg": crackscan.load(model)}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for name, predictor in models.items():
        crackscan.scan(predictor, photo).write(work / f"warm-{name}")
    for turn in range(3):
        for name, predictor in models.items():
            started = time.perf_counter()
            crackscan.scan(predictor, photo).write(work / f"{name}-{turn}")
            seconds[name].append(time.perf_counter() - started)
    base, seg = (statistics.median(seconds[n]) for n in models)
    print(f"one 4032x3024 photo scanned and written: crackscan-base {base:.2f} s, crackscan-seg {seg:.2f} s: "
          f"{seg / base:.2f}x base's time (target at most 2x)")

    big = work / "big"
    big.mkdir()
    photo_of_patches(files, rng, width=8192, height=6144).save(big / "photo-50mp.jpg", quality=92)
    reporter = ("import sys; from crackscan.cli import main; code = main(sys.argv[1:]); "
                "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0], file=sys.stderr); "
                "sys.exit(code)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", reporter, "scan", model, str(big), "--out", str(work / "big-out")],
                          check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_mb = int(done.stderr.split("VmHWM:")[1].split()[0]) / 1024
    print(f"crackscan scan of one 8192x6144 (50 MP) photo with {model}: {time.perf_counter() - started:.1f} s, "
          f"peak memory {peak_mb:.0f} MB (target under 1,536 MB)")


if __name__ == "__main__":
    main()
