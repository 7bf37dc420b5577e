"""The classifier of the project's origin, and what travels with it.

Raw RGB pixels (0-255) go in; a Rescaling layer inside the model maps them to [-1, 1] as
MobileNetV2 expects, so no caller can get preprocessing wrong. The ImageNet backbone is
frozen (and run with training=False, so its batch norm keeps ImageNet statistics); global
average pooling and a dense softmax over the two classes sit on top.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .settings import TrainConfig
from . import _tf
from .errors import CrackscanError
from .files import atomic_path

METADATA_NAME = "crackscan.json"
METADATA_FORMAT = "crackscan-model"


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Everything needed to use a model file correctly; stored inside or beside it."""

    class_names: tuple[str, ...]
    positive_class: str
    input_size: int
    # Side of the square patches the model learned from: the scale at which to tile photos.
    patch_size: int = 227
    backbone: str = "MobileNetV2"
    alpha: float = 1.0
    crackscan_version: str = ""

    def __post_init__(self) -> None:
        # Metadata comes from files anyone can edit: a model that cannot be used correctly
        # is refused at load, not after a batch has been misread.
        names = self.class_names
        if len(names) != 2 or len(set(names)) != 2 or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"class_names must be two different names, got {list(names)}")
        if self.positive_class not in names:
            raise ValueError(f"positive_class {self.positive_class!r} is not one of {list(names)}")
        for name in ("input_size", "patch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 16 <= value <= 8192:
                raise ValueError(f"{name} must be a whole number of px from 16 to 8192, got {value!r}")

    @property
    def positive_index(self) -> int:
        return self.class_names.index(self.positive_class)

    @property
    def negative_class(self) -> str:
        return self.class_names[1 - self.positive_index]

    def to_json(self) -> str:
        values = dataclasses.asdict(self)
        values["class_names"] = list(self.class_names)
        return json.dumps({"format": METADATA_FORMAT, **values}, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "model") -> "ModelInfo":
        try:
            values = json.loads(text)
            if values.pop("format", None) != METADATA_FORMAT:
                raise ValueError("not crackscan metadata")
            known = {f.name for f in dataclasses.fields(cls)}
            values = {k: v for k, v in values.items() if k in known}
            values["class_names"] = tuple(values["class_names"])
            return cls(**values)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CrackscanError(f"{source}: its crackscan metadata is unreadable ({error})") from None


@dataclasses.dataclass
class Classifier:
    """The end-to-end model and two views that share its layers.

    ``extractor`` maps pixels to pooled backbone features, ``head`` maps features to class
    probabilities: training fits ``head`` on cached features, which trains ``model`` too.
    """

    model: Any
    extractor: Any
    head: Any


def build_classifier(config: TrainConfig, num_classes: int = 2) -> Classifier:
    keras = _tf.keras()

    size = config.image_size
    pixels = keras.Input((size, size, 3), name="pixels")
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1, name="scale_to_minus1_1")(pixels)
    backbone = build_backbone(config)
    backbone.trainable = False
    features = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(scaled, training=False))

    head_layers = []
    if config.dropout > 0:
        head_layers.append(keras.layers.Dropout(config.dropout, name="dropout"))
    head_layers.append(keras.layers.Dense(num_classes, activation="softmax", name="classes"))

    def apply_head(x: Any) -> Any:
        for layer in head_layers:
            x = layer(x)
        return x

    model = keras.Model(pixels, apply_head(features), name="crackscan_mobilenetv2")
    extractor = keras.Model(pixels, features, name="crackscan_features")
    feature_input = keras.Input((features.shape[-1],), name="features")
    head = keras.Model(feature_input, apply_head(feature_input), name="crackscan_head")
    return Classifier(model, extractor, head)


# Site adaptation reads the activations of block 13's expansion: the last layer at 1/16 of the
# input's resolution (10 x 10 cells of a 160 px tile, 6 x 6 of a 96 px one) before the
# network's last downsampling. On four public photo sets (road, asphalt, masonry, brick),
# heads on the mid-level layers (blocks 10 to 14) learned a new site from 25 + 25 tiles
# better than heads on the final pooled features, at both network widths: a thin crack is a
# local line, and the last layers are shaped by ImageNet's objects.
SITE_LAYER = "block_13_expand_relu"


def feature_extractor(model: Any) -> Any:
    """A classifier's frozen part as one Keras model: pixels -> (pooled features, site map),
    the pooled features the head reads and the SITE_LAYER activations a site head reads."""
    keras = _tf.keras()
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    tapped = keras.Model(backbone.inputs, [backbone.output, backbone.get_layer(SITE_LAYER).output])
    pixels = keras.Input(tuple(model.input_shape[1:]), name="pixels")
    last, site = tapped(model.get_layer("scale_to_minus1_1")(pixels))
    return keras.Model(pixels, [model.get_layer("pool")(last), site], name="crackscan_features")


def build_backbone(config: TrainConfig) -> Any:
    keras = _tf.keras()

    weights: str | None = config.weights
    if weights.lower() == "none":
        weights = None
    elif weights.lower() != "imagenet":
        if not Path(weights).is_file():
            raise CrackscanError(f"backbone weights file not found: {weights}")
    shape = (config.image_size, config.image_size, 3)
    try:
        with warnings.catch_warnings():
            # "Weights for input shape (224, 224) will be loaded" for sizes Keras has no file
            # of: the backbone is fully convolutional, so those weights are the right ones.
            warnings.filterwarnings("ignore", message=".*input_shape is undefined or non-square.*")
            return keras.applications.MobileNetV2(
                input_shape=shape, alpha=config.alpha, include_top=False, weights=weights
            )
    except Exception as error:  # Keras reports download and file problems in many types
        if weights == "imagenet":
            raise CrackscanError(
                f"cannot get the ImageNet MobileNetV2 weights: Keras looks for {imagenet_weights_path(config)} "
                "and downloads it there once when it is missing (set KERAS_HOME to use another folder); "
                "offline, put the file there, pass --weights FILE.h5, or --weights none for random "
                f"weights ({_first_line(error)})"
            ) from None
        raise CrackscanError(f"cannot load backbone weights {weights}: {_first_line(error)}") from None


def imagenet_weights_path(config: TrainConfig) -> Path:
    """Where Keras keeps (or would download) the ImageNet weights for ``config``'s backbone."""
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    rows = config.image_size if config.image_size in (96, 128, 160, 192, 224) else 224
    return home / "models" / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(config.alpha)}_{rows}_no_top.h5"


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
            if "config.json" not in names:
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
        raise CrackscanError(f"cannot load model {path}: {_first_line(error)}") from None
    return model, info


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


HEAD_WEIGHTS = "layers/dense/vars"  # the classifier's Dense layer inside model.weights.h5


def read_head_weights(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The dense head's kernel and bias, read from the .keras archive without TensorFlow."""
    import h5py

    try:
        with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
            return weights[f"{HEAD_WEIGHTS}/0"][:], weights[f"{HEAD_WEIGHTS}/1"][:]
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise CrackscanError(f"cannot read the head of {path}: {error}") from None


def read_crack_head(path: str | os.PathLike, info: ModelInfo) -> tuple[np.ndarray, float]:
    """The two-class softmax head as the one logistic head it is: weights and bias of the
    crack logit (crack minus clear), over the pooled features."""
    kernel, bias = read_head_weights(path)
    positive, negative = info.positive_index, 1 - info.positive_index
    return kernel[:, positive] - kernel[:, negative], float(bias[positive] - bias[negative])
