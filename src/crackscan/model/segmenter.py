"""The crack segmenter: the frozen ImageNet MobileNetV2 read at five strides, and a light decoder.

A crack is a line 1-3 px wide; the backbone's last map is 1/32 of the input, so the decoder
climbs back up through the backbone's own maps at 1/16, 1/8, 1/4 and 1/2 (U-Net style:
bilinear upsampling, the skip concatenated, separable 3x3 convolutions) and ends at full
resolution (FULL_RESOLUTION_STAGE) or at half of it, its logits upsampled.

The backbone is frozen, so its five maps are computed once per training window and cached
(``backbone_taps``); only the decoder (``build_decoder``) is trained, on the cache. The saved
model chains the two (``end_to_end``): pixels 0-255 in, a crack probability per pixel out.
"""

from __future__ import annotations

from typing import Any

from .. import _tf
from ..settings import TrainConfig
from .backbone import build_backbone

# The backbone layers the decoder reads, finest first: (name, stride).
TAPS = (("expanded_conv_project_BN", 2), ("block_2_add", 4), ("block_5_add", 8), ("block_12_add", 16),
        ("block_16_project_BN", 32))
# Channels of the decoder's stages at strides 16, 8, 4, 2 and 1.
DECODER_WIDTHS = (64, 48, 32, 24, 12)
# A last stage at full resolution on the input pixels made decoder training 2.5x slower on a
# CPU (0.11 s against 0.044 s a 256 px window, AMD EPYC, 2 cores); without it the decoder ends
# at stride 2 and its crack logits are upsampled bilinearly, which still draws a 1 px line.
FULL_RESOLUTION_STAGE = False


def backbone_taps(config: TrainConfig) -> Any:
    """pixels (0-255) -> the five TAPS maps of the frozen ImageNet backbone."""
    keras = _tf.keras()
    size = config.image_size
    backbone = build_backbone(config)
    backbone.trainable = False
    tapped = keras.Model(backbone.inputs, [backbone.get_layer(name).output for name, _ in TAPS])
    pixels = keras.Input((size, size, 3), name="pixels")
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1, name="scale_to_minus1_1")(pixels)
    return keras.Model(pixels, tapped(scaled, training=False), name="crackscan_taps")


def build_decoder(config: TrainConfig, tap_channels: tuple[int, ...], folded: bool = False,
                  any_size: bool = False) -> Any:
    """(pixels 0-255, the five TAPS maps) -> crack probability per pixel (N x H x W x 1).

    ``folded``: each batch norm folded into the convolution before it (a bias instead), the
    decoder a LiteRT file keeps and site adaptation fine-tunes: a handful of site photos
    cannot estimate batch statistics. ``any_size``: windows of any size (a multiple of 32)."""
    keras = _tf.keras()
    layers = keras.layers
    size = config.image_size

    def side(stride: int) -> int | None:
        return None if any_size else size // stride

    pixels = keras.Input((side(1), side(1), 3), name="pixels")
    maps = [keras.Input((side(stride), side(stride), channels), name=f"tap_s{stride}")
            for (_, stride), channels in zip(TAPS, tap_channels)]
    skips = [*reversed(maps[:-1]), layers.Rescaling(1 / 127.5, offset=-1, name="pixels_scaled")(pixels)]
    if not FULL_RESOLUTION_STAGE:
        skips = skips[:-1]
    x = maps[-1]
    for stage, (skip, width) in enumerate(zip(skips, DECODER_WIDTHS)):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{stage}")(x)
        x = layers.Concatenate(name=f"skip{stage}")([x, skip])
        for conv in range(2 if stage < 3 else 1):
            x = layers.SeparableConv2D(width, 3, padding="same", use_bias=folded, name=f"dec{stage}_{conv}")(x)
            if not folded:
                x = layers.BatchNormalization(name=f"dec{stage}_{conv}_bn")(x)
            x = layers.ReLU(name=f"dec{stage}_{conv}_relu")(x)
    if FULL_RESOLUTION_STAGE:
        crack = layers.Conv2D(1, 1, activation="sigmoid", name="crack")(x)
    else:
        logit = layers.Conv2D(1, 1, name="crack_logit")(x)
        crack = layers.Activation("sigmoid", name="crack")(
            layers.UpSampling2D(2, interpolation="bilinear", name="up_full")(logit))
    return keras.Model([pixels, *maps], crack, name="crackscan_decoder")


def decoder_convolutions(decoder: Any) -> list[Any]:
    """The decoder's convolution layers in graph order: each stage's separable ones, then the logit."""
    return [layer for layer in decoder.layers if layer.name.startswith("dec") and not layer.name.endswith(("_bn", "_relu"))
            ] + [layer for layer in decoder.layers if layer.name in ("crack", "crack_logit") and layer.weights]


def folded_weights(decoder: Any) -> list[Any]:
    """A trained decoder's weights as build_decoder(folded=True) takes them: each batch norm
    (inference form: gamma (x - mean) / sqrt(var + eps) + beta) folded into the pointwise
    kernel and a bias before it."""
    import numpy as np

    weights = []
    for layer in decoder_convolutions(decoder):
        if layer.name in ("crack", "crack_logit"):
            weights += [np.asarray(w) for w in layer.get_weights()]
            continue
        depthwise, pointwise = (np.asarray(w) for w in layer.get_weights()[:2])
        norm = decoder.get_layer(f"{layer.name}_bn")
        gamma, beta, mean, variance = (np.asarray(w) for w in norm.get_weights())
        scale = gamma / np.sqrt(variance + norm.epsilon)
        weights += [depthwise, pointwise * scale, beta - mean * scale]
    return weights


def weights_from_convolutions(convolutions: list[tuple[str, Any, Any]], folded_decoder: Any) -> list[Any]:
    """build_decoder(folded=True)'s weights from a converted file's decoder convolutions
    (runtime.formats.litert_convolutions): each depthwise then pointwise pair is one separable
    layer, the depthwise bias (zero unless the file was folded otherwise) carried through the
    pointwise kernel into its bias. Raises ValueError when the file's decoder is not this one."""
    import numpy as np

    layers = decoder_convolutions(folded_decoder)
    weights, queue = [], list(convolutions)
    for layer in layers:
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if layer.name in ("crack", "crack_logit"):
            kind, kernel, bias = queue.pop(0) if queue else ("", None, None)
            if kind != "conv" or [kernel.shape, bias.shape] != expected:
                raise ValueError(f"the file's last convolution is not the decoder's {layer.name}")
            weights += [kernel, bias]
            continue
        if len(queue) < 2 or [queue[0][0], queue[1][0]] != ["depthwise", "conv"]:
            raise ValueError(f"the file has no separable convolution for the decoder's {layer.name}")
        (_, depthwise, depthwise_bias), (_, pointwise, bias) = queue.pop(0), queue.pop(0)
        if [depthwise.shape, pointwise.shape, bias.shape] != expected:
            raise ValueError(f"the file's {layer.name} has other shapes than the decoder's")
        weights += [depthwise, pointwise, bias + np.einsum("c,co->o", depthwise_bias, pointwise[0, 0])]
    if queue:
        raise ValueError(f"the file has {len(queue)} convolutions more than the decoder")
    return weights


def end_to_end(taps: Any, decoder: Any) -> Any:
    """The saved segmenter: pixels in, crack probability map out, one graph."""
    keras = _tf.keras()
    pixels = keras.Input(tuple(taps.input_shape[1:]), name="pixels")
    maps = taps(pixels)
    return keras.Model(pixels, decoder([pixels, *maps]), name="crackscan_segmenter")
