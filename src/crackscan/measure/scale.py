"""A photo's scale in mm per pixel, always with where it came from.

- ``--mm-per-pixel X``: the user's own figure (a target of known size in the photo, a survey's
  ground sampling distance).
- ``--distance-m D``: the camera's distance to the surface, with the lens from the photo's
  EXIF: mm per pixel = sensor width x distance / (focal length x image width). The sensor
  width is 36 mm x focal length / 35 mm-equivalent focal length where the EXIF gives both
  (the 35 mm equivalent is defined on the frame's diagonal, so for a 4:3 sensor this is a
  few percent off; said in the source), or from the focal plane resolution tags.
- a drone's height above the surface, for photos taken facing it (nadir, or facing a wall at
  that distance): DJI's XMP ``RelativeAltitude``, with ``--distance-from-drone``.

Without a scale a photo is measured in pixels only, and says so.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import CrackscanError
from ..exif import lens_facts

FULL_FRAME_WIDTH_MM = 36.0


@dataclasses.dataclass(frozen=True)
class Scale:
    mm_per_pixel: float | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"mm_per_pixel": None if self.mm_per_pixel is None else round(self.mm_per_pixel, 5),
                "scale_source": self.source}


def px_to_mm(value_px: float, mm_per_pixel: float | None) -> float | None:
    """A length in px as mm at the photo's scale: the one place a figure changes unit (None
    without a scale: a figure is then in px only)."""
    return None if mm_per_pixel is None else value_px * mm_per_pixel


NO_SCALE = Scale(None, "none: no --mm-per-pixel or --distance-m, so lengths and widths are in pixels only")


def photo_scale(photo: Any, width_px: int, mm_per_pixel: float | None = None, distance_m: float | None = None,
                from_drone: bool = False) -> Scale:
    """The scale of one photo, by the first of the sources given that it has."""
    if mm_per_pixel is not None:
        if mm_per_pixel <= 0:
            raise CrackscanError("--mm-per-pixel must be above 0")
        return Scale(float(mm_per_pixel), "--mm-per-pixel, as given")
    if distance_m is None and not from_drone:
        return NO_SCALE
    facts = lens_facts(photo)
    source_distance = f"--distance-m {distance_m:g}" if distance_m is not None else None
    if distance_m is None:
        altitude = facts.get("drone_relative_altitude_m")
        if altitude is None or altitude <= 0:
            return Scale(None, "none: --distance-from-drone, but the photo carries no drone height (XMP "
                               "RelativeAltitude): pixels only")
        distance_m, source_distance = altitude, f"the drone's height above take-off, {altitude:g} m (XMP)"
    if distance_m <= 0:
        raise CrackscanError("--distance-m must be above 0")
    focal = facts.get("focal_length_mm")
    if not focal:
        return Scale(None, f"none: {source_distance} given, but the photo's EXIF has no focal length: pixels only")
    sensor, sensor_source = _sensor_width_mm(facts, focal)
    if sensor is None:
        return Scale(None, f"none: {source_distance} and a {focal:g} mm lens, but no 35 mm equivalent or focal-plane "
                           "resolution in the EXIF to know the sensor's size: pixels only")
    value = sensor * distance_m * 1000 / (focal * width_px)
    if not math.isfinite(value) or value <= 0:
        return Scale(None, f"none: {source_distance}, but the photo's lens figures give no usable scale: pixels only")
    return Scale(value, f"{source_distance}, {focal:g} mm lens and a {sensor:.2f} mm sensor width ({sensor_source}): "
                        "sensor width x distance / (focal length x image width), for a photo taken square to the "
                        "surface")


def _sensor_width_mm(facts: dict[str, Any], focal: float) -> tuple[float | None, str]:
    equivalent = facts.get("focal_length_35mm")
    if equivalent:
        return FULL_FRAME_WIDTH_MM * focal / equivalent, (
            "from the EXIF 35 mm-equivalent focal length; off by a few percent on a frame that is not 3:2")
    resolution, unit = facts.get("focal_plane_x_resolution"), facts.get("focal_plane_unit")
    width = facts.get("exif_image_width") or facts.get("image_width")
    if resolution and width and unit in (2.0, 3.0, 4.0):
        per_mm = resolution / {2.0: 25.4, 3.0: 10.0, 4.0: 1.0}[unit]
        return width / per_mm, "from the EXIF focal-plane resolution"
    return None, ""
