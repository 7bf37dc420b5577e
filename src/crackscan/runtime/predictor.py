"""One predictor over every model format and task: .keras, .tflite and .onnx; classify and segment.

The runners run a model file; the Predictor adds what is common to all of them: reading and
resizing any image source in parallel with inference, batching, naming the classes, and
decoding the model's output by its task (its row's decoder, the one place that knows what a
task's output looks like).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .. import runs
from ..errors import CrackscanError
from ..images import ImageReadError, ImageSource, iter_batches, load_for_model_and_size
from ..model.heads import SiteHead, sigmoid
from ..model.info import ModelInfo
from ..model.keras_archive import read_crack_head, read_keras_metadata
from ..model.registry import resolve
from ..model.tasks import task_of
from ..progress import Progress, as_progress
from .formats import open_model, read_model_info, run_backbone
from .runners import DEFAULT_BATCH_SIZE, HeadOnBackboneRunner, Runner, cpu_threads, two_classes


class ClassifyDecoder:
    """A classifier's output: N x classes probabilities, one row per tile."""

    @staticmethod
    def crack_probability(outputs: np.ndarray, info: ModelInfo) -> np.ndarray:
        return outputs[:, info.positive_index]

    @staticmethod
    def class_probabilities(outputs: np.ndarray, info: ModelInfo) -> np.ndarray:
        return outputs


class SegmentDecoder:
    """A segmenter's output: a crack map per tile, N x H x W with one crack-probability
    channel (or none) or one channel per class. A tile is as cracked as its most cracked
    pixel, so predict and scan answer "is there a crack here" for both tasks alike."""

    @staticmethod
    def crack_map(outputs: np.ndarray, info: ModelInfo) -> np.ndarray:
        outputs = np.asarray(outputs, np.float32)
        if outputs.ndim == 3:
            return outputs
        if outputs.ndim == 4 and outputs.shape[-1] == 1:
            return outputs[..., 0]
        if outputs.ndim == 4 and outputs.shape[-1] == len(info.class_names):
            return outputs[..., info.positive_index]
        raise CrackscanError(f"a segment model's output must be N x H x W (x 1 or x classes), got {outputs.shape}")

    @classmethod
    def crack_probability(cls, outputs: np.ndarray, info: ModelInfo) -> np.ndarray:
        maps = cls.crack_map(outputs, info)
        return maps.reshape(len(maps), -1).max(axis=1) if len(maps) else np.zeros(0, np.float32)

    @classmethod
    def class_probabilities(cls, outputs: np.ndarray, info: ModelInfo) -> np.ndarray:
        return two_classes(cls.crack_probability(outputs, info), info.positive_index)




@dataclasses.dataclass(frozen=True)
class Prediction:
    source: str
    label: str
    crack_probability: float
    probabilities: dict[str, float]
    # The image's own size, before it was resized to the model's input: an image far larger
    # than the model's patches (a whole photo) is one squeezed view, not a crack map.
    width: int | None = None
    height: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Failure:
    source: str
    reason: str
    kind: str = "corrupt"



