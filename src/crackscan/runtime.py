"""Running a model file, whatever its format: the layer under predict, export and train.

A runner maps a batch of model-ready pixels (N x size x size x 3, 0-255 uint8) to class
probabilities: Keras, LiteRT (XNNPACK on the CPU, int8 with 8-bit pixel input) or ONNX
Runtime. ``open_model`` reads any model file with the metadata it carries (class names,
positive class, input and patch size: a zip appended to a .tflite, ``metadata_props`` in
an .onnx, an entry in the .keras archive), so nothing can be run with the wrong
preprocessing or label order. ``keras_to_litert`` converts Keras models for LiteRT, which
both export and training (the one backbone pass) use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import platform
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from . import _tf
from .errors import CrackscanError, MissingDependencyError
from .files import atomic_path
from .model import METADATA_NAME, ModelInfo, load_keras_model, read_keras_metadata

DEFAULT_BATCH_SIZE = 32


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
        self.interpreter, self._input, self._output = self._interpreter(batch_size)
        self._single: tuple | None = None

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
            raise CrackscanError(f"not a usable LiteRT model: {str(error).strip().splitlines()[0]}") from None

    @property
    def model_content(self) -> bytes:
        return self._content

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


class BackboneRunner(LiteRTRunner):
    """The frozen backbone as float LiteRT with its two outputs (model.feature_extractor):
    pooled features (N x D) and the site map (N x H x W x C). Training embeds with the first;
    adaptation and adapted runs read both."""

    def __init__(self, model_content: bytes, batch_size: int = DEFAULT_BATCH_SIZE, num_threads: int | None = None):
        super().__init__(model_content, batch_size, num_threads)
        ranks = sorted(len(detail["shape"]) for detail in self.interpreter.get_output_details())
        if ranks != [2, 4]:
            raise CrackscanError("not a two-output crackscan backbone (pooled features and site map)")

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.asarray(images)
        pooled, site = [], []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            count = len(chunk)
            if count < self.batch_size:  # pad: one interpreter, one shape
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - count, *chunk.shape[1:]), chunk.dtype)])
            with self._full_lock:
                interpreter = self.interpreter
                interpreter.set_tensor(self._input["index"], np.asarray(chunk, np.float32))
                interpreter.invoke()
                outputs = sorted((interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()),
                                 key=np.ndim)
            pooled.append(outputs[0][:count].copy())
            site.append(outputs[1][:count].copy())
        if not pooled:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0, 0, 0), np.float32)
        return np.concatenate(pooled), np.concatenate(site)

    def pooled(self, images: np.ndarray) -> np.ndarray:
        return self(images)[0]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))


def cell_logits(site_map: np.ndarray, head: tuple[np.ndarray, float]) -> np.ndarray:
    """A linear score for every cell of every site map: N x H x W x C -> N x (H*W)."""
    maps = np.asarray(site_map, np.float32)
    cells = maps.reshape(len(maps), -1, maps.shape[-1])
    return cells @ np.asarray(head[0], np.float32) + np.float32(head[1])


def any_cell_logit(cells: np.ndarray) -> np.ndarray:
    """A tile's crack logit from its cells' scores: log(sum(exp(score))), a smooth "any cell"
    (a crack anywhere in the tile makes the tile a crack). Its sigmoid is the share of a
    softmax over the cells and one fixed zero score, which is how the Keras model computes it."""
    top = cells.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.exp(cells - top).sum(axis=1))


@dataclasses.dataclass
class SiteHead:
    """The head ``adapt`` makes: the parent's logistic head, a site head and a gate.

    The parent head and the gate read the pooled features; the site head scores each cell of
    the site map (model.SITE_LAYER) and calls the tile a crack if any cell is one
    (any_cell_logit), its bias holding the site's crack share. The gate says how much a tile
    looks like the site's tiles rather than the parent's training images. Crack probability
    = parent + gate * (site - parent): the parent's own images keep the parent's answers, the
    site's tiles get the site head's. Each part is a (weights, bias) pair."""

    parent: tuple[np.ndarray, float]
    site: tuple[np.ndarray, float]
    gate: tuple[np.ndarray, float]

    def parts(self, pooled: np.ndarray, site_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pooled = np.asarray(pooled, np.float32)
        parent, gate = (sigmoid(pooled @ np.asarray(w, np.float32) + np.float32(b)) for w, b in (self.parent, self.gate))
        return parent, sigmoid(any_cell_logit(cell_logits(site_map, self.site))), gate

    def crack_probability(self, pooled: np.ndarray, site_map: np.ndarray) -> np.ndarray:
        parent, site, gate = self.parts(pooled, site_map)
        return parent + gate * (site - parent)

    def save_to(self, path: Path) -> None:
        arrays = {f"{name}_{part}": np.asarray(value, np.float32) for name in ("parent", "site", "gate")
                  for part, value in zip(("weights", "bias"), getattr(self, name))}
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: Path) -> "SiteHead":
        try:
            with np.load(path, allow_pickle=False) as saved:
                return cls(*((saved[f"{name}_weights"], float(saved[f"{name}_bias"])) for name in ("parent", "site", "gate")))
        except (OSError, ValueError, KeyError) as error:
            raise CrackscanError(f"cannot read the site head {path}: {error}") from None


class HeadOnBackboneRunner:
    """A frozen backbone as float LiteRT and a head in NumPy: a run made by ``adapt`` runs at
    LiteRT's speed the moment it exists, with no conversion or export. ``crack_probability``
    takes the backbone's pooled features and site map."""

    def __init__(self, backbone: bytes, crack_probability: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 positive_index: int, batch_size: int = DEFAULT_BATCH_SIZE, num_threads: int | None = None):
        self.backbone = BackboneRunner(backbone, batch_size, num_threads)
        self.head, self.positive_index = crack_probability, positive_index
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        crack = self.head(*self.backbone(images)).astype(np.float32)
        columns = [1 - crack, crack] if self.positive_index == 1 else [crack, 1 - crack]
        return np.stack(columns, axis=1)


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



