"""Origin's training method vs `crackscan train`, on the same images and the same split.

(a) origin: image_dataset_from_directory + model.fit, the frozen backbone running on every
    batch of every epoch (TensorFlow transfer-learning tutorial style), same settings.
(b) crackscan train: embed once, fit the head on cached features (run as the CLI).

Both train on crackscan's split (the origin reads it as folders of links), so the test
images are the same. Prints wall times, the speed ratio and both test accuracies.

    python benchmarks/train_speed.py [--data ../shared/data/ozgenel-12k] [--per-class N]
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

from common import DEFAULT_DATA, link_subset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--per-class", type=int, default=0, help="use only the first N images of each class (0: all)")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="crackscan-bench-"))
    from crackscan.testing import use_offline_keras_home

    use_offline_keras_home(work / "keras-home")  # no-op where ../shared is absent: Keras downloads
    data = link_subset(args.data, work / "data", args.per_class) if args.per_class else args.data.resolve()

    # (b) crackscan, as a user runs it.
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "crackscan.cli", "train", str(data), "--out", str(work / "run"),
                    "--epochs", str(args.epochs)], check=True, stdout=subprocess.DEVNULL)
    crackscan_s = time.perf_counter() - started
    metrics = json.loads((work / "run" / "metrics.json").read_text())

    # (a) the origin's method on the same split.
    folders = split_folders(data, work / "run" / "split.csv", work / "origin-split")
    origin_s, origin_accuracy = train_origin_way(folders, args.epochs)

    n = sum(metrics["images"]["split"].values())
    print(f"images: {n} ({metrics['images']['split']}), epochs {args.epochs}, {os.cpu_count()} CPUs")
    print(f"{'method':<44}{'wall s':>9}{'test acc':>10}")
    print(f"{'origin: image_dataset_from_directory + fit':<44}{origin_s:>9.1f}{100 * origin_accuracy:>9.2f}%")
    print(f"{'crackscan train (embed once, fit head)':<44}{crackscan_s:>9.1f}{100 * metrics['test']['accuracy']:>9.2f}%")
    print(f"speed-up: {origin_s / crackscan_s:.1f}x; accuracy difference "
          f"{100 * (metrics['test']['accuracy'] - origin_accuracy):+.2f} points; "
          f"crackscan peak memory {metrics['peak_memory_mb']:.0f} MB")


def split_folders(data: Path, split_csv: Path, target: Path) -> dict[str, Path]:
    with open(split_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            link = target / row["split"] / row["class"] / Path(row["path"]).name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((data / row["path"]).resolve())
    return {part: target / part for part in ("train", "val", "test")}


def train_origin_way(folders: dict[str, Path], epochs: int) -> tuple[float, float]:
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
    model.fit(train, validation_data=val, epochs=epochs, verbose=2)
    _, accuracy = model.evaluate(test, verbose=0)
    return time.perf_counter() - started, float(accuracy)


if __name__ == "__main__":
    main()
