"""What a scan measures with: the scale's sources, the width classes and the limit."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .cracks import Crack, measure
from .scale import Scale, photo_scale, px_to_mm
from .. import settings
from .profiles import PHOTO_RESOLUTION_LIMIT_PX
from .severity import AT_LIMIT, DEFAULT_CLASSES, UNSCALED, WidthClasses, grade, parse_limit, parse_width_classes


@dataclasses.dataclass(frozen=True)
class Measuring:
    """The scale's sources, the width classes and the limit, checked once when made (by the
    same Settings the CLI's flags and the server's query come from)."""

    mm_per_pixel: float | None = None
    distance_m: float | None = None
    distance_from_drone: bool = False
    classes: WidthClasses = DEFAULT_CLASSES
    limit: str | float | None = None

    def __post_init__(self) -> None:
        settings.MM_PER_PIXEL.check(self.mm_per_pixel)
        settings.DISTANCE_M.check(self.distance_m)
        settings.DISTANCE_FROM_DRONE.check(self.distance_from_drone)
        parse_limit(self.limit)

    @classmethod
    def from_settings(cls, values: dict[str, Any]) -> "Measuring":
        """From MEASURE_SETTINGS' values by name (a CLI's or a query's): classes parsed, all checked."""
        classes = values.get("width_classes")
        return cls(values.get("mm_per_pixel"), values.get("distance_m"), bool(values.get("distance_from_drone")),
                   parse_width_classes(classes) if classes else DEFAULT_CLASSES, values.get("limit_mm"))

    def cracks(self, probability: np.ndarray, photo: Any, threshold: float, pixels: np.ndarray | None = None
               ) -> tuple[list[Crack], "CrackFigures"]:
        """The photo's measured cracks and the figures its summary records; their widths read on
        the photo's ``pixels`` (the image the mask was made from) where given."""
        height, width = probability.shape
        scale = photo_scale(photo, width, self.mm_per_pixel, self.distance_m, self.distance_from_drone)
        limit_mm, limit_source = parse_limit(self.limit)
        found = grade(measure(probability, scale.mm_per_pixel, threshold, photo=pixels), self.classes, limit_mm)
        return found, crack_figures(found, scale, self.classes, limit_mm, limit_source)


@dataclasses.dataclass(frozen=True)
class CrackFigures:
    """A photo's crack figures: what its summary.json, summary.csv, the server's answer, the
    report and the GeoJSON show. One writer (``to_dict``) and one list of their names
    (``FIELDS``), which summary.csv's columns and the report's checks read."""

    mm_per_pixel: float | None
    scale_source: str
    cracks: int
    total_length_px: float
    total_length_mm: float | None
    max_width_px: float | None
    max_width_mm: float | None
    widest_crack_id: int | None
    worst_class: str | None
    width_classes: str
    classes_resolved: str
    cracks_by_class: dict[str, int]
    length_by_class_px: dict[str, float]
    cracks_at_resolution_limit: int
    limit_mm: float | None
    limit_source: str | None
    cracks_over_limit: int | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls, values: dict[str, Any]) -> "CrackFigures | None":
        """The figures as ``to_dict`` wrote them (a summary.json, a server's answer), read back and
        checked: None where no crack was measured (a classifier's scan); ValueError naming the
        first figure that is not what its field holds (a number, a name, counts by class)."""
        if values.get("cracks") is None:
            return None
        read = {}
        for field in dataclasses.fields(cls):
            value = values.get(field.name)
            if field.name in NUMBER_FIELDS:
                number = finite_number(value, field.name, optional="None" in field.type)
                read[field.name] = int(number) if number is not None and field.type.startswith("int") else number
            elif field.type.startswith("dict"):
                if not isinstance(value, dict):
                    value = {}
                read[field.name] = {str(name): finite_number(number, f"{field.name}[{name}]") for name, number in value.items()}
            else:
                read[field.name] = None if value is None else str(value)
        read["scale_source"] = read["scale_source"] or ""
        read["width_classes"] = read["width_classes"] or ""
        read["classes_resolved"] = read["classes_resolved"] or ""
        return cls(**read)


def finite_number(value: Any, name: str, optional: bool = False) -> float | None:
    """A figure as a finite number (ValueError naming it when it is not one)."""
    if value is None or value == "":
        if optional:
            return None
        raise ValueError(f"no {name}")
    if isinstance(value, bool):
        raise ValueError(f"{name} {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {str(value)[:40]!r} is not a number") from None
    if not np.isfinite(number):
        raise ValueError(f"{name} is {value!r}, not a finite number")
    return number


FIELDS = tuple(f.name for f in dataclasses.fields(CrackFigures))
# The figures summary.csv has a column for, in its order (the rest are in summary.json).
SUMMARY_COLUMNS = ("cracks", "total_length_px", "total_length_mm", "max_width_px", "max_width_mm", "worst_class",
                   "cracks_over_limit", "mm_per_pixel", "scale_source")
assert set(SUMMARY_COLUMNS) <= set(FIELDS)
# The figures that are numbers (or None): what a reader of a summary checks to be numbers.
NUMBER_FIELDS = tuple(f.name for f in dataclasses.fields(CrackFigures)
                      if f.type in ("int", "float", "int | None", "float | None"))


def crack_figures(cracks: list[Crack], scale: Scale, classes: WidthClasses, limit_mm: float | None,
                  limit_source: str | None) -> CrackFigures:
    """A photo's crack figures: count, total length, widest, by class, over the limit."""
    names = [AT_LIMIT, *classes.names] if scale.mm_per_pixel is not None else [UNSCALED]
    widest = max(cracks, key=lambda c: c.max_width_px, default=None)
    order = {name: i for i, name in enumerate(classes.names)}
    worst = max((c.width_class for c in cracks if c.width_class in order), key=order.get, default=None)
    if worst is None and cracks and scale.mm_per_pixel is not None:
        worst = AT_LIMIT  # every crack finer than the photo resolves
    limit_px = max((c.resolution_limit_px for c in cracks), default=PHOTO_RESOLUTION_LIMIT_PX)
    mm = scale.mm_per_pixel
    shown = scale.to_dict()
    return CrackFigures(
        mm_per_pixel=shown["mm_per_pixel"], scale_source=shown["scale_source"],
        cracks=len(cracks),
        total_length_px=round(sum(c.length_px for c in cracks), 1),
        total_length_mm=_rounded(px_to_mm(sum(c.length_px for c in cracks), mm), 1),
        max_width_px=None if widest is None else round(widest.max_width_px, 2),
        max_width_mm=None if widest is None else widest.mm(widest.max_width_px),
        widest_crack_id=None if widest is None else widest.crack_id,
        worst_class=worst if worst is not None else (UNSCALED if cracks and mm is None else None),
        width_classes=classes.describe(), classes_resolved=classes.resolved(mm, limit_px),
        cracks_by_class={name: sum(c.width_class == name for c in cracks) for name in names},
        length_by_class_px={name: round(sum(c.length_px for c in cracks if c.width_class == name), 1)
                            for name in names},
        cracks_at_resolution_limit=sum(c.at_resolution_limit for c in cracks),
        limit_mm=limit_mm, limit_source=limit_source,
        cracks_over_limit=None if limit_mm is None or mm is None else sum(bool(c.over_limit) for c in cracks),
    )


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