class Predictor:
    """Probabilities for images, whatever the model format and task.

    ``predict`` accepts file paths, PIL images and pixel arrays alike, one or many.
    """

    def __init__(self, runner: Runner, info: ModelInfo, path: Path | None = None, format: str | None = None):
        self.runner = runner
        self.info = info
        self.path = path
        self._format = format
        self.decoder = task_of(info).implementation("decoder")
        # For a run folder loaded at its fastest: which of its files runs, and why (load says it).
        self.chosen_because = ""

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def input_size(self) -> int:
        return self.info.input_size

    @property
    def batch_size(self) -> int:
        return self.runner.batch_size

    @property
    def format(self) -> str:
        return self._format or "custom"

    def outputs(self, images: np.ndarray) -> np.ndarray:
        """The model's raw output for model-ready pixels (N x size x size x 3, 0-255)."""
        return self.runner(images)

    def sized(self, height: int, width: int) -> Runner | None:
        """A runner of this model on height x width inputs, or None where its format fixes the
        input size (only a LiteRT file of a fully convolutional graph can be resized)."""
        sized = getattr(self.runner, "sized", None)
        return sized(height, width) if sized is not None else None

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N x classes) for model-ready pixels, whatever the task."""
        return self.decoder.class_probabilities(self.outputs(images), self.info)

    def crack_probability(self, images: np.ndarray) -> np.ndarray:
        """Each image's crack probability (N)."""
        return self.decoder.crack_probability(self.outputs(images), self.info)

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
            lambda item: load_for_model_and_size(item, size),
            batch_size or self.batch_size,
            workers=workers or cpu_threads(),
        )
        for batch in batches:
            outcomes: dict[int, Prediction | Failure] = {
                i: Failure(names[i], error.reason, error.kind) for i, error in batch.failures}
            if batch.indices:
                probabilities = self.probabilities(batch.images)
                for index, row, (width, height) in zip(batch.indices, probabilities, batch.extras):
                    outcomes[index] = self._prediction(names[index], row, width, height)
            for index in sorted(outcomes):
                yield outcomes[index]

    def _prediction(self, source: str, row: np.ndarray, width: int, height: int) -> Prediction:
        return Prediction(
            source=source,
            label=self.class_names[int(np.argmax(row))],
            crack_probability=float(row[self.info.positive_index]),
            probabilities={name: float(p) for name, p in zip(self.class_names, row)},
            width=width,
            height=height,
        )

    def is_far_larger_than_a_patch(self, prediction: Prediction) -> bool:
        """Whether an image is more than twice the model's patch size a side: a photo, which
        ``scan`` maps tile by tile, where predict sees one squeezed view."""
        return max(prediction.width or 0, prediction.height or 0) > 2 * self.info.patch_size


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



def load(model: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE, num_threads: int | None = None,
         fastest: bool = False, progress: Progress | bool = False) -> Predictor:
    """Loads a .keras, .tflite or .onnx model, a run folder or a built-in model as a
    Predictor. With ``fastest``, a run folder runs as fast as it can without a new export: its
    fastest checked export, else its LiteRT backbone and NumPy head (model.keras's numbers,
    at LiteRT's speed; the backbone converted once and kept in the run if it has none)."""
    resolved = resolve(model, fastest)
    if fastest and resolved.run is not None and resolved.file.suffix == ".keras" and \
            task_of(read_keras_metadata(resolved.file)).has_head:  # a segmenter has no head to run on its own
        predictor = load_head_on_backbone(resolved.run, batch_size, convert=True, progress=progress)
    else:
        opened = open_model(resolved.file, batch_size, num_threads)
        predictor = Predictor(opened.runner, opened.info, opened.path, opened.format)
    if fastest and resolved.run is not None and Path(model).is_dir():
        predictor.chosen_because = _why_this_file(Path(model), predictor)
    return predictor


def _why_this_file(run: Path, predictor: Predictor) -> str:
    """Which of a run's files a fastest load runs, and why, in words: the one account of the
    choice load makes (its fastest checked export, else its backbone and head)."""
    if predictor.path.suffix == ".keras" and not task_of(predictor.info).has_head:
        return (f"the run's model.keras (keras; crackscan export {run} --format litert --int8 makes a segmenter "
                "several times faster)")
    if predictor.format.startswith("int8"):
        return (f"the run's int8 LiteRT backbone ({runs.INT8_BACKBONE_FILE}, checked with the run's head when the run "
                f"was written) and NumPy head ({predictor.format}), with no export")
    if predictor.path.suffix == ".keras":
        return (f"the run's float LiteRT backbone and NumPy head ({predictor.format}): model.keras's answers at "
                f"LiteRT's speed, with no export (the run has no checked int8 backbone: see its metrics.json; "
                f"crackscan export {run} --format litert --int8 may make it faster)")
    return (f"{predictor.path.name}, the run's fastest checked export ({predictor.format}; pass "
            f"{run / 'model.keras'} for the Keras model)")


