"""Teaching crackscan-seg a site: a few masked photos of one set, the rest of it to test.

For each shared mask set: ``--photos`` photos (4 of road-asphalt, whose test fifth is 8)
adapt crackscan-seg with `crackscan adapt crackscan-seg PHOTOS --masks MASKS` as a user runs
it (cross-validation, the honest refusal, the int8 export), timed as a whole; then the
built-in (zero-shot) and the adapted run's int8 file are graded with `evaluate` on up to
``--test`` other photos of the same set, and on DeepCrack's test photos for what adapting
cost elsewhere. For the five sets crackscan-seg was trained on, both sides come from their
test fifth, which it never saw; GAPs384 and ShadowCrack it never saw at all.

    python benchmarks/segmenter_adapt.py                 # every set, ~25 min on 2 cores
    python benchmarks/segmenter_adapt.py --sets gaps384-train --test 30
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_results  # noqa: E402

SETS = {"deepcrack-train": 8, "crack500-train": 8, "road-asphalt": 4, "asphalt-512": 8, "masonry-224": 8,
        "gaps384-train": 8, "shadowcrack-train": 8}
TRAINED_ON = ("deepcrack-train", "crack500-train", "road-asphalt", "asphalt-512", "masonry-224")
ELSEWHERE = "deepcrack-train"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos-root", type=Path, default=ROOT.parent / "shared" / "data" / "real-photos")
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--test", type=int, default=60, help="photos of the same set to grade on, at most")
    parser.add_argument("--elsewhere", type=int, default=20, help="DeepCrack test photos to check forgetting on")
    parser.add_argument("--results", default="segmenter-adapt", help="results/NAME.json")
    args = parser.parse_args()
    from crackscan.testing import use_offline_keras_home

    work = Path(tempfile.mkdtemp(prefix="crackscan-seg-adapt-"))
    use_offline_keras_home(work / "keras-home")
    import numpy as np

    from crackscan import evaluate_photos, load
    from crackscan.errors import CrackscanError
    from crackscan.runtime.predictor import images_per_second
    from crackscan.segment.adapt import adapt_segmenter
    from crackscan.segment.masksets import find_mask_sets

    def chosen(name: str) -> list:
        items, _ = find_mask_sets([args.photos_root / name])
        pool = [i for i in items if i.split == "test"] if name in TRAINED_ON else items
        return [pool[i] for i in np.random.default_rng(0).permutation(len(pool))]

    def graded(model, items, masks: Path) -> dict:
        folder = work / f"eval-{time.perf_counter_ns()}"
        folder.mkdir()
        for item in items:
            (folder / item.photo.name).symlink_to(item.photo.resolve())
        pixel = evaluate_photos(model, folder, masks).metrics["pixel"]["tolerance_2px"]
        return {"f1": pixel["f1"], "precision": pixel["precision"], "recall": pixel["recall"], "photos": len(items)}

    # crackscan-seg in float, as adapt reads it back (ImageNet backbone, dequantized decoder):
    # the int8 file loses or gains a few points by itself, and the adapted run is int8 too.
    from crackscan.model.info import ModelInfo
    from crackscan.model.keras_archive import save_keras_model
    from crackscan.model.segmenter import end_to_end
    from crackscan.progress import Progress
    from crackscan.segment.adapt import read_parent
    from crackscan.segment.train import SEGMENT_CLASSES, SEGMENT_PATCH_SIZE

    parent = read_parent("crackscan-seg", Progress())
    parent_float = work / "crackscan-seg-float.keras"
    save_keras_model(end_to_end(parent.taps, parent.decoder()), parent_float,
                     ModelInfo(SEGMENT_CLASSES, "crack", parent.config.image_size, SEGMENT_PATCH_SIZE, "MobileNetV2",
                               parent.config.alpha, "benchmark", task="segment"))
    elsewhere = chosen(ELSEWHERE)[:args.elsewhere]
    zero_elsewhere = graded("crackscan-seg", elsewhere, args.photos_root / ELSEWHERE / "masks")
    rows = []
    for name in args.sets:
        pool = chosen(name)
        count = SETS[name]
        site, test = pool[:count], pool[count:count + args.test]
        photos = work / name / "photos"
        photos.mkdir(parents=True)
        for item in site:
            (photos / item.photo.name).symlink_to(item.photo.resolve())
        masks = args.photos_root / name / "masks"
        started = time.perf_counter()
        row = {"set": name, "adapt_photos": len(site), "test_photos": len(test),
               "zero_shot": graded("crackscan-seg", test, masks), "zero_shot_float": graded(parent_float, test, masks)}
        try:
            adapted = adapt_segmenter("crackscan-seg", photos, masks, work / name / "run")
        except CrackscanError as error:
            row.update(refused=str(error), adapt_s=round(time.perf_counter() - started, 1))
            print(f"{name}: zero-shot {row['zero_shot']['f1']:.3f}; adapting refused in {row['adapt_s']:.0f} s: {error}",
                  flush=True)
            rows.append(row)
            continue
        row["adapt_s"] = round(time.perf_counter() - started, 1)
        int8_file = adapted.path / adapted.metrics["int8"]["file"]
        row["cross_validated"] = {k: adapted.metrics["site_cross_validated"][k]["f1"] for k in ("before", "after")}
        row["adapted_int8"] = graded(int8_file, test, masks)
        row["adapted_float"] = graded(adapted.path, test, masks)
        row["elsewhere"] = {"set": ELSEWHERE, "zero_shot": zero_elsewhere["f1"],
                            "adapted_int8": graded(int8_file, elsewhere, args.photos_root / ELSEWHERE / "masks")["f1"]}
        row["windows_per_s"] = {"crackscan-seg": round(images_per_second(load("crackscan-seg")), 1),
                                "adapted": round(images_per_second(load(int8_file)), 1)}
        print(f"{name}: {len(site)} photos adapt in {row['adapt_s']:.0f} s; on {len(test)} other photos pixel F1 within "
              f"2 px {row['zero_shot']['f1']:.3f} -> {row['adapted_int8']['f1']:.3f} int8, "
              f"{row['zero_shot_float']['f1']:.3f} -> {row['adapted_float']['f1']:.3f} float; {ELSEWHERE} {zero_elsewhere['f1']:.3f} -> "
              f"{row['elsewhere']['adapted_int8']:.3f}; windows/s {row['windows_per_s']}", flush=True)
        rows.append(row)
    write_results(args.results, {"sets": rows, "zero_shot_is": "crackscan-seg's int8 file as shipped",
                                      "tolerance_px": 2, "threshold": 0.5})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
