"""Site adaptation on real photos: zero-shot, a plain refit, and `crackscan adapt`, in one run.

For each photo set with masks in ../shared/data/real-photos, the photos are split in half by
a seed; `crackscan label` draws K crack and K clear tiles from the first half; the run is
adapted on them; every model is graded on all tiles of the second half with
`crackscan evaluate --masks` (tile F1). brick-patches is a patch set: K + K patches adapt
it, accuracy is measured on the rest. Three heads are compared on the same labels:

- zero-shot: the run as it is;
- plain refit: a logistic head refitted on the run's training features plus the 2K tiles,
  nothing else (every row weighs one, no flips);
- crackscan adapt: the product (a site head on flips and rotations of the tiles, gated
  against the parent's head, checks).

Every model runs as the parent's backbone (float LiteRT, kept in the run) under its head:
model.keras gives the same probabilities to within 1e-5 (tests/test_site.py checks it).

Also printed: the parent's test accuracy after each, and the seconds `crackscan adapt` took.

    python benchmarks/site_adaptation.py [--run crackscan-base] [--k 10 25 100] [--seeds 0 1 2]

``--run`` is a built-in model (the default, crackscan-base: adapted as `crackscan adapt
crackscan-base` does, from the float parent made once from it and the sample of its
training features it ships) or a run folder one trained.
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

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT.parent / "shared" / "data" / "real-photos"
# Tile side per set: the Özgenel patch scale (227 px) wherever a photo holds several such
# tiles; masonry-224's crops are 224 px, one tile at that scale, so they are graded in
# quarters.
PHOTO_SETS = {"road-asphalt": 227, "asphalt-512": 227, "masonry-224": 112}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="crackscan-base", help="a built-in model or a run folder")
    parser.add_argument("--k", type=int, nargs="+", default=[10, 25, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()

    from crackscan import runs
    from crackscan.model.heads import crack_logit
    from crackscan.model.registry import resolve
    from crackscan.site.fit import fit_logistic
    from crackscan.runtime.formats import run_backbone
    from crackscan.datasets import find_dataset_for_model, read_labelled
    from crackscan.evaluate import evaluate_photos
    from crackscan.model.keras_archive import read_crack_head, read_keras_metadata
    from crackscan.runtime.predictor import Predictor, load_head_on_backbone
    from crackscan.runtime.runners import HeadOnBackboneRunner, cpu_name
    from crackscan.model.heads import sigmoid
    from crackscan.site.adapt import builtin_parent

    print(f"CPU: {cpu_name()}; parent {args.run}")
    work = Path(tempfile.mkdtemp(prefix="crackscan-site-"))
    resolved = resolve(args.run)
    parent = builtin_parent(resolved.builtin.name, print) if resolved.builtin else Path(args.run)
    keras_path = resolve(parent).file
    info = read_keras_metadata(keras_path)
    pos = info.positive_index
    parent_head = read_crack_head(keras_path, info)
    base = runs.load_features(parent)
    train, test = base["splits"] == "train", base["splits"] == "test"
    base_crack = (base["labels"] == pos).astype(float)
    backbone = run_backbone(parent, keras_path, print)

    def parent_test(head: tuple) -> float:
        return 100 * float(np.mean((crack_logit(base["features"][test], head) >= 0) == (base_crack[test] > 0)))

    def linear(head: tuple) -> Predictor:
        """The run's backbone (LiteRT float) under a logistic head: the same answers as a
        model.keras with that head, to float precision, at LiteRT's speed."""
        runner = HeadOnBackboneRunner(backbone.model_content, lambda pooled, _: sigmoid(crack_logit(pooled, head)), pos)
        return Predictor(runner, info, keras_path, "litert backbone + head")

    def plain_head(labels: Path) -> tuple:
        pixels, site = read_labelled(find_dataset_for_model(labels, info.class_names, info.positive_class)[1],
                                     info.input_size)
        features = np.concatenate([base["features"][train], backbone(pixels)])
        targets = np.concatenate([base_crack[train], (site == pos).astype(float)])
        return fit_logistic(features, targets, np.ones(len(targets)), parent_head)

    def cli(*command: str) -> None:
        done = subprocess.run([sys.executable, "-m", "crackscan.cli", *map(str, command)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"crackscan {command[0]} failed: {done.stderr.strip().splitlines()[-1]}")

    zero = linear(parent_head)
    rows = []
    for name, tile in [*PHOTO_SETS.items(), ("brick-patches", None)]:
        for seed in args.seeds:
            halves = _halves(name, seed, work / f"{name}-{seed}")
            for k in args.k:
                case = work / f"{name}-{seed}-k{k}"
                labels = case / "labels"
                if tile is None:
                    _patch_labels(halves["patches"], k, seed, labels)
                else:
                    cli("label", halves["first"], "--masks", halves["masks"], "--out", labels, "--per-class", k,
                        "--seed", seed, "--tile", tile)
                started = time.perf_counter()
                cli("adapt", args.run, labels, "--out", case / "adapted")
                seconds = time.perf_counter() - started
                adapted_metrics = runs.read_json(case / "adapted", "metrics.json")
                plain = plain_head(labels)
                scores = {}
                for label, model in (("zero-shot", zero), ("plain refit", linear(plain)),
                                     ("crackscan adapt", load_head_on_backbone(case / "adapted"))):
                    if tile is None:
                        scores[label] = _patch_accuracy(model, halves["patches"], labels)
                    else:
                        scores[label] = evaluate_photos(model, halves["second"], halves["masks"], tile=tile).metrics["f1"]
                rows.append({"set": name, "seed": seed, "k": k, **scores, "adapt_s": seconds,
                             "parent_test_plain": parent_test(plain),
                             "parent_test_adapt": 100 * adapted_metrics["parent_test"]["accuracy_after"],
                             "parent_test_before": parent_test(parent_head)})
                r = rows[-1]
                measure = "accuracy" if tile is None else "tile F1"
                print(f"{name:14s} seed {seed} K={k:3d} {measure}: zero-shot {r['zero-shot']:.3f}  plain {r['plain refit']:.3f}  "
                      f"adapt {r['crackscan adapt']:.3f}  | parent test {r['parent_test_before']:.2f}% -> plain "
                      f"{r['parent_test_plain']:.2f}%, adapt {r['parent_test_adapt']:.2f}%  | adapt {seconds:.1f} s", flush=True)

    print("\nmeans over seeds")
    print("| set | K | zero-shot | plain refit | crackscan adapt | adapt - plain | parent test after adapt | adapt s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in [*PHOTO_SETS, "brick-patches"]:
        for k in args.k:
            picked = [r for r in rows if r["set"] == name and r["k"] == k]
            mean = {key: statistics.mean(r[key] for r in picked) for key in
                    ("zero-shot", "plain refit", "crackscan adapt", "parent_test_adapt", "adapt_s")}
            print(f"| {name} | {k} | {mean['zero-shot']:.3f} | {mean['plain refit']:.3f} | {mean['crackscan adapt']:.3f} | "
                  f"{mean['crackscan adapt'] - mean['plain refit']:+.3f} | {mean['parent_test_adapt']:.2f}% | "
                  f"{mean['adapt_s']:.1f} |")
    for k in args.k:
        gains = [r["crackscan adapt"] - r["plain refit"] for r in rows if r["k"] == k and r["set"] in PHOTO_SETS]
        print(f"K={k}: adapt - plain, mean over the photo sets and seeds: {statistics.mean(gains):+.3f} F1")
    # cli() stops the benchmark on any failed command, so reaching here means none was refused.
    print(f"crackscan adapt accepted the labels in all {len(rows)} cases (none refused)")


def _halves(name: str, seed: int, folder: Path) -> dict[str, Path]:
    """The set's photos split in half by ``seed``, as folders of links (data is never copied)."""
    source = PHOTOS / name
    if (source / "images").is_dir():
        photos = sorted((source / "images").iterdir())
        order = np.random.default_rng(seed).permutation(len(photos))
        for half, picked in (("first", order[: len(photos) // 2]), ("second", order[len(photos) // 2:])):
            (folder / half).mkdir(parents=True)
            for i in picked:
                (folder / half / photos[i].name).symlink_to(photos[i].resolve())
        return {"first": folder / "first", "second": folder / "second", "masks": source / "masks"}
    return {"patches": source}


def _patch_labels(patches: Path, k: int, seed: int, labels: Path) -> None:
    """K patches of each class as a labels dataset (links); the rest are for measuring."""
    rng = np.random.default_rng(seed)
    for class_dir in sorted(p for p in patches.iterdir() if p.is_dir()):
        files = sorted(class_dir.iterdir())
        (labels / class_dir.name).mkdir(parents=True)
        for i in rng.permutation(len(files))[:k]:
            (labels / class_dir.name / files[i].name).symlink_to(files[i].resolve())


def _patch_accuracy(model, patches: Path, labels: Path) -> float:
    used = {p.name for p in labels.rglob("*") if p.is_file() or p.is_symlink()}
    correct = total = 0
    for class_dir in sorted(p for p in patches.iterdir() if p.is_dir()):
        files = [f for f in sorted(class_dir.iterdir()) if f.name not in used]
        for prediction in model.predict(files):
            correct += prediction.label == class_dir.name
            total += 1
    return correct / total


if __name__ == "__main__":
    main()
