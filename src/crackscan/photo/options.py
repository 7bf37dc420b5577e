"""How a photo is scanned and measured: one typed value, built once from the Settings that the
CLI's flags and the server's query parameters come from, and passed whole from the CLI, the
server, the survey and Ray's workers to each photo's scan."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .. import settings
from ..measure.options import Measuring


@dataclasses.dataclass(frozen=True)
class ScanOptions:
    tile: int | None = None  # None: the model's patch size
    stride: int | None = None  # None: the tile
    threshold: float = 0.5
    max_pixels: int | None = settings.DEFAULT_MAX_PIXELS
    measuring: Measuring = dataclasses.field(default_factory=Measuring)

    def __post_init__(self) -> None:
        settings.TILE.check(self.tile)
        settings.STRIDE.check(self.stride)
        settings.THRESHOLD.check(self.threshold)
        if self.max_pixels is not None:
            settings.MAX_PIXELS.check(self.max_pixels)

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> "ScanOptions":
        """From the values of SCAN_SETTINGS, MAX_PIXELS and MEASURE_SETTINGS by name (what
        settings.resolved or settings.from_query give); absent ones take their defaults."""
        known = {s.name: values[s.name] for s in (*settings.SCAN_SETTINGS, settings.MAX_PIXELS) if s.name in values}
        return cls(**known, measuring=Measuring.from_settings(dict(values)))
