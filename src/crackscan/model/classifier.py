"""The classifier of the project's origin: the frozen ImageNet MobileNetV2 and a head.

Raw RGB pixels (0-255) go in; a Rescaling layer inside the model maps them to [-1, 1] as
MobileNetV2 expects, so no caller can get preprocessing wrong. The ImageNet backbone is
frozen (and run with training=False, so its batch norm keeps ImageNet statistics); global
average pooling and a dense softmax over the two classes sit on top.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import _tf
from ..settings import TrainConfig
from .backbone import SITE_LAYER, build_backbone


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


def feature_extractor(model: Any) -> Any:
    """A classifier's frozen part as one Keras model: pixels -> (pooled features, site map),
    the pooled features the head reads and the SITE_LAYER activations a site head reads."""
    keras = _tf.keras()
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    tapped = keras.Model(backbone.inputs, [backbone.output, backbone.get_layer(SITE_LAYER).output])
    pixels = keras.Input(tuple(model.input_shape[1:]), name="pixels")
    last, site = tapped(model.get_layer("scale_to_minus1_1")(pixels))
    return keras.Model(pixels, [model.get_layer("pool")(last), site], name="crackscan_features")
