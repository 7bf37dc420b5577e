"""The format axis: one row per model file format, which every stage asks.

A row names the format, its file suffix, whether `crackscan export` writes it, whether it
loads without Keras (what a Ray worker or a light server wants), its speed rank among a run's
exports (measured by benchmarks/inference_speed.py: LiteRT before ONNX, int8 before float),
and by module path its converter, its metadata writer and reader and its opener, resolved when
asked so this low room imports none of them. Export iterates over the rows, loading picks a row
by suffix, the CLI's choices and a run's export order read them, and ``run_order`` is the one
place that says which of a run's files runs first.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    exportable: bool  # crackscan export writes it (a .keras file is what export starts from)
    light: bool  # opens without Keras: one small load per Ray worker
    speed_rank: int  # among a run's exports, lower runs first (int8 before float within a rank)
    converter: str | None  # "module:name" of the Keras-to-file conversion (None: it is the Keras file)
    attach_metadata: str | None
    read_metadata: str
    opener: str
    packages: tuple[str, ...] = ()  # beyond the base install, to write it (the export extra)
    title: str = ""  # as people write it: LiteRT, ONNX

    def implementation(self, part: str) -> Any:
        module, _, name = getattr(self, part).partition(":")
        return getattr(importlib.import_module(module), name)

    def run_file(self, int8: bool) -> str:
        """A run's export of this format: model.tflite, model.int8.onnx, ..."""
        return f"model{'.int8' if int8 else ''}{self.suffix}"


FORMAT_TABLE: dict[str, Format] = {row.name: row for row in (
    Format("keras", ".keras", exportable=False, light=False, speed_rank=9, converter=None, attach_metadata=None,
           read_metadata="crackscan.model.keras_archive:read_keras_metadata",
           opener="crackscan.runtime.formats:open_keras", title="Keras"),
    Format("litert", ".tflite", exportable=True, light=True, speed_rank=0,
           converter="crackscan.export:convert_litert", attach_metadata="crackscan.runtime.formats:attach_litert_metadata",
           read_metadata="crackscan.runtime.formats:read_litert_file_metadata",
           opener="crackscan.runtime.formats:open_litert", title="LiteRT"),
    Format("onnx", ".onnx", exportable=True, light=True, speed_rank=1,
           converter="crackscan.export:convert_onnx", attach_metadata="crackscan.runtime.formats:attach_onnx_metadata",
           read_metadata="crackscan.runtime.formats:read_onnx_file_metadata",
           opener="crackscan.runtime.formats:open_onnx", packages=("tf2onnx", "onnx", "onnxruntime"), title="ONNX"),
)}
EXPORT_FORMATS = tuple(row.name for row in FORMAT_TABLE.values() if row.exportable)


def format_of(path: str | Path) -> Format | None:
    """The row of a model file, by its suffix (any case); None for a suffix no format has."""
    suffix = Path(path).suffix.lower()
    return next((row for row in FORMAT_TABLE.values() if row.suffix == suffix), None)


def run_order() -> tuple[str, ...]:
    """A run's export files, fastest first: int8 before float, then by the formats' speed rank.
    A run folder given to scan, serve or predict runs the first of these it holds."""
    exported = sorted((row for row in FORMAT_TABLE.values() if row.exportable), key=lambda row: row.speed_rank)
    return tuple(row.run_file(int8) for int8 in (True, False) for row in exported)


def suffixes(light_only: bool = False) -> tuple[str, ...]:
    return tuple(row.suffix for row in FORMAT_TABLE.values() if row.light or not light_only)
