"""The frozen ImageNet MobileNetV2 every crackscan model stands on: built once from Keras'
weights (or a file, or none), and the layer site adaptation reads. The classifier and the
segmenter each put their own head on it; it is never trained."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from .. import _tf
from ..errors import CrackscanError, first_line
from ..settings import TrainConfig

# Site adaptation reads the activations of block 13's expansion: the last layer at 1/16 of the
# input's resolution (10 x 10 cells of a 160 px tile, 6 x 6 of a 96 px one) before the
# network's last downsampling. On four public photo sets (road, asphalt, masonry, brick),
# heads on the mid-level layers (blocks 10 to 14) learned a new site from 25 + 25 tiles
# better than heads on the final pooled features, at both network widths: a thin crack is a
# local line, and the last layers are shaped by ImageNet's objects.
SITE_LAYER = "block_13_expand_relu"



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