ONNX_METADATA_KEY = "crackscan"


@contextlib.contextmanager
def quiet_stdout() -> Any:
    # The TF converter prints its traced signatures to stdout, which is the CLI's output.
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def keras_to_litert(model: Any, representative_batches: Callable[[], Iterable[np.ndarray]] | None = None) -> bytes:
    """Converts a Keras model to a LiteRT flatbuffer: float, or full-integer int8 when
    calibration batches are given.

    The int8 model takes int8 input (0-255 pixels calibrate to scale 1, zero point -128) and
    gives float32 probabilities: feeding 8-bit pixels as they are is faster than a float
    input quantized inside the graph, and the output needs no parameters to read.
    """
    tf = _tf.tensorflow()

    # The converter prints its traced signature, native "fully_quantize" lines and a warning
    # about input statistics that does not apply to float inputs: none of it is for users.
    with quiet_stdout(), _tf.muted_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if representative_batches is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]

            def representative() -> Iterable[list[np.ndarray]]:
                for batch in representative_batches():
                    for image in np.asarray(batch, np.float32):
                        yield [image[None]]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
        return converter.convert()


def attach_litert_metadata(content: bytes, info: ModelInfo) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
        zipped.writestr(METADATA_NAME, info.to_json())
    return content + archive.getvalue()


def read_litert_metadata(content: bytes, source: str | os.PathLike = "model") -> ModelInfo:
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zipped:
            text = zipped.read(METADATA_NAME)
    except (zipfile.BadZipFile, KeyError):
        raise CrackscanError(
            f"{source}: no crackscan metadata in this .tflite file (export it with 'crackscan export')"
        ) from None
    return ModelInfo.from_json(text, str(source))


def read_onnx_metadata(session: Any, path: str | os.PathLike) -> ModelInfo:
    """The metadata of an ONNX model, read from the session that runs it (one load, not two)."""
    text = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
    if text is None:
        raise CrackscanError(f"{path}: no crackscan metadata in this .onnx file (export it with 'crackscan export')")
    return ModelInfo.from_json(text, str(path))


def attach_onnx_metadata(path: Path, info: ModelInfo) -> Path:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, info.to_json()
    onnx.save(proto, str(path))
    return path


FORMAT_OF_SUFFIX = {".keras": "keras", ".tflite": "litert", ".onnx": "onnx"}


@dataclasses.dataclass
class OpenModel:
    runner: Any
    info: ModelInfo
    path: Path
    format: str


def read_model_info(path: str | os.PathLike) -> tuple[ModelInfo, str]:
    """A model file's metadata and format, without building a runner (no TensorFlow)."""
    path = Path(path)
    fmt = FORMAT_OF_SUFFIX.get(path.suffix.lower())
    if fmt == "keras":
        return read_keras_metadata(path), fmt
    if fmt == "litert":
        try:
            return read_litert_metadata(path.read_bytes(), path), fmt
        except OSError as error:
            raise CrackscanError(f"cannot read model {path}: {error.strerror or error}") from None
    return open_model(path).info, fmt or "unknown"


def open_model(path: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE,
               num_threads: int | None = None) -> OpenModel:
    """A runner and the metadata of a .keras, .tflite or .onnx file."""
    path = Path(path)
    fmt = FORMAT_OF_SUFFIX.get(path.suffix.lower())
    if fmt == "keras":
        model, info = load_keras_model(path)
        return OpenModel(KerasRunner(model, batch_size), info, path, fmt)
    if fmt == "litert":
        try:
            content = path.read_bytes()
        except OSError as error:
            raise CrackscanError(f"cannot read model {path}: {error.strerror or error}") from None
        info = read_litert_metadata(content, path)
        return OpenModel(LiteRTRunner(content, batch_size, num_threads), info, path, fmt)
    if fmt == "onnx":
        runner = OnnxRunner(path, batch_size, num_threads)
        return OpenModel(runner, read_onnx_metadata(runner.session, path), path, fmt)
    raise CrackscanError(f"{path}: unknown model format (expected .keras, .tflite or .onnx, or a run folder)")