def as_predictor(model: Any) -> Predictor:
    """A Predictor as it is, or the model a name or path resolves to, loaded: what every
    function that takes "a model" takes."""
    return model if isinstance(model, Predictor) else load(model)


def load_head_on_backbone(run: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE, convert: bool = False,
                          progress: Progress | bool = False, int8: bool = True) -> Predictor:
    """A run as a Predictor of its LiteRT backbone and its head in NumPy, with no export: the
    int8 backbone the run was written with, where it passed its check (model.keras's labels,
    all but the few int8 may change, at int8 speed), else the float one (model.keras to float
    precision; training or adapt left it, or with ``convert`` made from model.keras once and
    kept; always with ``int8`` False). For scanning and serving a run as soon as it is made."""
    folder = Path(run)
    keras_path = resolve(folder).file
    backbone = folder / runs.BACKBONE_FILE
    int8_file = folder / runs.INT8_BACKBONE_FILE
    if int8 and int8_file.is_file() and int8_file.stat().st_mtime >= keras_path.stat().st_mtime:
        backbone = int8_file  # checked with this run's head when the run was written
    elif not backbone.is_file() and not convert:
        raise CrackscanError(f"{folder} keeps no {runs.BACKBONE_FILE}: load its model.keras instead")
    # The kept file as it is (HeadOnBackboneRunner checks its two outputs); converted only when missing,
    # not opened twice.
    content = backbone.read_bytes() if backbone.is_file() else \
        run_backbone(folder, keras_path, as_progress(progress).step).model_content
    info = read_keras_metadata(keras_path)
    if (folder / runs.SITE_HEAD_FILE).is_file():
        head = SiteHead.load(folder / runs.SITE_HEAD_FILE).crack_probability
    else:
        weights, offset = read_crack_head(keras_path, info)
        head = lambda pooled, site_map: sigmoid(pooled @ weights + offset)  # noqa: E731
    # A trained run's int8 backbone gives pooled features alone; an adapted run's, and every float one, both outputs.
    pooled_only = backbone == int8_file and not (folder / runs.SITE_HEAD_FILE).is_file()
    runner = HeadOnBackboneRunner(content, head, info.positive_index, batch_size, site_map=not pooled_only)
    return Predictor(runner, info, keras_path,
                     "int8 litert backbone + head" if backbone == int8_file else "litert backbone + head")


def describe_model(path: str | os.PathLike) -> dict[str, Any]:
    """What a model file carries, and for a run folder its figures and exports."""
    resolved = resolve(path)
    model = resolved.file
    info, fmt = read_model_info(model)
    described: dict[str, Any] = {
        "model": str(model), "format": fmt, "task": info.task, "file_size_mb": round(model.stat().st_size / 1e6, 2),
        "classes": ", ".join(info.class_names), "positive_class": info.positive_class,
        "input_size": info.input_size, "patch_size": info.patch_size,
        "backbone": f"{info.backbone} alpha {info.alpha}", "made_by": f"crackscan {info.crackscan_version or '?'}",
    }
    if resolved.run is not None:
        described["run"] = runs.summary(resolved.run)
    builtin = resolved.builtin
    if builtin is not None:
        described["built_in"] = {
            "name": builtin.name, "trained_on": builtin.trained_on,
            "held_out": builtin.held_out_figure(),
            "images_per_second": f"{builtin.images_per_second:.0f} (when built, on {builtin.measured_on})",
            "built": builtin.built, "command": builtin.command}
    return described


def images_per_second(predictor: Predictor, seconds: float = 3.0) -> float:
    """The model's own speed on this machine: full batches of model-ready pixels, after a
    warm-up batch, for about ``seconds`` (decoding is left out, it depends on the files)."""
    batch_size = predictor.batch_size
    size = predictor.input_size
    pixels = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3)).astype(np.float32)
    predictor.outputs(pixels)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predictor.outputs(pixels)
        done += batch_size
    return done / (time.perf_counter() - started)
