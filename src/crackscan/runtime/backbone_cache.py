"""A frozen backbone's LiteRT files, made once per backbone and reused by every run.

Training and adapting never change the backbone: every run of the same ImageNet MobileNetV2
(alpha, input size, outputs) converts the same network. Converting it to float LiteRT costs
~10-15 s and making its int8 file (calibration and conversion) ~15-20 s on 2 cores, a third of
a 12,500-image training on an AMD EPYC (issue 34). Both are kept in crackscan's cache folder
(settings.cache_folder), named by what the network computes: its input and output shapes and
its weights, hashed. An int8 file made from another run's images is still checked with each
new run's own head before that run keeps it (runtime.int8_backbone).

Every cache write is atomic and may fail (a read-only home): the run then converts as before.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WriteError
from ..files import write_bytes
from ..settings import cache_folder
from ..version import __version__

FOLDER = "backbones"


def network_key(model: Any) -> str:
    """What a Keras network computes, as a hex digest: input and output shapes and every
    weight, with the TensorFlow and crackscan versions that convert it."""
    from .. import _tf

    digest = hashlib.sha256()
    digest.update(repr((__version__, _tf.tensorflow().__version__, model.input_shape,
                        [tuple(o.shape) for o in model.outputs])).encode())
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight))
        digest.update(repr((value.dtype.str, value.shape)).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:32]


def content_key(content: bytes, kind: str) -> str:
    return hashlib.sha256(kind.encode() + content).hexdigest()[:32]


def _path(key: str, kind: str) -> Path:
    return cache_folder() / FOLDER / f"{key}.{kind}.tflite"


def read(key: str, kind: str) -> bytes | None:
    path = _path(key, kind)
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None


def keep(key: str, kind: str, content: bytes) -> None:
    path = _path(key, kind)
    with contextlib.suppress(WriteError, OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, content)


def float_litert(model: Any) -> bytes:
    """``model`` (a frozen backbone's feature extractor) as float LiteRT: converted once per
    network, read from the cache after that."""
    from .formats import keras_to_litert

    key = network_key(model)
    content = read(key, "float")
    if content is None:
        content = keras_to_litert(model)
        keep(key, "float", content)
    return content
