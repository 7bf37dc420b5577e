"""The classifier of the project's origin: the frozen ImageNet MobileNetV2 and a head.

Raw RGB pixels (0-255) go in; a Rescaling layer inside the model maps them to [-1, 1] as
MobileNetV2 expects, so no caller can get preprocessing wrong. The ImageNet backbone is
frozen (and run with training=False, so its batch norm keeps ImageNet statistics); global
average pooling and a dense softmax over the two classes sit on top.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

from .. import _tf
from ..errors import CrackscanError, first_line
from ..settings import TrainConfig


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
            warnings.filterwarnings("ignore", message=".*input_shape.* is undefined or non-square.*")
            return keras.applications.MobileNetV2(
                input_shape=shape, alpha=config.alpha, include_top=False, weights=weights
            )
    except Exception as error:  # Keras reports download and file problems in many types
        if weights == "imagenet":
            raise CrackscanError(
                f"cannot get the ImageNet MobileNetV2 weights: Keras looks for {imagenet_weights_path(config)} "
                "and downloads it there once when it is missing (set KERAS_HOME to use another folder); "
                "offline, put the file there, pass --weights FILE.h5, or --weights none for random "
                f"weights ({first_line(error)})"
            ) from None
        raise CrackscanError(f"cannot load backbone weights {weights}: {first_line(error)}") from None


def imagenet_weights_path(config: TrainConfig) -> Path:
    """Where Keras keeps (or would download) the ImageNet weights for ``config``'s backbone."""
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    rows = config.image_size if config.image_size in (96, 128, 160, 192, 224) else 224
    return home / "models" / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(config.alpha)}_{rows}_no_top.h5"
