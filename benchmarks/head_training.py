"""Head training: the origin's settings against crackscan's defaults, on the same cached features.

For 600 and 3,000 real Özgenel images and both network sizes (MobileNetV2 alpha 0.35 at
96 px with an 80:10:10 split, the README's small recipe; alpha 1.0 at 160 px with the
origin's 70:24:6), the backbone runs once; then crackscan's own ``fit_head`` trains the
head twice on those features: with the origin's settings (10 epochs, Adam 1e-4, batch 16,
no early stopping) and with the defaults (Adam 1e-3, batch 64, stop once validation loss
has not gained 1e-3 for 5 epochs, at most 100). Prints, for each, the epochs run, the kept
epoch, whether the run ended still improving, validation loss and accuracy, test
accuracy, and the seconds the head took.

    python benchmarks/head_training.py [--data ../shared/data/ozgenel-12k]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from common import DEFAULT_DATA, link_subset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()

    from crackscan.testing import use_offline_keras_home

    work = Path(tempfile.mkdtemp(prefix="crackscan-head-"))
    use_offline_keras_home(work / "keras-home")  # no-op where ../shared is absent: Keras downloads

    from crackscan import _tf
    from crackscan.datasets import find_dataset, split_by_content
    from crackscan.metrics import classification_metrics
    from crackscan.model.classifier import build_classifier
    from crackscan.settings import ORIGIN_HEAD_SETTINGS, TrainConfig
    from crackscan.train import embed_dataset, fit_head

    keras = _tf.keras()
    print(f"{'images':>6}  {'network':<12} {'head settings':<9} {'epochs':>6} {'kept':>4} {'still falling':<13} "
          f"{'val loss':>8} {'val acc':>8} {'test acc':>8} {'head s':>6}")
    for per_class in (300, 1500):
        data = link_subset(args.data, work / f"data-{per_class}", per_class)
        dataset = find_dataset(data)
        for size, alpha, split in ((96, 0.35, "80:10:10"), (160, 1.0, "70:24:6")):
            base = TrainConfig(image_size=size, alpha=alpha, split=split, seed=7)
            classifier = build_classifier(base)
            embedded = embed_dataset(classifier, dataset, base)
            labels = np.array([dataset.samples[i].label for i in embedded.indices])
            splits = np.array(split_by_content(labels, [f.sha256 for f in embedded.facts], base.split, base.seed))
            for name, changes in (("origin", ORIGIN_HEAD_SETTINGS), ("default", {})):
                config = base.replace(**changes)
                keras.utils.set_random_seed(config.seed)
                head = build_classifier(config).head  # a fresh head on the same features
                started = time.perf_counter()
                fitted = fit_head(head, embedded.features, labels, splits, config, progress=False)
                seconds = time.perf_counter() - started
                probabilities = np.asarray(head.predict(embedded.features, verbose=0))
                val, test = (classification_metrics(labels[splits == part], probabilities[splits == part],
                                                    dataset.class_names, dataset.positive_index)
                             for part in ("val", "test"))
                print(f"{2 * per_class:>6}  {alpha:g} @ {size:<5} {name:<9} {len(fitted.history):>6} "
                      f"{fitted.best_epoch:>4} {'yes' if fitted.underfit else 'no':<13} {val['loss']:>8.4f} "
                      f"{100 * val['accuracy']:>7.2f}% {100 * test['accuracy']:>7.2f}% {seconds:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
