"""Teaching crackscan-seg a site from marks on the page, as an inspector makes them.

For each set: the same ``--photos`` photos segmenter_adapt.py teaches (the same draw), each
scanned with crackscan-seg; then a simulated inspector marks them as the web page lets one:
every measured crack that lies off the true cracks (under a fifth of its centreline within
2 px of the mask) is clicked "Not a crack", and each stretch of a true crack it missed (15 px
or more of the true mask's centreline not within 2 px of the model's mask) gets a stroke drawn
along it by a shaky hand (a smooth offset of up to ``--hand`` px), at most ``--strokes`` a
photo, the longest first. The marks go through the server's own code (SiteLoop.save_marks:
the snapping, the masks it writes) and the page's Adapt (SiteLoop.adapt: cross-validation,
the honest refusal, the int8 export), timed as a whole. crackscan-seg and the adapted int8
file are then graded with `evaluate` on up to ``--test`` other photos of the set.

    python benchmarks/segmenter_marks.py                          # three sets, ~10 min on 2 cores
    python benchmarks/segmenter_marks.py --sets gaps384-train
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_results  # noqa: E402

SETS = {"gaps384-train": 8, "shadowcrack-train": 8, "asphalt-512": 8}
TRAINED_ON = ("deepcrack-train", "crack500-train", "road-asphalt", "asphalt-512", "masonry-224")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos-root", type=Path, default=ROOT.parent / "shared" / "data" / "real-photos")
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--test", type=int, default=60, help="photos of the same set to grade on, at most")
    parser.add_argument("--strokes", type=int, default=5, help="missed cracks stroked per photo, at most")
    parser.add_argument("--hand", type=float, default=2.0, help="px a stroke strays from the crack, at most")
    parser.add_argument("--results", default="segmenter-marks", help="results/NAME.json")
    args = parser.parse_args()
    from crackscan.testing import use_offline_keras_home

    work = Path(tempfile.mkdtemp(prefix="crackscan-seg-marks-"))
    use_offline_keras_home(work / "keras-home")
    import numpy as np

    from crackscan import evaluate_photos, load
    from crackscan.images import read_pixels
    from crackscan.masks import read_mask
    from crackscan.measure.cracks import measure
    from crackscan.photo.scan import scan
    from crackscan.segment.masksets import find_mask_sets
    from crackscan.segment.pixels import _near
    from crackscan.serve.site_loop import SiteLoop

    def chosen(name: str) -> list:  # as segmenter_adapt.py draws them
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

    def share_near(points: np.ndarray, area: np.ndarray) -> float:
        rows = np.clip(np.round(points[:, 1]).astype(int), 0, area.shape[0] - 1)
        columns = np.clip(np.round(points[:, 0]).astype(int), 0, area.shape[1] - 1)
        return float(area[rows, columns].mean())

    def missed_runs(line: np.ndarray, found: np.ndarray, shortest: int = 15) -> list[np.ndarray]:
        """The stretches of a true crack's centreline the model's mask is not within 2 px of."""
        rows = np.clip(np.round(line[:, 1]).astype(int), 0, found.shape[0] - 1)
        columns = np.clip(np.round(line[:, 0]).astype(int), 0, found.shape[1] - 1)
        off = ~found[rows, columns]
        edges = np.flatnonzero(np.diff(np.concatenate([[0], off.astype(int), [0]])))
        return [line[a:b] for a, b in zip(edges[0::2], edges[1::2]) if b - a >= shortest]

    def shaky(line: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        along = np.linspace(0, 1, len(line))
        offset = sum(rng.uniform(-1, 1) * np.sin(np.pi * (k + 1) * along + rng.uniform(0, 6)) for k in range(3)) / 3
        tangent = np.gradient(line, axis=0)
        tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-6)
        return line + args.hand * offset[:, None] * np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)

    parent = load("crackscan-seg")
    rows = []
    for name in args.sets:
        pool = chosen(name)
        site, test = pool[:SETS[name]], pool[SETS[name]:SETS[name] + args.test]
        masks = args.photos_root / name / "masks"
        labels = work / name / "labels"
        loop = SiteLoop(labels, "crackscan-seg", parent)
        rng = np.random.default_rng(1)
        clicks = strokes = 0
        started = time.perf_counter()
        for item in site:
            pixels = read_pixels(item.photo)
            truth = read_mask(item.mask, pixels.shape[1], pixels.shape[0])
            result = scan(parent, pixels, threshold=0.5)
            said = result.mask >= (128 if result.mask.dtype == np.uint8 else 0.5)  # a uint8 map is 0-255
            near_truth, near_said = _near(truth, 2), _near(said, 2)
            false = [(np.asarray(line, float), crack.max_width_px) for crack in result.cracks
                     for line in crack.polylines
                     if share_near(np.concatenate([np.asarray(p, float) for p in crack.polylines]), near_truth) < 0.2]
            missed = sorted((run for crack in measure(truth) for line in crack.polylines
                             for run in missed_runs(np.asarray(line, float), near_said)), key=len,
                            reverse=True)[:args.strokes]
            drawn = [shaky(run, rng) for run in missed]
            clicks += len({id(line) for line, _ in false})
            strokes += len(drawn)
            if false or drawn:
                loop.save_marks(pixels, item.photo.read_bytes(), item.photo.name, false, drawn)
        marking_s = time.perf_counter() - started
        row = {"set": name, "marked_photos": len(list((labels / "masks").glob("*.png"))) if (labels / "masks").is_dir()
               else 0, "not_a_crack_lines": clicks, "strokes": strokes, "test_photos": len(test),
               "zero_shot": graded("crackscan-seg", test, masks)}
        started = time.perf_counter()
        answer = loop.adapt()
        row["adapt_s"] = round(time.perf_counter() - started, 1)
        row["marking_s"] = round(marking_s, 1)
        row["cross_validated"] = answer["site_cross_validated"]["figure"]
        if answer["swapped"]:
            run = labels.parent / answer["run"]
            row["adapted_int8"] = graded(loop.predictor.path, test, masks)
            row["adapted_float"] = graded(run, test, masks)
        else:
            row["refused"] = answer["reason"]
        print(f"{name}: {row['marked_photos']} photos, {clicks} false-crack lines and {strokes} strokes marked; adapt "
              f"{row['adapt_s']:.0f} s, cross-validated {row['cross_validated']}; on {len(test)} other photos pixel F1 "
              f"within 2 px {row['zero_shot']['f1']:.3f} -> "
              + (f"{row['adapted_int8']['f1']:.3f} int8 ({row['adapted_float']['f1']:.3f} float)" if answer["swapped"]
                 else "refused"), flush=True)
        rows.append(row)
    write_results(args.results, {"sets": rows, "zero_shot_is": "crackscan-seg's int8 file as shipped",
                                 "tolerance_px": 2, "threshold": 0.5, "hand_px": args.hand,
                                 "strokes_per_photo": args.strokes})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
