"""Model files by format: their metadata in and out, conversion to LiteRT, and opening any
model file as a runner with its metadata.

The metadata (model.info.ModelInfo: task, class names, positive class, input and patch
size) travels inside every file: a zip appended to a .tflite, ``metadata_props`` in an
.onnx, an entry in the .keras archive. ``keras_to_litert`` converts Keras models for
LiteRT, which both export and training (the one backbone pass) use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .. import _tf
from ..errors import CrackscanError, WriteError
from ..files import write_bytes
from ..model.classifier import feature_extractor
from ..runs import BACKBONE_FILE
from ..model.formats import Format, format_of, suffixes
from ..model.info import METADATA_NAME, ModelInfo
from ..model.keras_archive import load_keras_model
from .runners import DEFAULT_BATCH_SIZE, BackboneRunner, KerasRunner, LiteRTRunner, OnnxRunner, Runner

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


@dataclasses.dataclass
class OpenModel:
    runner: Runner
    info: ModelInfo
    path: Path
    format: str


def _row(path: Path) -> Format:
    row = format_of(path)
    if row is None:
        raise CrackscanError(f"{path}: unknown model format (expected {', '.join(suffixes())}, or a run folder)")
    return row


def read_model_info(path: str | os.PathLike) -> tuple[ModelInfo, str]:
    """A model file's metadata and format, without building a runner where the format allows
    (no TensorFlow for .keras or .tflite)."""
    path = Path(path)
    row = _row(path)
    return row.implementation("read_metadata")(path), row.name


def open_model(path: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE,
               num_threads: int | None = None) -> OpenModel:
    """A runner and the metadata of a model file, by its format's opener; refused when the
    metadata's input size is not the one the graph takes (an edited file would load, then
    fail at its first prediction)."""
    path = Path(path)
    return _row(path).implementation("opener")(path, batch_size, num_threads)


def open_keras(path: Path, batch_size: int, num_threads: int | None = None) -> OpenModel:
    model, info = load_keras_model(path)
    _check_input_size(path, info, tuple(model.input_shape[1:3]))
    return OpenModel(KerasRunner(model, batch_size), info, path, "keras")


def open_litert(path: Path, batch_size: int, num_threads: int | None = None) -> OpenModel:
    content = _read_model_bytes(path)
    info = read_litert_metadata(content, path)
    runner = LiteRTRunner(content, batch_size, num_threads)
    _check_input_size(path, info, tuple(int(v) for v in runner.interpreter.get_input_details()[0]["shape"][1:3]))
    return OpenModel(runner, info, path, "litert")


def open_onnx(path: Path, batch_size: int, num_threads: int | None = None) -> OpenModel:
    runner = OnnxRunner(path, batch_size, num_threads)
    info = read_onnx_metadata(runner.session, path)
    _check_input_size(path, info, tuple(runner.session.get_inputs()[0].shape[1:3]))
    return OpenModel(runner, info, path, "onnx")


def read_litert_file_metadata(path: Path) -> ModelInfo:
    return read_litert_metadata(_read_model_bytes(path), path)


def read_onnx_file_metadata(path: Path) -> ModelInfo:
    return open_onnx(path, DEFAULT_BATCH_SIZE).info


def _read_model_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CrackscanError(f"cannot read model {path}: {error.strerror or error}") from None


def _check_input_size(path: Path, info: ModelInfo, graph: tuple) -> None:
    """The graph's input side (height, width; None or a name where it takes any) against the metadata's."""
    fixed = [side for side in graph if isinstance(side, int) and side > 0]
    if any(side != info.input_size for side in fixed):
        raise CrackscanError(f"{path}: its metadata says {info.input_size} px inputs but the model takes "
                             f"{'x'.join(map(str, graph))}: the file was edited or damaged; export it again")


def run_backbone(run: Path, keras_path: Path, step: Callable[[str], None] = lambda line: None, keep: bool = True,
                 batch_size: int = 64) -> BackboneRunner:
    """A run's frozen backbone as LiteRT, pooled features and site map: the one training or
    adapt kept, or converted from the Keras model (about 20 s) and, with ``keep``, kept in the
    run for every later use (where the run's folder can be written). Runs made before the site
    map kept a one-output backbone, which is converted again once."""
    cached = run / BACKBONE_FILE
    if cached.is_file():
        try:
            return BackboneRunner(cached.read_bytes(), batch_size)
        except CrackscanError:
            pass
    step(f"converting the run's backbone to LiteRT{' once (kept in the run for next time)' if keep else ''}")
    model, _ = load_keras_model(keras_path)
    content = keras_to_litert(feature_extractor(model))
    if keep:
        with contextlib.suppress(WriteError):  # a read-only run still runs, converted each time
            write_bytes(cached, content)
    return BackboneRunner(content, batch_size)


def litert_convolutions(content: bytes, scope: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The convolutions of a LiteRT file whose output tensor's name holds ``scope``, in graph
    order, as (kind, kernel, bias) with the weights dequantized to float32 and laid out as
    Keras keeps them: "depthwise" (3 x 3 x C x 1) or "conv" (kh x kw x in x out). Batch norms
    are folded into the convolution before them in a converted file, so the bias carries them.

    An int8 file's weights are per channel (zero point 0), its biases int32 at the input's
    scale times the weight's: dequantized, the weights sit within half a step of the float
    ones the file was converted from."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=content)
    except (ValueError, RuntimeError) as error:
        raise CrackscanError(f"not a LiteRT model ({error})") from None
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}

    def value(index: int) -> np.ndarray:
        detail, raw = tensors[index], interpreter.get_tensor(index)
        scales = detail["quantization_parameters"]["scales"]
        if not len(scales):
            return raw.astype(np.float32)
        zero_points = detail["quantization_parameters"]["zero_points"]
        axis = detail["quantization_parameters"]["quantized_dimension"]
        shape = [1] * raw.ndim
        shape[axis] = -1
        return ((raw.astype(np.float32) - zero_points.reshape(shape)) * scales.reshape(shape)).astype(np.float32)

    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D") or scope not in tensors[op["outputs"][0]]["name"]:
            continue
        kernel, bias = value(op["inputs"][1]), value(op["inputs"][2])
        if op["op_name"] == "DEPTHWISE_CONV_2D":  # 1 x kh x kw x C
            found.append(("depthwise", kernel[0][..., None], bias))
        else:  # out x kh x kw x in
            found.append(("conv", kernel.transpose(1, 2, 3, 0), bias))
    return found
