"""The built-in models against each other, in one run: nano must pay for its accuracy in speed.

1. `crackscan predict MODEL DIR` over 2,000 real Özgenel JPEGs (the CLI as a user runs it,
   process start included), and the same through `Predictor.iter_predict` (no start-up):
   images/s of each model and nano's ratio to base (target: at least 3x with process start,
   4x without); medians of five rounds in which the models take turns. Beside them, each
   model's bare interpreter on the same patches decoded beforehand (its runner, full batches,
   3 s in each round, beside that round's predict): predict's share of it (the median of the
   rounds' ratios) is how well decoding keeps out of the model's way
   (target: at least 0.9 for base over 10,000 JPEGs, `--images 10000 --predict-only`).
2. One 4032x3024 photo scanned with each (read, tiles, inference, overlay and files
   written; median of 5): seconds and base's time over nano's (target: at least 3x).
3. Loading each by name in a fresh process, after the imports (target: under 0.5 s).
4. Accuracy of each on its held-out test split, recomputed from the data and checked
   against the split recorded when the models were built.

    python benchmarks/builtin_models.py [--data ../shared/data/ozgenel-12k] [--images N] [--predict-only]
        [--results builtin-models]

Results: results/builtin-models.json (or --results NAME).
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

from common import DEFAULT_DATA, link_subset, photo_of_patches, real_image_files, write_results

NAMES = ("crackscan-base", "crackscan-nano")
ROUNDS = 5
LOAD_TIMER = ("import time, crackscan; started = time.perf_counter(); crackscan.load({name!r}); "
              "print(time.perf_counter() - started)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--predict-only", action="store_true", help="only part 1, crackscan predict")
    parser.add_argument("--results", default="builtin-models", help="names results/NAME.json")
    args = parser.parse_args()

    import crackscan
    from crackscan.model.builtin import builtin_models, held_out_test_files
    from crackscan.images import list_image_files, load_for_model
    from crackscan.runtime.runners import cpu_name

    print(f"CPU: {cpu_name()}")
    work = Path(tempfile.mkdtemp(prefix="crackscan-builtin-"))
    folder = link_subset(args.data, work / "patches", args.images // 2)
    files = list_image_files([folder])

    print(f"\n1. crackscan predict over {len(files)} JPEGs of 227x227 (median of {ROUNDS} rounds, models in turn)")
    cli_rounds: dict[str, list[float]] = {name: [] for name in NAMES}
    api_rounds: dict[str, list[float]] = {name: [] for name in NAMES}
    bare_rounds: dict[str, list[float]] = {name: [] for name in NAMES}
    predictors = {name: crackscan.load(name) for name in NAMES}
    # The bare interpreter: the model's own runner on the same patches decoded beforehand, full
    # batches, nothing around it: what predict's pipeline is measured against.
    decoded = {name: np.stack([load_for_model(path, predictors[name].input_size) for path in files[:512]])
               for name in NAMES}
    for name in NAMES:
        list(predictors[name].iter_predict(files[:64]))  # warm-up

    def bare(name: str) -> float:
        started, done = time.perf_counter(), 0
        while time.perf_counter() - started < 3.0:
            predictors[name].runner(decoded[name])
            done += len(decoded[name])
        return done / (time.perf_counter() - started)

    # The models take turns, and each round measures the bare interpreter beside the CLI and the
    # API, so the shared machine's drift (25% between runs here) falls on a ratio's both sides.
    for _ in range(ROUNDS):
        for name in NAMES:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "crackscan.cli", "predict", name, str(folder), "--format", "csv"],
                           check=True, stdout=subprocess.DEVNULL)
            cli_rounds[name].append(len(files) / (time.perf_counter() - started))
            started = time.perf_counter()
            done = sum(1 for _ in predictors[name].iter_predict(files))
            api_rounds[name].append(done / (time.perf_counter() - started))
            bare_rounds[name].append(bare(name))
    cli_speed = {name: statistics.median(values) for name, values in cli_rounds.items()}
    api_speed = {name: statistics.median(values) for name, values in api_rounds.items()}
    bare_speed = {name: statistics.median(values) for name, values in bare_rounds.items()}
    cli_over_bare = {name: statistics.median(c / b for c, b in zip(cli_rounds[name], bare_rounds[name]))
                     for name in NAMES}
    api_over_bare = {name: statistics.median(a / b for a, b in zip(api_rounds[name], bare_rounds[name]))
                     for name in NAMES}
    for name in NAMES:
        print(f"   {name}: {cli_speed[name]:6.0f} images/s with process start ({cli_over_bare[name]:.2f} "
              f"of the bare interpreter's {bare_speed[name]:.0f} in the same round), {api_speed[name]:6.0f} without "
              f"({api_over_bare[name]:.2f})")
    print(f"   nano / base: {cli_speed['crackscan-nano'] / cli_speed['crackscan-base']:.2f}x with process start "
          f"(target >= 3x), {api_speed['crackscan-nano'] / api_speed['crackscan-base']:.2f}x without (target >= 4x)")
    figures = {"images": len(files), "predict_cli_images_per_s": cli_speed, "iter_predict_images_per_s": api_speed,
               "bare_interpreter_images_per_s": bare_speed,
               "cli_over_bare": cli_over_bare, "iter_predict_over_bare": api_over_bare,
               "rounds": {"cli": cli_rounds, "iter_predict": api_rounds, "bare": bare_rounds},
               "nano_over_base_cli": cli_speed["crackscan-nano"] / cli_speed["crackscan-base"],
               "nano_over_base_iter_predict": api_speed["crackscan-nano"] / api_speed["crackscan-base"]}
    if args.predict_only:
        write_results(args.results, figures)
        return

    print("\n2. one 4032x3024 photo, scanned and written (median of 5)")
    photo = work / "photo.jpg"
    photo_of_patches(real_image_files(args.data), np.random.default_rng(0)).save(photo, quality=92)
    scan_seconds = {}
    for name in NAMES:
        predictor = crackscan.load(name)
        crackscan.scan(predictor, photo).write(work / "warm-up")
        times = []
        for i in range(5):
            started = time.perf_counter()
            result = crackscan.scan(predictor, photo)
            result.write(work / f"{name}-{i}")
            times.append(time.perf_counter() - started)
        scan_seconds[name] = statistics.median(times)
        print(f"   {name}: {scan_seconds[name]:.3f} s, {result.summary.tiles} tiles of {result.summary.tile} px")
    print(f"   base / nano: {scan_seconds['crackscan-base'] / scan_seconds['crackscan-nano']:.2f}x (target >= 3x)")
    figures["scan_12mp_s"] = scan_seconds

    print("\n3. load by name in a fresh process, after the imports (median of 3)")
    for name in NAMES:
        seconds = [float(subprocess.run([sys.executable, "-c", LOAD_TIMER.format(name=name)], check=True,
                                        capture_output=True, text=True).stdout) for _ in range(3)]
        print(f"   {name}: {statistics.median(seconds):.3f} s (target < 0.5 s)")

    print("\n4. accuracy on the held-out test split")
    for name, model in builtin_models().items():
        test_files = held_out_test_files(model, args.data)
        result = crackscan.evaluate(name, _as_dataset(test_files, work / f"test-{name}"))
        m = result.metrics
        print(f"   {name}: {100 * m['accuracy']:.2f}% ({m['errors']} of {m['count']} wrong; "
              f"recorded {100 * model.test_accuracy:.2f}%)")
        figures.setdefault("test_accuracy", {})[name] = m["accuracy"]
    write_results(args.results, figures)


def _as_dataset(files: list[tuple[Path, str]], folder: Path) -> Path:
    for path, class_name in files:
        (folder / class_name).mkdir(parents=True, exist_ok=True)
        (folder / class_name / path.name).symlink_to(path.resolve())
    return folder


if __name__ == "__main__":
    main()
