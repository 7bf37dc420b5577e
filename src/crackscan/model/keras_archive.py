"""The .keras archive: saving with crackscan's metadata inside, reading it back, reading a
head's weights without TensorFlow, and editing the archive to put a site head on a model.

This is the one module that knows Keras' archive layout (``config.json``, the weight groups
of ``model.weights.h5`` named by layer type and order). ``check_layout`` says in one line
what a Keras release changed, so an incompatible release fails loudly, never by writing a
model that loads wrong; pyproject bounds ``keras`` to the releases its test passed on.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import _tf
from ..errors import CrackscanError, first_line
from ..files import atomic_path
from .heads import SiteHead
from .info import METADATA_NAME, ModelInfo

# The entries of Keras' own archive (not the run folder's config.json).
KERAS_CONFIG = "config.json"
KERAS_WEIGHTS = "model.weights.h5"

def save_keras_model(model: Any, path: Path, info: ModelInfo) -> Path:
    """Saves the .keras file with the metadata as one more entry of its zip archive."""
    path = Path(path)
    with atomic_path(path) as temporary:
        model.save(temporary)
        with zipfile.ZipFile(temporary, "a") as archive:
            archive.writestr(METADATA_NAME, info.to_json())
    return path


def read_keras_metadata(path: Path) -> ModelInfo:
    """The crackscan metadata inside a .keras archive, without loading the model."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if KERAS_CONFIG not in names:
                raise CrackscanError(f"{path} is not a Keras model file")
            if METADATA_NAME not in names:
                raise CrackscanError(
                    f"{path} is a Keras model but not a crackscan one (no class names or input size in it)"
                )
            return ModelInfo.from_json(archive.read(METADATA_NAME), str(path))
    except zipfile.BadZipFile:
        raise CrackscanError(f"{path} is not a Keras model file (not a .keras archive)") from None
    except OSError as error:
        raise CrackscanError(f"cannot read model {path}: {error.strerror or error}") from None


def load_keras_model(path: str | os.PathLike) -> tuple[Any, ModelInfo]:
    path = Path(path)
    info = read_keras_metadata(path)
    keras = _tf.keras()
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # a damaged archive surfaces as many error types
        raise CrackscanError(f"cannot load model {path}: {first_line(error)}") from None
    return model, info


HEAD_WEIGHTS = "layers/dense/vars"  # the classifier's Dense layer inside model.weights.h5


def read_head_weights(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The dense head's kernel and bias, read from the .keras archive without TensorFlow."""
    import h5py

    try:
        with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read(KERAS_WEIGHTS)), "r") as weights:
            return weights[f"{HEAD_WEIGHTS}/0"][:], weights[f"{HEAD_WEIGHTS}/1"][:]
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise CrackscanError(f"cannot read the head of {path}: {error}") from None


def read_crack_head(path: str | os.PathLike, info: ModelInfo) -> tuple[np.ndarray, float]:
    """The two-class softmax head as the one logistic head it is: weights and bias of the
    crack logit (crack minus clear), over the pooled features."""
    kernel, bias = read_head_weights(path)
    positive, negative = info.positive_index, 1 - info.positive_index
    return kernel[:, positive] - kernel[:, negative], float(bias[positive] - bias[negative])


class ArchiveLayoutError(CrackscanError):
    """A .keras archive is not laid out as the Keras releases crackscan edits write it."""


def check_layout(config: dict[str, Any], weights: Any) -> None:
    """What ``write_site_model`` relies on in a classifier's archive, checked before any edit:
    a functional config with a "classes" Dense layer on the pooled features, one nested
    functional backbone, and the head's weights in the "dense" group of model.weights.h5."""
    try:
        layers = config["config"]["layers"]
        classes = next(layer for layer in layers if layer["name"] == "classes")
        pooled = classes["inbound_nodes"][0]["args"][0]
        assert pooled["class_name"] == "__keras_tensor__" and pooled["config"]["shape"][-1] > 0
        assert isinstance(classes["config"]["dtype"], dict)
        backbones = [layer for layer in layers if layer["class_name"] == "Functional"]
        assert len(backbones) == 1 and backbones[0]["config"]["output_layers"]
        assert {"0", "1"} <= set(weights["layers/dense/vars"].keys())
        assert "layers/rescaling" in weights
    except (KeyError, IndexError, TypeError, StopIteration, AssertionError) as error:
        from importlib.metadata import version

        raise ArchiveLayoutError(
            f"this .keras archive is not laid out as crackscan expects (Keras {version('keras')}; "
            f"{type(error).__name__} {error}): install a keras release that pyproject.toml allows") from None


def write_site_model(parent_keras: Path, path: Path, head: SiteHead, info: ModelInfo,
                     site_map_shape: tuple[int, ...], site_layer: str) -> Path:
    """The parent's model with its dense head replaced by the site head's layers, written as
    a .keras archive: end to end (pixels in, class probabilities out), so every runtime and
    export takes it as any other run's model. ``site_map_shape`` is (height, width, channels)
    of the site map, the output of ``site_layer`` in the backbone.

    The archive is edited, not made by Keras: loading Keras for this would cost more than the
    whole adaptation (about 9 s of a 10 s budget). Every new layer is a stock Keras layer, so
    the file loads without crackscan: the any-cell logit's sigmoid is the share of a softmax
    over the cells' scores and one fixed zero score that the cells do not hold."""
    import h5py

    with zipfile.ZipFile(parent_keras) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(entries[KERAS_CONFIG])
    buffer = io.BytesIO(entries[KERAS_WEIGHTS])
    with h5py.File(buffer, "r+") as weights:
        check_layout(config, weights)
        width = _replace_head_layers(config, info, site_map_shape, site_layer)
        _replace_head_weights(weights, head, width, site_map_shape)
    entries[KERAS_CONFIG] = json.dumps(config).encode()
    entries[KERAS_WEIGHTS] = buffer.getvalue()
    entries[METADATA_NAME] = info.to_json().encode()
    # Stored, not deflated, as Keras writes it: compressing the backbone's weights took a second.
    with atomic_path(path) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as rewritten:
        for name, content in entries.items():
            rewritten.writestr(name, content)
    return Path(path)


