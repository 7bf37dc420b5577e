"""Origin's training method vs `crackscan train`, on the same images and the same split.

(a) origin: image_dataset_from_directory + model.fit, the frozen backbone running on every
    batch of every epoch (TensorFlow transfer-learning tutorial style), same settings.
(b) crackscan train: embed once, fit the head on cached features (run as the CLI).

Both train on crackscan's split (the origin reads it as folders of links), so the test
images are the same. Prints wall times, the speed ratio and both test accuracies.

    python benchmarks/train_speed.py [--data ../shared/data/ozgenel-12k] [--per-class N] [--origin-epochs K]
        [--runs 2]

Results: results/train-speed.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DEFAULT_DATA, link_subset, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--per-class", type=int, default=0, help="use only the first N images of each class (0: all)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--origin-epochs", type=int,
                        help="run the origin for only this many epochs and add its last epoch's time for each of "
                             "the rest (every epoch is the same forward passes): minutes instead of half an hour")
    parser.add_argument("--runs", type=int, default=2,
                        help="crackscan train runs in a row: the first converts and quantizes the backbone, later "
                             "ones reuse them (runtime.backbone_cache), as a user's second training does")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="crackscan-bench-"))
    from crackscan.testing import use_offline_keras_home

    use_offline_keras_home(work / "keras-home")  # no-op where ../shared is absent: Keras downloads
    data = link_subset(args.data, work / "data", args.per_class) if args.per_class else args.data.resolve()

    # (b) crackscan, as a user runs it, in a cache folder of its own (nothing from earlier runs).
    environment = {**os.environ, "CRACKSCAN_CACHE": str(work / "cache")}
    crackscan_runs = []
    for index in range(args.runs):
        run = work / f"run-{index}"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "crackscan.cli", "train", str(data), "--out", str(run),
                        "--epochs", str(args.epochs)], check=True, stdout=subprocess.DEVNULL, env=environment)
        seconds = time.perf_counter() - started
        metrics = json.loads((run / "metrics.json").read_text())
        crackscan_runs.append({"wall_s": seconds, "timing": metrics["timing"], "test_accuracy": metrics["test"]["accuracy"],
                               "embedding_backend": metrics["embedding_backend"],
                               "int8_backbone": {k: metrics["int8_backbone"][k] for k in ("file", "made", "seconds")}})

    # (a) the origin's method on the same split.
    folders = split_folders(data, work / "run-0" / "split.csv", work / "origin-split")
    origin_s, origin_accuracy, origin_epochs = train_origin_way(folders, args.epochs, args.origin_epochs or args.epochs)

    n = sum(metrics["images"]["split"].values())
    print(f"images: {n} ({metrics['images']['split']}), epochs {args.epochs}, {os.cpu_count()} CPUs")
    print(f"{'method':<52}{'wall s':>9}{'test acc':>10}")
    origin_label = "origin: image_dataset_from_directory + fit" + (
        f" ({origin_epochs} run)" if origin_epochs < args.epochs else "")
    print(f"{origin_label:<52}{origin_s:>9.1f}{100 * origin_accuracy:>9.2f}%")
    for index, done in enumerate(crackscan_runs):
        label = "crackscan train" + (" (first: converts the backbone)" if index == 0 else " (backbone kept)")
        print(f"{label:<52}{done['wall_s']:>9.1f}{100 * done['test_accuracy']:>9.2f}%   {done['timing']}")
    ratios = ", ".join(f"{origin_s / done['wall_s']:.1f}x" for done in crackscan_runs)
    print(f"speed-up: {ratios} "
          f"(target 20x); accuracy difference {100 * (metrics['test']['accuracy'] - origin_accuracy):+.2f} points")
    write_results("train-speed", {
        "images": n, "epochs": args.epochs, "origin_s": origin_s, "origin_epochs_run": origin_epochs,
        "origin_test_accuracy": origin_accuracy, "crackscan_runs": crackscan_runs,
        "speed_up": [origin_s / done["wall_s"] for done in crackscan_runs]})


def split_folders(data: Path, split_csv: Path, target: Path) -> dict[str, Path]:
    with open(split_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            link = target / row["split"] / row["class"] / Path(row["path"]).name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((data / row["path"]).resolve())
    return {part: target / part for part in ("train", "val", "test")}


def train_origin_way(folders: dict[str, Path], epochs: int, run_epochs: int) -> tuple[float, float, int]:
    """The origin's wall time for ``epochs`` (measured over ``run_epochs`` of them, the last
    one's time added for each of the rest), its test accuracy, and the epochs it ran."""
    from crackscan import _tf
    from crackscan.settings import TrainConfig
    from crackscan.model.classifier import build_classifier

    keras = _tf.keras()
    config = TrainConfig(epochs=epochs)
    keras.utils.set_random_seed(config.seed)
    started = time.perf_counter()

    def dataset(folder: Path, shuffle: bool):
        return keras.utils.image_dataset_from_directory(
            folder, image_size=(config.image_size, config.image_size), batch_size=config.batch_size,
            shuffle=shuffle, seed=config.seed, verbose=False)

    train, val, test = dataset(folders["train"], True), dataset(folders["val"], False), dataset(folders["test"], False)
    model = build_classifier(config).model
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    ends = []

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.perf_counter())

    model.fit(train, validation_data=val, epochs=run_epochs, verbose=2, callbacks=[EpochTimes()])
    _, accuracy = model.evaluate(test, verbose=0)
    last_epoch = ends[-1] - (ends[-2] if len(ends) > 1 else started)
    return time.perf_counter() - started + (epochs - run_epochs) * last_epoch, float(accuracy), run_epochs


if __name__ == "__main__":
    main()
