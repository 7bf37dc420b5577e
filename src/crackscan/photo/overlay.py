"""Crack-map overlays, drawn from pixels, boxes and numbers, never from result types: the
scan's map, evaluation's outcome map and later kinds share these pieces.

The figures go in a legend strip below the photo, not on it, where they would hide cracks
on a small photo; text is sized to the photo's width so that it reads the same at any size.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..images import resize_pixels
from .tiling import Box, owned_boxes

OVERLAY_MAX_SIDE = 1600  # overlays are for reading at a glance, not for pixel peeping
OVERLAY_JPEG_QUALITY = 90
CRACK_RGB = (230, 30, 30)
# Overlay colours of tile outcomes against the masks: strong, and apart for colour-blind eyes.
OUTCOME_RGB = {"true positive": (0, 200, 80), "false positive": (255, 140, 0), "false negative": (220, 0, 200)}


def photo_at(pixels: np.ndarray, width: int, height: int, factor: float) -> np.ndarray:
    """The photo's pixels at ``factor`` of its true ``width`` x ``height`` (``pixels`` may
    hold it at a reduced size)."""
    return resize_pixels(pixels, max(1, round(width * factor)), max(1, round(height * factor)))


def draw_tile_map(pixels: np.ndarray, width: int, height: int, boxes: Sequence[Box], probabilities: Sequence[float],
                  threshold: float, legend: Sequence[str], max_side: int = OVERLAY_MAX_SIDE) -> Image.Image:
    """The photo, tiles at or over ``threshold`` shaded red by crack probability and
    outlined, each over the pixels it owns (tiling.owned_boxes), and the ``legend`` lines
    with the shading's colour ramp below it. Boxes are in the photo's ``width`` x ``height``."""
    factor = min(1.0, max_side / max(width, height))
    base = Image.fromarray(photo_at(pixels, width, height, factor)).convert("RGBA")
    shade = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(shade)
    for (x, y, w, h), probability in zip(owned_boxes(list(boxes)), probabilities):
        if probability < threshold:
            continue
        left, top = x * factor, y * factor
        # A tile thinner than a pixel at this scale (a 1 x 30,000 px photo) is still drawn.
        box = (left, top, max(left, (x + w) * factor - 1), max(top, (y + h) * factor - 1))
        draw.rectangle(box, fill=(*CRACK_RGB, _shade_alpha(probability, threshold)), outline=(255, 40, 40, 230),
                       width=2)
    photo = Image.alpha_composite(base, shade).convert("RGB")
    lines = [*legend, f"shading: crack probability from {threshold:.2f} (light) to 1.00 (dark)"]
    return with_legend_strip(photo, lines, ramp_from=threshold)


def reduced_mask(probability: np.ndarray, max_side: int = OVERLAY_MAX_SIDE) -> np.ndarray:
    """A probability mask (uint8, photo size) at the overlay's size, each pixel the highest
    of the photo pixels it covers: a 1 px crack stays drawn at any reduction."""
    height, width = probability.shape
    factor = min(1.0, max_side / max(width, height))
    if factor == 1.0:
        return probability
    step = max(1, int(np.ceil(1 / factor)))
    size = max(1, round(width * factor)), max(1, round(height * factor))
    return cv2.resize(cv2.dilate(probability, np.ones((step, step), np.uint8)), size, interpolation=cv2.INTER_NEAREST)


# Measured cracks by width class, light to strong; "unscaled" (no mm) in the crack red.
CLASS_RGB = {"hairline": (255, 215, 0), "fine": (255, 140, 0), "medium": (230, 30, 30), "wide": (200, 0, 200),
             "unscaled": (230, 30, 30)}


def draw_crack_pixels(pixels: np.ndarray, width: int, height: int, probability: np.ndarray, threshold: float,
                      legend: Sequence[str], max_side: int = OVERLAY_MAX_SIDE, cracks: Sequence = ()) -> Image.Image:
    """The photo with its crack pixels (``probability``, 0-255 at the photo's size, at or over
    ``threshold``) painted red; a thin crack is thickened where the overlay is smaller than
    the photo (the mask is reduced by its maximum, so no crack pixel vanishes)."""
    factor = min(1.0, max_side / max(width, height))
    photo = photo_at(pixels, width, height, factor)
    said = reduced_mask(probability, max_side) >= threshold * 255
    painted = photo.copy()
    painted[said > 0] = (0.35 * painted[said > 0] + 0.65 * np.array(CRACK_RGB)).astype(np.uint8)
    image = Image.fromarray(painted)
    draw = ImageDraw.Draw(image)
    for crack in cracks:  # each measured crack's centreline in its class's colour, with its id
        colour = CLASS_RGB.get(crack.width_class, (0, 160, 255))
        for line in crack.polylines:
            if len(line) > 1:
                draw.line([(x * factor, y * factor) for x, y in line], fill=colour, width=max(2, round(3 * factor)))
        draw.text((crack.x * factor, max(0, crack.y * factor - 12)), f"#{crack.crack_id}", fill=colour)
    classes = sorted({c.width_class for c in cracks})
    key = f"; lines: cracks by width class ({', '.join(classes)})" if classes else ""
    return with_legend_strip(image, [*legend, f"red: crack probability {threshold:.2f} or more{key}"])


def draw_outcome_map(pixels: np.ndarray, width: int, height: int, boxes: Sequence[Box], outcomes: Sequence[str | None],
                     max_side: int = OVERLAY_MAX_SIDE) -> Image.Image:
    """The photo with each graded tile outlined in its outcome's colour (OUTCOME_RGB; None:
    not drawn); a legend below."""
    scale = min(1.0, max_side / max(width, height))
    photo = Image.fromarray(photo_at(pixels, width, height, scale))
    draw = ImageDraw.Draw(photo)
    for (x, y, w, h), outcome in zip(boxes, outcomes):
        if outcome is None:
            continue
        box = [round(x * scale) + 1, round(y * scale) + 1, round((x + w) * scale) - 2, round((y + h) * scale) - 2]
        draw.rectangle(box, outline=OUTCOME_RGB[outcome], width=max(2, round(3 * scale)))
    legend = Image.new("RGB", (photo.width, 22), (255, 255, 255))
    pen = ImageDraw.Draw(legend)
    x = 6
    for outcome, colour in OUTCOME_RGB.items():
        pen.rectangle([x, 5, x + 12, 17], outline=colour, width=3)
        pen.text((x + 16, 5), outcome, fill=(0, 0, 0))
        x += 24 + int(pen.textlength(outcome))
    framed = Image.new("RGB", (photo.width, photo.height + legend.height))
    framed.paste(photo, (0, 0))
    framed.paste(legend, (0, photo.height))
    return framed


def _shade_alpha(probability: float, threshold: float) -> int:
    strength = (probability - threshold) / (1 - threshold)
    return int(35 + 85 * strength)


def with_legend_strip(photo: Image.Image, lines: Sequence[str], ramp_from: float | None = None) -> Image.Image:
    """The photo with a white strip below it holding ``lines`` and, with ``ramp_from``, the
    crack shading's colour ramp from that probability to 1."""
    font_size = max(11, min(28, photo.width // 45))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    pad = max(4, font_size // 2)
    ramp_h = font_size if ramp_from is not None else 0
    strip_h = len(lines) * (font_size + pad) + ramp_h + 3 * pad
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # Wide enough for its longest line: on a photo narrower than the text, the strip (and
    # the picture) grows to the right rather than cutting the figures off.
    width = max(photo.width, max((int(measure.textlength(line, font=font)) for line in lines), default=0) + 2 * pad)
    composed = Image.new("RGB", (width, photo.height + strip_h), (255, 255, 255))
    composed.paste(photo, (0, 0))
    draw = ImageDraw.Draw(composed)
    y = photo.height + pad
    for line in lines:
        draw.text((pad, y), line, fill=(0, 0, 0), font=font)
        y += font_size + pad
    if ramp_from is not None:
        ramp_w = max(1, min(width - 2 * pad, 40 * font_size))
        for i in range(ramp_w):
            alpha = _shade_alpha(ramp_from + (1 - ramp_from) * i / max(1, ramp_w - 1), ramp_from) / 255
            colour = tuple(int(255 * (1 - alpha) + c * alpha) for c in CRACK_RGB)
            draw.line((pad + i, y, pad + i, y + ramp_h), fill=colour)
        draw.rectangle((pad, y, pad + ramp_w, y + ramp_h), outline=(0, 0, 0))
    return composed
