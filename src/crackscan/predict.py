"""One predictor over every model format: .keras, .tflite and .onnx.

A Runner maps a batch of model-ready pixels (N x size x size x 3, 0-255) to class
probabilities; the Predictor adds what is common to all formats: reading and resizing any
image source in parallel with inference, batching, and naming the classes.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import runs
from .data import ImageReadError, ImageSource, iter_batches, load_for_model
from .errors import CrackscanError, MissingDependencyError
from .model import ModelInfo, load_keras_model

DEFAULT_BATCH_SIZE = 32


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class KerasRunner:
    def __init__(self, model: Any, batch_size: int = DEFAULT_BATCH_SIZE):
        self.model = model
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        # Two fixed batch shapes (full and one) keep Keras from tracing once per size.
        run = lambda x: np.asarray(self.model.predict_on_batch(np.asarray(x, np.float32)))  # noqa: E731
        with self._lock:
            return _run_batched(images, self.batch_size, run, run)


class LiteRTRunner:
    """Runs a .tflite flatbuffer with LiteRT's interpreter (XNNPACK on the CPU)."""

    def __init__(self, model_content: bytes, batch_size: int = DEFAULT_BATCH_SIZE, num_threads: int | None = None):
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError:
            raise MissingDependencyError("ai-edge-litert", "running a LiteRT (.tflite) model") from None
        self._content, self._num_threads = model_content, num_threads or cpu_threads()
        self.batch_size = batch_size
        # One lock per interpreter (each holds one set of tensors): a lone image, on its own
        # interpreter, need not wait behind a scan's full batches.
        self._full_lock, self._single_lock = threading.Lock(), threading.Lock()
        self.interpreter, self._input, self._output = self._interpreter(batch_size)
        self._single: tuple | None = None

    def _interpreter(self, batch_size: int) -> tuple:
        from ai_edge_litert.interpreter import Interpreter

        from ._tf import muted_native_stderr

        try:
            with muted_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
                interpreter = Interpreter(model_content=self._content, num_threads=self._num_threads)
                detail_in = interpreter.get_input_details()[0]
                interpreter.resize_tensor_input(detail_in["index"], [batch_size, *detail_in["shape"][1:]])
                interpreter.allocate_tensors()
                return interpreter, interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        except (ValueError, RuntimeError) as error:
            raise CrackscanError(f"not a usable LiteRT model: {str(error).strip().splitlines()[0]}") from None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return _run_batched(images, self.batch_size, self._invoke_full, self._invoke_one)

    def _invoke_full(self, batch: np.ndarray) -> np.ndarray:
        with self._full_lock:
            return self._invoke(batch, (self.interpreter, self._input, self._output))

    def _invoke_one(self, image: np.ndarray) -> np.ndarray:
        # A second interpreter sized for one image: a lone request must not pay for a full batch.
        with self._single_lock:
            if self._single is None:
                self._single = self._interpreter(1)
            return self._invoke(image, self._single)

    @staticmethod
    def _invoke(batch: np.ndarray, runtime: tuple) -> np.ndarray:
        interpreter, detail_in, detail_out = runtime
        interpreter.set_tensor(detail_in["index"], _quantize(batch, detail_in))
        interpreter.invoke()
        return _dequantize(interpreter.get_tensor(detail_out["index"]), detail_out)


class OnnxRunner:
    def __init__(self, path: Path, batch_size: int = DEFAULT_BATCH_SIZE, num_threads: int | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise MissingDependencyError("onnxruntime", "running an ONNX model") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or cpu_threads()
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors for bad files
            raise CrackscanError(f"{path} is not a usable ONNX model: {str(error).strip().splitlines()[0]}") from None
        self._input_name = self.session.get_inputs()[0].name
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        # An InferenceSession is safe to call from several threads at once and takes any
        # batch size, so nothing is padded.
        run = lambda x: self.session.run(None, {self._input_name: np.asarray(x, np.float32)})[0]  # noqa: E731
        return _run_batched(images, self.batch_size, run, run, pad=False)


def _run_batched(images: np.ndarray, batch_size: int, run_full: Any, run_one: Any, pad: bool = True) -> np.ndarray:
    """Runs full batches through ``run_full``; a short remainder goes one image at a time
    through ``run_one`` when that is cheaper than padding it to a full batch."""
    images = np.asarray(images)
    outputs = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        count = len(chunk)
        if count == batch_size or not pad:
            outputs.append(np.asarray(run_full(chunk), dtype=np.float32))
        elif count <= batch_size // 2:
            outputs.extend(np.asarray(run_one(chunk[i : i + 1]), dtype=np.float32) for i in range(count))
        else:
            padded = np.concatenate([chunk, np.zeros((batch_size - count, *chunk.shape[1:]), chunk.dtype)])
            outputs.append(np.asarray(run_full(padded), dtype=np.float32)[:count])
    if not outputs:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(outputs)


def _quantize(batch: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return np.asarray(batch, np.float32)
    scale, zero_point = detail["quantization"]
    if batch.dtype == np.uint8 and dtype == np.int8 and (scale, zero_point) == (1.0, -128):
        # The usual int8 input: 8-bit pixels shifted by 128, which flipping the top bit does
        # exactly, with no float round trip over the batch.
        return (batch ^ np.uint8(0x80)).view(np.int8)
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(batch, np.float32) / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values.copy()
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


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

    def __init__(self, runner: Any, info: ModelInfo, path: Path | None = None):
        self.runner = runner
        self.info = info
        self.path = path

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def input_size(self) -> int:
        return self.info.input_size

    @property
    def format(self) -> str:
        return {KerasRunner: "keras", LiteRTRunner: "litert", OnnxRunner: "onnx"}.get(type(self.runner), "custom")

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
    path = runs.model_path(path)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        model, info = load_keras_model(path)
        return Predictor(KerasRunner(model, batch_size), info, path)
    if suffix == ".tflite":
        from .export import read_litert_metadata

        content = path.read_bytes()
        info = read_litert_metadata(content, path)
        return Predictor(LiteRTRunner(content, batch_size, num_threads), info, path)
    if suffix == ".onnx":
        from .export import read_onnx_metadata

        info = read_onnx_metadata(path)
        return Predictor(OnnxRunner(path, batch_size, num_threads), info, path)
    raise CrackscanError(f"{path}: unknown model format (expected .keras, .tflite or .onnx, or a run folder)")