def _replace_head_layers(config: dict[str, Any], info: ModelInfo, site_map_shape: tuple[int, ...],
                         site_layer: str) -> int:
    """Swaps the "classes" layer for the site head's graph in ``config``; the backbone gets
    the site map as a second output. Returns the pooled features' width."""
    layers = config["config"]["layers"]
    old = next(layer for layer in layers if layer["name"] == "classes")
    pool = old["inbound_nodes"][0]["args"][0]
    width = pool["config"]["shape"][-1]
    dtype = {k: v for k, v in old["config"]["dtype"].items() if k != "shared_object_id"}
    backbone = next(layer for layer in layers if layer["class_name"] == "Functional")
    outputs = backbone["config"]["output_layers"]
    last = outputs if isinstance(outputs[0], str) else outputs[0]
    backbone["config"]["output_layers"] = [last, [site_layer, 0, 0]]
    rows, cols, channels = site_map_shape
    cells = rows * cols

    def tensor(name: str, shape: list, index: int = 0) -> dict[str, Any]:
        return {"class_name": "__keras_tensor__", "config": {"shape": shape, "dtype": "float32",
                                                             "keras_history": [name, 0, index]}}

    def layer(class_name: str, name: str, inputs: Any, shape: Any, **settings: Any) -> dict[str, Any]:
        return {"module": "keras.layers", "class_name": class_name, "registered_name": None, "name": name,
                "config": {"name": name, "trainable": True, "dtype": dtype, **settings},
                "build_config": {"input_shape": shape}, "inbound_nodes": [{"args": [inputs], "kwargs": {}}]}

    def dense(activation: str, use_bias: bool = True) -> dict[str, Any]:
        settings = {k: v for k, v in old["config"].items() if k not in ("name", "dtype", "trainable")}
        settings.update(units=1, activation=activation, use_bias=use_bias)
        return settings

    one = [None, 1]
    site_map = tensor(backbone["name"], [None, rows, cols, channels], index=1)
    # In the order Keras itself writes this graph (by depth), which is the order it names
    # the layers' weight groups in: dense, dense_1, ... as the Dense layers come.
    new_layers = [
        layer("Dense", "site_cells", site_map, [None, rows, cols, channels], **dense("linear")),
        layer("Reshape", "site_cell_scores", tensor("site_cells", [None, rows, cols, 1]), [None, rows, cols, 1],
              target_shape=[cells]),
        layer("Dense", "no_crack_score", pool, [None, width], **dense("linear", use_bias=False)),
        layer("Concatenate", "site_scores", [tensor("site_cell_scores", [None, cells]), tensor("no_crack_score", one)],
              [[None, cells], one], axis=-1),
        layer("Softmax", "site_shares", tensor("site_scores", [None, cells + 1]), [None, cells + 1], axis=-1),
        layer("Dense", "parent_head", pool, [None, width], **dense("sigmoid")),
        layer("Dense", "site_head", tensor("site_shares", [None, cells + 1]), [None, cells + 1],
              **dense("linear", use_bias=False)),
        layer("Dense", "gate_head", pool, [None, width], **dense("sigmoid")),
        layer("Subtract", "site_minus_parent", [tensor("site_head", one), tensor("parent_head", one)], [one, one]),
        layer("Multiply", "gated", [tensor("gate_head", one), tensor("site_minus_parent", one)], [one, one]),
        layer("Add", "crack_probability", [tensor("parent_head", one), tensor("gated", one)], [one, one]),
        layer("Rescaling", "clear_probability", tensor("crack_probability", one), one, scale=-1.0, offset=1.0),
        layer("Concatenate", "classes", [tensor("clear_probability", one), tensor("crack_probability", one)]
              if info.positive_index == 1 else [tensor("crack_probability", one), tensor("clear_probability", one)],
              [one, one], axis=-1),
    ]
    config["config"]["layers"] = [entry for entry in layers if entry is not old] + new_layers
    return width


def _replace_head_weights(weights: Any, head: SiteHead, width: int, site_map_shape: tuple[int, ...]) -> None:
    """The site head's weights in the groups Keras names the new layers' weights by: Dense
    layers dense, dense_1, ... in graph order; the parent's input scaling is "rescaling", so
    the new one is "rescaling_1", and so on; weightless layers get empty groups."""
    rows, cols, _ = site_map_shape
    site_sum = np.ones((rows * cols + 1, 1), np.float32)
    site_sum[-1] = 0  # every share but the zero score's: the crack probability
    values = {
        "dense": [np.asarray(head.site[0], np.float32)[:, None], np.array([head.site[1]], np.float32)],
        "dense_1": [np.zeros((width, 1), np.float32)],
        "dense_2": [np.asarray(head.parent[0], np.float32)[:, None], np.array([head.parent[1]], np.float32)],
        "dense_3": [site_sum],
        "dense_4": [np.asarray(head.gate[0], np.float32)[:, None], np.array([head.gate[1]], np.float32)],
    }
    del weights["layers/dense"]
    for group, arrays in values.items():
        stored = weights.create_group(f"layers/{group}/vars")
        for index, array in enumerate(arrays):
            stored.create_dataset(str(index), data=array)
    for group in ("reshape", "concatenate", "softmax", "subtract", "multiply", "add", "rescaling_1", "concatenate_1"):
        weights.create_group(f"layers/{group}/vars")
