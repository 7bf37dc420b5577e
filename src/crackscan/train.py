"""Training: embed every image once with the frozen backbone, fit the head on the cache.

With the backbone frozen and no augmentation, every epoch of the origin's method pushes
the same images through the same backbone to the same features. Computing them once and
fitting the head (pooling output -> dropout -> dense softmax) on the cached features
trains exactly the same model, at a fraction of the cost.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from . import _tf, plots, runs
from .datasets import (Dataset, Skipped, find_dataset, iter_labelled_batches, read_labelled, split_by_content,
                       write_skipped_csv)
from .errors import CrackscanError
from .files import write_bytes
from .images import FileFacts, read_pixels
from .metrics import classification_metrics
from .model.classifier import Classifier, build_classifier, feature_extractor
from .model.info import ModelInfo
from .model.heads import sigmoid
from .model.keras_archive import read_crack_head, read_keras_metadata, save_keras_model
from .progress import Progress, as_progress
from .runs import Run
from .runtime import backbone_cache
from .runtime.int8_backbone import CALIBRATION_IMAGES, CHECK_IMAGES, make_int8_backbone, sample_rows
from .runtime.runners import BackboneRunner, KerasRunner, Runner
from .settings import TrainConfig
from .version import __version__


@dataclasses.dataclass
class Embedded:
    features: np.ndarray  # one row per readable sample
    indices: np.ndarray  # which samples of the dataset the rows are
    facts: list[FileFacts]
    skipped: list[Skipped]
    backend: str
    runner: Runner | None = None


def train(
    data: str | Path,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    progress: Progress | bool = False,
    force: bool = False,
    **settings: Any,
) -> Run:
    """Trains the crack classifier on a folder of class folders and writes a run folder.

    ``settings`` override fields of ``config`` (e.g. ``epochs=5, image_size=96``).
    """
    started = time.perf_counter()
    report = as_progress(progress)
    config = (config or TrainConfig()).replace(**settings)
    dataset = find_dataset(data, config.positive_class)
    with runs.writing(out, force) as folder:
        return _train_into(folder, dataset, config, report, started)


def _train_into(out: Path, dataset: Dataset, config: TrainConfig, report: Progress, started: float) -> Run:
    keras = _tf.keras()
    keras.utils.set_random_seed(config.seed)
    classifier = build_classifier(config, len(dataset.class_names))

    timing: dict[str, float] = {}
    tick = time.perf_counter()
    embedded = embed_dataset(classifier, dataset, config, report)
    timing["read_and_embed_s"] = time.perf_counter() - tick
    if len(embedded.indices) == 0:
        raise CrackscanError(f"no readable images in {dataset.root} ({len(embedded.skipped)} files skipped)")

    labels = np.array([dataset.samples[i].label for i in embedded.indices])
    splits = np.array(split_by_content(labels, [f.sha256 for f in embedded.facts], config.split, config.seed))
    _check_split(splits, labels, dataset)

    tick = time.perf_counter()
    fitted = fit_head(classifier.head, embedded.features, labels, splits, config, report)
    timing["fit_head_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    probabilities = np.asarray(classifier.head.predict(embedded.features, batch_size=1024, verbose=0))
    results = {
        part: classification_metrics(labels[splits == part], probabilities[splits == part],
                                     dataset.class_names, dataset.positive_index)
        for part in ("val", "test")
    }
    _write_run_files(out, classifier, config, dataset, embedded, labels, splits, fitted)
    timing["save_s"] = time.perf_counter() - tick
    int8 = None
    if config.int8_backbone:
        tick = time.perf_counter()
        int8 = _int8_backbone(out, classifier, config, dataset, embedded, splits, report)
        timing["int8_backbone_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    _write_plots(out, dataset, embedded, labels, splits, probabilities, fitted.history, fitted.best_epoch,
                 results["test"])
    timing["plots_s"] = time.perf_counter() - tick
    timing["total_s"] = time.perf_counter() - started
    metrics = _training_metrics(results, fitted, dataset, embedded, splits, timing)
    metrics["int8_backbone"] = int8
    runs.write_metrics(out, metrics)
    runs.finish(out, dataset.root)
    return Run(out, config, metrics, fitted.history)


def _write_run_files(out: Path, classifier: Classifier, config: TrainConfig, dataset: Dataset, embedded: "Embedded",
                     labels: np.ndarray, splits: np.ndarray, fitted: "HeadFit") -> None:
    info = ModelInfo(
        class_names=dataset.class_names,
        positive_class=dataset.positive_class,
        input_size=config.image_size,
        patch_size=_typical_patch_size(embedded.facts),
        alpha=config.alpha,
        crackscan_version=__version__,
        task="classify",
    )
    save_keras_model(classifier.model, out / runs.MODEL_FILE, info)
    config.save(out / runs.CONFIG_FILE)
    runs.write_history(out, fitted.history)
    runs.save_features(out, embedded.features, labels, splits)
    if isinstance(embedded.runner, BackboneRunner):
        write_bytes(out / runs.BACKBONE_FILE, embedded.runner.model_content)
    runs.write_split(out / runs.SPLIT_FILE, (
        (dataset.relative(dataset.samples[i].path), dataset.class_names[dataset.samples[i].label], split, facts.sha256)
        for i, split, facts in zip(embedded.indices, splits, embedded.facts)
    ))
    write_skipped_csv(out / runs.SKIPPED_FILE, embedded.skipped)


def _int8_backbone(out: Path, classifier: Classifier, config: TrainConfig, dataset: Dataset, embedded: "Embedded",
                   splits: np.ndarray, report: Progress) -> dict[str, Any]:
    """The run's int8 backbone, calibrated on its training images and checked with its head on
    its validation and test images (runtime.int8_backbone)."""
    extractor = feature_extractor(classifier.model)
    if (out / runs.BACKBONE_FILE).is_file():
        float_backbone = (out / runs.BACKBONE_FILE).read_bytes()
    else:  # embedded with Keras (a small set): the float backbone scan would convert anyway, kept now
        report.step("converting the backbone to float LiteRT (kept in the run)")
        float_backbone = backbone_cache.float_litert(extractor)
        write_bytes(out / runs.BACKBONE_FILE, float_backbone)
    info = read_keras_metadata(out / runs.MODEL_FILE)
    weights, offset = read_crack_head(out / runs.MODEL_FILE, info)
    samples = [dataset.samples[i] for i in embedded.indices]
    train_rows = np.flatnonzero(splits == "train")
    check_rows = np.flatnonzero(splits != "train")
    calibration = read_labelled([samples[i] for i in train_rows[sample_rows(len(train_rows), CALIBRATION_IMAGES,
                                                                            config.seed)]], config.image_size)[0]
    checked_rows = check_rows[sample_rows(len(check_rows), CHECK_IMAGES, config.seed)]
    name = "validation and test images"
    check = read_labelled([samples[i] for i in checked_rows], config.image_size)
    # Embedded with this float backbone, these images' features are known already.
    known = embedded.backend == "litert" and len(check[1]) == len(checked_rows)
    return make_int8_backbone(out, extractor, float_backbone, lambda pooled, site_map: sigmoid(pooled @ weights + offset),
                              info, calibration, {name: check}, report.step, site_map=False,
                              float_features={name: embedded.features[checked_rows]} if known else None)


def _training_metrics(results: dict[str, Any], fitted: "HeadFit", dataset: Dataset, embedded: "Embedded",
                      splits: np.ndarray, timing: dict[str, float]) -> dict[str, Any]:
    hashes = [f.sha256 for f in embedded.facts]
    return {
        **results,
        "best_epoch": fitted.best_epoch,
        "epochs_run": len(fitted.history),
        "stopped_early": fitted.stopped_early,
        "underfit": fitted.underfit,
        "notes": [UNDERFIT_NOTE.format(epoch=fitted.best_epoch)] if fitted.underfit else [],
        "images": {
            "found": len(dataset.samples),
            "readable": int(len(embedded.indices)),
            "skipped": len(embedded.skipped),
            "duplicate_copies": len(hashes) - len(set(hashes)),
            "split": {part: int(np.sum(splits == part)) for part in ("train", "val", "test")},
        },
        "class_names": list(dataset.class_names),
        "positive_class": dataset.positive_class,
        "embedding_backend": embedded.backend,
        "timing": {k: round(v, 2) for k, v in timing.items()},
        # ru_maxrss is in KiB on Linux.
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


UNDERFIT_NOTE = ("validation loss was still falling at the last epoch ({epoch}): the head may be underfit, which "
                 "costs accuracy and makes int8 exports flip labels; train again with more --epochs")

# Converting the backbone to LiteRT costs ~15 s on 2 cores and then embeds ~3x (alpha 1.0,
# 160 px) to ~5x (alpha 0.35, 96 px) faster than Keras: measured break-even ~1,400 and
# ~9,900 images. Below this many images ``auto`` embeds with Keras.
LITERT_MIN_IMAGES = 2000


def make_feature_runner(classifier: Classifier, config: TrainConfig, image_count: int | None = None
                        ) -> tuple[KerasRunner | BackboneRunner, str]:
    """The runtime that runs the frozen backbone to pooled features: with ``auto``, LiteRT
    when it is installed and there are enough images to repay converting the backbone. The
    LiteRT backbone has the site map as a second output, so the run keeps it for adapt."""
    worth_converting = image_count is None or image_count >= LITERT_MIN_IMAGES
    if config.embedding_backend == "litert" or (config.embedding_backend == "auto" and worth_converting):
        try:
            runner = BackboneRunner(backbone_cache.float_litert(feature_extractor(classifier.model)),
                                    config.embed_batch_size)
            return runner, "litert"
        except (ImportError, CrackscanError):
            if config.embedding_backend == "litert":
                raise
    return KerasRunner(classifier.extractor, config.embed_batch_size), "keras"


def embed_dataset(classifier: Classifier, dataset: Dataset, config: TrainConfig,
                  progress: Progress | bool = False) -> Embedded:
    runner, backend = make_feature_runner(classifier, config, len(dataset.samples))
    samples = dataset.samples
    features = np.zeros((len(samples), classifier.extractor.output_shape[-1]), np.float32)
    kept: list[int] = []
    facts: list[FileFacts] = []
    skipped: list[Skipped] = []
    bar = as_progress(progress).bar(total=len(samples), desc="reading and embedding", unit="img")
    for batch in iter_labelled_batches(samples, config.image_size, config.embed_batch_size, dataset.root):
        skipped.extend(batch.skipped)
        if batch.indices:
            features[len(kept) : len(kept) + len(batch.indices)] = runner(batch.images)
            kept.extend(batch.indices)
            facts.extend(batch.facts)
        bar.update(len(batch.indices) + len(batch.skipped))
    bar.close()
    if not np.all(np.isfinite(features[: len(kept)])):
        raise RuntimeError(f"the {backend} backbone produced non-finite features: this is a bug, not your data")
    return Embedded(features[: len(kept)], np.array(kept, dtype=np.int64), facts, skipped, backend, runner)


def _check_split(splits: np.ndarray, labels: np.ndarray, dataset: Dataset) -> None:
    for part in ("train", "val"):
        for label, name in enumerate(dataset.class_names):
            if not np.any((splits == part) & (labels == label)):
                raise CrackscanError(
                    f"too few readable images of class {name} for a {part} split: add images or change --split"
                )


@dataclasses.dataclass
class HeadFit:
    history: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool

    @property
    def underfit(self) -> bool:
        """Training ended at its epoch cap with validation loss still falling."""
        return not self.stopped_early and self.best_epoch == len(self.history)


def fit_head(
    head: Any, features: np.ndarray, labels: np.ndarray, splits: np.ndarray, config: TrainConfig,
    progress: Progress | bool = False,
) -> HeadFit:
    """Fits the head with Adam and keeps the epoch with the best validation loss; stops once
    validation loss has not improved by ``min_delta`` for ``patience`` epochs (0: never)."""
    keras = _tf.keras()

    train, val = splits == "train", splits == "val"
    head.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
        # Many tiny steps per call: the same updates with far less Python overhead.
        steps_per_execution=64,
    )
    keeper = _KeepBestValidationLoss(config.patience, config.min_delta)
    bar = _EpochBar(config.epochs, as_progress(progress))
    head.fit(
        features[train], labels[train],
        validation_data=(features[val], labels[val]),
        batch_size=config.batch_size, epochs=config.epochs, shuffle=True, verbose=0,
        callbacks=[keeper, bar],
    )
    logged = head.history.history
    history = [{"epoch": epoch + 1, **{k: float(v[epoch]) for k, v in logged.items()}}
               for epoch in range(len(logged["loss"]))]
    return HeadFit(history, keeper.best_epoch, keeper.stopped_early)


class _KeepBestValidationLoss:
    """Remembers the head's weights at the lowest validation loss and restores them at the
    end; stops training once the loss has not improved by ``min_delta`` for ``patience``
    epochs. A logistic head on separable features lowers its validation loss forever by
    growing its weights, so plain patience would never stop: min_delta is what ends it."""

    def __new__(cls, patience: int, min_delta: float) -> Any:
        keras = _tf.keras()

        class Keeper(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.best_loss = np.inf
                self.best_epoch = 0
                self.best_weights: list[np.ndarray] | None = None
                self.reference_loss, self.reference_epoch = np.inf, 0
                self.stopped_early = False

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                loss = (logs or {}).get("val_loss", np.inf)
                if loss < self.best_loss:
                    self.best_loss, self.best_epoch = loss, epoch + 1
                    self.best_weights = self.model.get_weights()
                if loss < self.reference_loss - min_delta:
                    self.reference_loss, self.reference_epoch = loss, epoch + 1
                elif patience and epoch + 1 - self.reference_epoch >= patience:
                    self.stopped_early = True
                    self.model.stop_training = True

            def on_train_end(self, logs: dict | None = None) -> None:
                if self.best_weights is not None:
                    self.model.set_weights(self.best_weights)

        return Keeper()


class _EpochBar:
    def __new__(cls, epochs: int, progress: Progress) -> Any:
        keras = _tf.keras()

        class EpochBar(keras.callbacks.Callback):
            def on_train_begin(self, logs: dict | None = None) -> None:
                self.bar = progress.bar(total=epochs, desc="fitting head", unit="epoch")

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                logs = logs or {}
                self.bar.set_postfix(val_loss=f"{logs.get('val_loss', 0):.4f}",
                                     val_acc=f"{logs.get('val_accuracy', 0):.4f}")
                self.bar.update(1)

            def on_train_end(self, logs: dict | None = None) -> None:
                self.bar.close()

        return EpochBar()


def _typical_patch_size(facts: list[FileFacts]) -> int:
    sizes = Counter(min(f.width, f.height) for f in facts)
    return int(sizes.most_common(1)[0][0]) if sizes else 227


def _write_plots(
    out: Path, dataset: Dataset, embedded: Embedded, labels: np.ndarray, splits: np.ndarray,
    probabilities: np.ndarray, history: list[dict[str, float]], best_epoch: int, test_metrics: dict[str, Any],
) -> None:
    plots.training_curves(history, out / runs.TRAINING_CURVES_PLOT, best_epoch)
    if test_metrics.get("count"):
        plots.confusion_matrix(test_metrics["confusion_matrix"], out / runs.CONFUSION_MATRIX_PLOT,
                              "Confusion matrix (test)")
    test_rows = np.flatnonzero(splits == "test")
    if len(test_rows) == 0:
        return
    predicted = probabilities.argmax(axis=1)
    # Show every mistake we can fit, then a seeded sample of correct answers.
    mistakes = [r for r in test_rows if predicted[r] != labels[r]][:8]
    correct = [r for r in test_rows if predicted[r] == labels[r]]
    rng = np.random.default_rng(0)
    chosen = mistakes + list(rng.choice(correct, size=min(len(correct), 16 - len(mistakes)), replace=False))
    names = dataset.class_names
    images = [read_pixels(dataset.samples[embedded.indices[r]].path) for r in chosen]
    plots.prediction_grid(
        images,
        [names[labels[r]] for r in chosen],
        [names[predicted[r]] for r in chosen],
        [float(probabilities[r, dataset.positive_index]) for r in chosen],
        out / runs.PREDICTION_GRID_PLOT,
    )

