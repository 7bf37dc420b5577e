"""Width classes and limits: what a measured width means to an inspector.

The default classes follow the limits the codes give (named, so a report can cite them):
ACI 224R-01 Table 4.1 ("reasonable" widths for reinforced concrete under service loads:
0.41 mm dry air, 0.30 mm humid air or soil, 0.18 mm de-icing chemicals, 0.15 mm seawater,
0.10 mm water-retaining structures) and Eurocode 2 EN 1992-1-1 Table 7.1N (w_max 0.4 mm for
X0 and XC1, 0.3 mm for XC2 to XS3). Without a scale, a crack has no class in mm: it is
"unscaled", and only its width in pixels is given.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import CrackscanError

UNSCALED = "unscaled"
# The class of a crack narrower than its photo resolves: its width in mm cannot be told, so
# neither can its class, whatever its blurred width would say.
AT_LIMIT = "finer than the photo resolves"
# Exposure limits by name, in mm: --limit-mm takes a number or one of these.
EXPOSURE_LIMITS_MM = {
    "aci-dry-air": 0.41, "aci-humid": 0.30, "aci-deicing": 0.18, "aci-seawater": 0.15, "aci-water-retaining": 0.10,
    "ec2-x0-xc1": 0.40, "ec2-xc2-xs3": 0.30,
}


@dataclasses.dataclass(frozen=True)
class WidthClasses:
    """Classes by the crack's maximum width in mm: (name, upper bound) in rising order, the
    last with no bound."""

    bounds: tuple[tuple[str, float | None], ...]
    source: str

    def class_of(self, crack: Any) -> str:
        width_mm = crack.mm(crack.max_width_px)
        if width_mm is None:
            return UNSCALED
        if crack.at_resolution_limit:
            return AT_LIMIT
        for name, upper in self.bounds:
            if upper is None or width_mm < upper:
                return name
        return self.bounds[-1][0]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.bounds]

    def resolved(self, mm_per_pixel: float | None, limit_px: float) -> str:
        """Which classes a photo at ``mm_per_pixel`` can tell apart, whose widths under
        ``limit_px`` are not resolved: a bound under the resolved width separates nothing."""
        if mm_per_pixel is None:
            return "no scale: widths in px only, no classes"
        limit_mm = limit_px * mm_per_pixel
        unresolved = [name for name, upper in self.bounds if upper is not None and upper <= limit_mm]
        told = [name for name in self.names if name not in unresolved]
        head = f"widths under {limit_mm:.2g} mm ({limit_px:.2g} px at {mm_per_pixel:g} mm/px) are not resolved"
        if not unresolved:
            return f"{head}; every class can be told: {', '.join(told)}"
        if len(told) <= 1:
            return (f"{head}: {', '.join(unresolved)} cannot be told apart (cracks under it are '{AT_LIMIT}'); "
                    f"only {told[0]} can be told")
        return (f"{head}: {', '.join(unresolved)} cannot be told apart (cracks under it are '{AT_LIMIT}'); "
                f"{', '.join(told)} can")

    def describe(self) -> str:
        parts, lower = [], 0.0
        for name, upper in self.bounds:
            parts.append(f"{name} {'<' + format(upper, 'g') if lower == 0 else (f'{lower:g}-{upper:g}' if upper else '>=' + format(lower, 'g'))} mm")
            lower = upper or lower
        return ", ".join(parts) + f" ({self.source})"


DEFAULT_CLASSES = WidthClasses(
    (("hairline", 0.10), ("fine", 0.30), ("medium", 0.41), ("wide", None)),
    "bounds from ACI 224R-01 Table 4.1: 0.10 mm water-retaining, 0.30 mm humid air or soil (also EC2's XC2-XS3 "
    "w_max), 0.41 mm dry air")


def grade(cracks: list, classes: WidthClasses | None = None, limit_mm: float | None = None) -> list:
    """Each measured crack's width class, and whether it is over ``limit_mm``; the cracks,
    graded. A crack at the photo's resolution limit is never flagged: it is not over the limit
    when the photo resolves the limit, and unknown (None) when the limit is finer than that."""
    widths = classes or DEFAULT_CLASSES
    for crack in cracks:
        crack.width_class = widths.class_of(crack)
        width_mm = crack.mm(crack.max_width_px)
        if limit_mm is not None and width_mm is not None:
            if not crack.at_resolution_limit:
                crack.over_limit = width_mm > limit_mm
            else:
                resolved_mm = crack.mm(crack.resolution_limit_px)
                crack.over_limit = False if resolved_mm is not None and resolved_mm <= limit_mm else None
    return cracks


def parse_width_classes(text: str) -> WidthClasses:
    """``hairline:0.1,fine:0.3,wide``: names with their upper bound in mm, rising, the last open."""
    bounds: list[tuple[str, float | None]] = []
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        for index, item in enumerate(items):
            name, _, upper = item.partition(":")
            if index == len(items) - 1:
                if upper:
                    raise ValueError(f"the last class ({name}) has no upper bound")
                bounds.append((name.strip(), None))
            else:
                bounds.append((name.strip(), float(upper)))
    except ValueError as error:
        raise CrackscanError(f"--width-classes {text!r}: {error} (write e.g. hairline:0.1,fine:0.3,medium:1,wide)") \
            from None
    uppers = [upper for _, upper in bounds[:-1]]
    if len(bounds) < 2 or any(not name for name, _ in bounds) or uppers != sorted(uppers) or any(u <= 0 for u in uppers):
        raise CrackscanError(f"--width-classes {text!r}: give two or more named classes with rising upper bounds in mm, "
                             "e.g. hairline:0.1,fine:0.3,medium:1,wide")
    return WidthClasses(tuple(bounds), "set with --width-classes")


def parse_limit(text: str | float | None) -> tuple[float | None, str | None]:
    """A limit in mm and where it comes from: a number, or an exposure name."""
    if text is None:
        return None, None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = repr(float(text))
    key = str(text).strip().lower()
    if key in EXPOSURE_LIMITS_MM:
        return EXPOSURE_LIMITS_MM[key], f"{key} ({'ACI 224R-01 Table 4.1' if key.startswith('aci') else 'EN 1992-1-1 Table 7.1N'})"
    try:
        value = float(key)
    except ValueError:
        raise CrackscanError(f"--limit-mm {text!r}: a width in mm or one of {', '.join(EXPOSURE_LIMITS_MM)}") from None
    if not math.isfinite(value) or value <= 0:
        raise CrackscanError(f"--limit-mm {text!r}: a width in mm must be a number above 0")
    return value, "--limit-mm"
