"""One predictor over every model format: .keras, .tflite and .onnx.

The runtime layer runs a model file; the Predictor adds what is common to all formats:
reading and resizing any image source in parallel with inference, batching, and naming
the classes.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import runs
from .builtin import builtin_models
from .data import ImageReadError, ImageSource, iter_batches, load_for_model
from .errors import CrackscanError
from .model import ModelInfo, read_crack_head, read_keras_metadata
from .runtime import (DEFAULT_BATCH_SIZE, HeadOnBackboneRunner, SiteHead, cpu_threads, open_model, read_model_info,
                      sigmoid)

@dataclasses.dataclass(frozen=True)
class Prediction:
    source: str
    label: str
    crack_probability: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Failure:
    source: str
    reason: str
    kind: str = "corrupt"


class Predictor:
    """Probabilities for images, whatever the model format.

    ``predict`` accepts file paths, PIL images and pixel arrays alike, one or many.
    """

    def __init__(self, runner: Any, info: ModelInfo, path: Path | None = None, format: str | None = None):
        self.runner = runner
        self.info = info
        self.path = path
        self._format = format

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def input_size(self) -> int:
        return self.info.input_size

    @property
    def format(self) -> str:
        return self._format or "custom"

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for model-ready pixels (N x size x size x 3, 0-255)."""
        return self.runner(images)

    def crack_probability(self, images: np.ndarray) -> np.ndarray:
        return self.probabilities(images)[:, self.info.positive_index]

    def predict(self, sources: ImageSource | Sequence[ImageSource]) -> list[Prediction]:
        """Predictions in input order; raises ImageReadError for a source that is no image."""
        single = _is_single_source(sources)
        items = [sources] if single else list(sources)
        results = []
        for result in self.iter_predict(items):
            if isinstance(result, Failure):
                raise ImageReadError(result.source, result.reason, result.kind)
            results.append(result)
        return results

    def iter_predict(
        self, sources: Sequence[ImageSource], batch_size: int | None = None, workers: int | None = None
    ) -> Iterator[Prediction | Failure]:
        """Yields a Prediction or, for an unreadable source, a Failure, in input order."""
        size = self.input_size
        names = [_source_name(item, index) for index, item in enumerate(sources)]
        batches = iter_batches(
            sources,
            lambda item: load_for_model(item, size),
            batch_size or getattr(self.runner, "batch_size", DEFAULT_BATCH_SIZE),
            workers=workers or cpu_threads(),
        )
        for batch in batches:
            outcomes: dict[int, Prediction | Failure] = {
                i: Failure(names[i], error.reason, error.kind) for i, error in batch.failures}
            if batch.indices:
                probabilities = self.probabilities(batch.images)
                for index, row in zip(batch.indices, probabilities):
                    outcomes[index] = self._prediction(names[index], row)
            for index in sorted(outcomes):
                yield outcomes[index]

    def _prediction(self, source: str, row: np.ndarray) -> Prediction:
        return Prediction(
            source=source,
            label=self.class_names[int(np.argmax(row))],
            crack_probability=float(row[self.info.positive_index]),
            probabilities={name: float(p) for name, p in zip(self.class_names, row)},
        )


def _is_single_source(sources: Any) -> bool:
    if isinstance(sources, (str, os.PathLike, bytes, bytearray)):
        return True
    if isinstance(sources, np.ndarray):
        return sources.ndim in (2, 3)
    from PIL import Image

    return isinstance(sources, Image.Image)


def _source_name(item: Any, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    return getattr(item, "filename", None) or f"#{index}"


def load(path: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE, num_threads: int | None = None) -> Predictor:
    """Loads a .keras, .tflite or .onnx model (or a run folder) as a Predictor."""
    opened = open_model(runs.model_path(path), batch_size, num_threads)
    return Predictor(opened.runner, opened.info, opened.path, opened.format)


def load_head_on_backbone(run: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE) -> Predictor:
    """A run that keeps its backbone as LiteRT (training with LiteRT, or adapt, left it) as a
    Predictor of its backbone and head: the run's model.keras to within float precision, at
    LiteRT's speed, with no export. For serving a run as soon as adapt has made it."""
    folder = Path(run)
    keras_path = runs.model_path(folder)
    backbone = folder / runs.BACKBONE_FILE
    if not backbone.is_file():
        raise CrackscanError(f"{folder} keeps no {runs.BACKBONE_FILE}: load its model.keras instead")
    info = read_keras_metadata(keras_path)
    if (folder / runs.SITE_HEAD_FILE).is_file():
        head = SiteHead.load(folder / runs.SITE_HEAD_FILE).crack_probability
    else:
        weights, offset = read_crack_head(keras_path, info)
        head = lambda pooled, site_map: sigmoid(pooled @ weights + offset)  # noqa: E731
    runner = HeadOnBackboneRunner(backbone.read_bytes(), head, info.positive_index, batch_size)
    return Predictor(runner, info, keras_path, "litert backbone + head")


def describe_model(path: str | os.PathLike) -> dict[str, Any]:
    """What a model file carries, and for a run folder its figures and exports."""
    model = runs.model_path(path)
    info, fmt = read_model_info(model)
    described: dict[str, Any] = {
        "model": str(model), "format": fmt, "file_size_mb": round(model.stat().st_size / 1e6, 2),
        "classes": ", ".join(info.class_names), "positive_class": info.positive_class,
        "input_size": info.input_size, "patch_size": info.patch_size,
        "backbone": f"{info.backbone} alpha {info.alpha}", "made_by": f"crackscan {info.crackscan_version or '?'}",
    }
    run = runs.folder_of(path)
    if run is not None:
        described["run"] = runs.summary(run)
    builtin = next((m for m in builtin_models().values() if m.path == model), None)
    if builtin is not None:
        described["built_in"] = {
            "name": builtin.name, "trained_on": builtin.trained_on,
            "test_accuracy": f"{100 * builtin.test_accuracy:.2f}% of {builtin.test_images} held-out images",
            "images_per_second": f"{builtin.images_per_second:.0f} (when built, on {builtin.measured_on})",
            "built": builtin.built, "command": builtin.command}
    return described


def images_per_second(predictor: Predictor, seconds: float = 3.0) -> float:
    """The model's own speed on this machine: full batches of model-ready pixels, after a
    warm-up batch, for about ``seconds`` (decoding is left out, it depends on the files)."""
    batch_size = getattr(predictor.runner, "batch_size", DEFAULT_BATCH_SIZE)
    size = predictor.input_size
    pixels = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3)).astype(np.float32)
    predictor.probabilities(pixels)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predictor.probabilities(pixels)
        done += batch_size
    return done / (time.perf_counter() - started)
