"""Exporting the Keras model to LiteRT and ONNX, with its metadata inside the file.

LiteRT: the metadata is a small zip archive appended to the flatbuffer, the same place
the TFLite metadata tools put associated files; the interpreter ignores trailing bytes.
ONNX: the metadata is a model property (``metadata_props``), which ONNX has for this.
"""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from . import _tf
from .errors import CrackscanError, MissingDependencyError
from .model import METADATA_NAME, ModelInfo

ONNX_METADATA_KEY = "crackscan"


@contextlib.contextmanager
def _quiet_stdout() -> Any:
    # The TF converter prints its traced signatures to stdout, which is the CLI's output.
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def keras_to_litert(model: Any, representative_batches: Callable[[], Iterable[np.ndarray]] | None = None) -> bytes:
    """Converts a Keras model to a LiteRT flatbuffer: float, or full-integer int8 when
    calibration batches are given (inputs and outputs stay float32, so callers need no
    quantization parameters)."""
    tf = _tf.tensorflow()

    with _quiet_stdout():
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if representative_batches is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]

            def representative() -> Iterable[list[np.ndarray]]:
                for batch in representative_batches():
                    for image in np.asarray(batch, np.float32):
                        yield [image[None]]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
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


def read_onnx_metadata(path: str | os.PathLike) -> ModelInfo:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("onnxruntime", "reading an ONNX model", extra="onnx") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped errors for bad files
        raise CrackscanError(f"{path} is not a usable ONNX model: {str(error).strip().splitlines()[0]}") from None
    text = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
    if text is None:
        raise CrackscanError(f"{path}: no crackscan metadata in this .onnx file (export it with 'crackscan export')")
    return ModelInfo.from_json(text, str(path))


def write_bytes(path: Path, content: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path
