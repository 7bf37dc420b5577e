"""Runners: a model file's format behind one protocol, the layer under predict, export and train.

A runner maps a batch of model-ready pixels (N x size x size x 3, 0-255 uint8) to the
model's raw output, one row per image: Keras, LiteRT (XNNPACK on the CPU, int8 with 8-bit
pixel input) or ONNX Runtime. What the output means (class probabilities, a crack map) is
the model's task, decoded by the predictor; runners never look at it.
"""

from __future__ import annotations

import os
import platform
import threading
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from .. import _tf
from ..errors import CrackscanError, MissingDependencyError, first_line

DEFAULT_BATCH_SIZE = 32
SIZED_KEPT = 3  # interpreters at other input sizes a LiteRT runner keeps (photos of a survey share a few sizes)


@runtime_checkable
class Runner(Protocol):
    """What every runner is: a batch size it runs best at, and pixels in, raw output out (a
    float32 array with one row per image, in input order, for any number of images)."""

    batch_size: int

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_name() -> str:
    """The processor and the cores this process may use, e.g. "AMD EPYC, 2 cores": a speed
    means nothing without them."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {cpu_threads()} cores"


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
        self._sized_lock, self._sized, self._resizable = threading.Lock(), {}, None
        self.interpreter, self._input, self._output = self._interpreter(batch_size)
        # Made now, on the thread that loads the model: XNNPACK's worker threads take the
        # priority of the thread that makes them, and a server runs heavy work on threads at
        # nice 19; a one-image interpreter made lazily there would run every lone request at
        # that priority (starved whenever the machine is busy).
        self._single: tuple | None = self._interpreter(1) if batch_size > 1 else None

    def _interpreter(self, batch_size: int) -> tuple:
        from ai_edge_litert.interpreter import Interpreter

        try:
            with _tf.muted_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
                interpreter = Interpreter(model_content=self._content, num_threads=self._num_threads)
                detail_in = interpreter.get_input_details()[0]
                interpreter.resize_tensor_input(detail_in["index"], [batch_size, *detail_in["shape"][1:]])
                interpreter.allocate_tensors()
                return interpreter, interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        except (ValueError, RuntimeError) as error:
            raise CrackscanError(f"not a usable LiteRT model: {first_line(error)}") from None

    @property
    def model_content(self) -> bytes:
        return self._content

    def sized(self, height: int, width: int) -> "LiteRTRunner | None":
        """The same network on height x width inputs, one at a time (runtime.resize), or None
        where the file fixes its size: a segmenter runs large windows through it. The last few
        sizes are kept, each an interpreter of its own."""
        from .resize import litert_at_size, resizable

        with self._sized_lock:
            if self._resizable is None:
                self._resizable = resizable(self._content)
            if not self._resizable:
                return None
            key = (height, width)
            runner = self._sized.pop(key, None)
            if runner is None:
                runner = LiteRTRunner(litert_at_size(self._content, height, width), 1, self._num_threads)
            self._sized[key] = runner  # last used last
            while len(self._sized) > SIZED_KEPT:
                self._sized.pop(next(iter(self._sized)))
            return runner

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
            raise CrackscanError(f"{path} is not a usable ONNX model: {first_line(error)}") from None
        self._input_name = self.session.get_inputs()[0].name
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        # An InferenceSession is safe to call from several threads at once and takes any
        # batch size, so nothing is padded.
        run = lambda x: self.session.run(None, {self._input_name: np.asarray(x, np.float32)})[0]  # noqa: E731
        return _run_batched(images, self.batch_size, run, run, pad=False)



class BackboneRunner(LiteRTRunner):
    """The frozen backbone as LiteRT (float, or int8 with float outputs) with its two outputs
    (classifier.feature_extractor): pooled features (N x D) and the site map (N x H x W x C).
    As a Runner it gives the pooled features, which training embeds with; ``features`` gives
    both, which adaptation and adapted runs read. A trained run's int8 backbone gives pooled
    features alone (its head reads nothing else, and a second int8 output costs ~10%): its
    site maps are empty (N x 0 x 0 x 0)."""

    def __init__(self, model_content: bytes, batch_size: int = DEFAULT_BATCH_SIZE, num_threads: int | None = None,
                 site_map: bool = True):
        super().__init__(model_content, batch_size, num_threads)
        ranks = sorted(len(detail["shape"]) for detail in self.interpreter.get_output_details())
        if ranks != ([2, 4] if site_map else [2]):
            raise CrackscanError("not a two-output crackscan backbone (pooled features and site map)" if site_map else
                                 "not a pooled-features crackscan backbone")

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.features(images)[0]

    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pooled features and site maps, batched as _run_batched batches: full batches on the
        full interpreter, a short remainder one image at a time on a second interpreter sized
        for one (a lone request to a served adapted run must not pay for a padded batch)."""
        images = np.asarray(images)
        pooled, site = [], []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            count = len(chunk)
            if count == self.batch_size:
                parts = [self._features_full(chunk)]
            elif count <= self.batch_size // 2:
                parts = [self._features_one(chunk[i : i + 1]) for i in range(count)]
            else:  # pad: one interpreter, one shape
                padded = np.concatenate([chunk, np.zeros((self.batch_size - count, *chunk.shape[1:]), chunk.dtype)])
                parts = [tuple(part[:count] for part in self._features_full(padded))]
            for part_pooled, part_site in parts:
                pooled.append(part_pooled)
                site.append(part_site)
        if not pooled:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0, 0, 0), np.float32)
        return np.concatenate(pooled), np.concatenate(site)

    def _features_full(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._full_lock:
            return self._both_outputs(self.interpreter, self._input, batch)

    def _features_one(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._single_lock:
            if self._single is None:
                self._single = self._interpreter(1)
            return self._both_outputs(self._single[0], self._single[1], image)

    @staticmethod
    def _both_outputs(interpreter: Any, detail_in: dict, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        interpreter.set_tensor(detail_in["index"], _quantize(batch, detail_in))
        interpreter.invoke()
        outputs = sorted((_dequantize(interpreter.get_tensor(d["index"]), d) for d in interpreter.get_output_details()),
                         key=np.ndim)
        return outputs[0], outputs[1] if len(outputs) > 1 else np.zeros((len(batch), 0, 0, 0), np.float32)


class HeadOnBackboneRunner:
    """A frozen backbone as LiteRT (float or int8) and a head in NumPy: a run made by ``adapt`` runs at
    LiteRT's speed the moment it exists, with no conversion or export. ``crack_probability``
    takes the backbone's pooled features and site map; the output is the classifier's two
    class probabilities, in the model's class order."""

    def __init__(self, backbone: bytes, crack_probability: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 positive_index: int, batch_size: int = DEFAULT_BATCH_SIZE, num_threads: int | None = None,
                 site_map: bool = True):
        self.backbone = BackboneRunner(backbone, batch_size, num_threads, site_map)
        self.head, self.positive_index = crack_probability, positive_index
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return two_classes(self.head(*self.backbone.features(images)), self.positive_index)


def two_classes(crack: np.ndarray, positive_index: int) -> np.ndarray:
    """Crack probabilities (N) as a two-class model's probabilities (N x 2, the model's class order)."""
    crack = np.asarray(crack, np.float32)
    return np.stack([1 - crack, crack] if positive_index == 1 else [crack, 1 - crack], axis=1)


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
