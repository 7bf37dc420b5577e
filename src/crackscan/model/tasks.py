"""The task axis: one row per task, which every stage asks instead of comparing task names.

A model carries its task (``ModelInfo.task``). Each task is a row here naming what a stage
needs of it: whether its output is per pixel (a crack mask, cracks measured on it) or per
tile, whether it has a head that runs on its own, and the implementations that serve it (its
output decoder, trainer, photo scan, export and the wording of its figures), by module path.
Ultralytics' ``task_map`` is the model; the paths are resolved when asked, so this low room can
name code in the rooms above it without importing them, and the import graph stays one-way.
A new task is a new row; ``tests/test_structure.py`` fails when a module outside this one
compares a task's name.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    # Its output is a crack probability per pixel: a scan draws a mask and measures cracks on it,
    # at the photo's own scale; otherwise one probability per tile, resized to the input.
    per_pixel: bool
    # A head on pooled backbone features that runs on its own (the NumPy head of a run).
    has_head: bool
    decoder: str  # "module:name" of its output decoder (runtime.predictor)
    trainer: str  # of the function `crackscan train --task NAME` calls
    photo_scan: str  # of the function that scans one photo
    export: str  # of the function that converts and checks it
    # What its held-out figure measures, in words, for a report or `crackscan models`.
    figure: str

    def implementation(self, part: str) -> Any:
        """The function or class a row names for ``part`` ("decoder", "trainer", ...)."""
        module, _, name = getattr(self, part).partition(":")
        return getattr(importlib.import_module(module), name)


TASK_TABLE: dict[str, Task] = {task.name: task for task in (
    Task("classify", per_pixel=False, has_head=True,
         decoder="crackscan.runtime.predictor:ClassifyDecoder", trainer="crackscan.train:train",
         photo_scan="crackscan.photo.scan:scan_tiles", export="crackscan.export:export_classifier",
         figure="test accuracy"),
    Task("segment", per_pixel=True, has_head=False,
         decoder="crackscan.runtime.predictor:SegmentDecoder", trainer="crackscan.segment.train:train_segmenter",
         photo_scan="crackscan.photo.segment:scan_segmenter", export="crackscan.export:export_segmenter",
         figure="pixel F1 within 2 px"),
)}
TASKS = tuple(TASK_TABLE)
DEFAULT_TASK = "classify"  # files made before models carried a task are all classifiers


def task_of(owner: Any) -> Task:
    """The row of a task name, or of anything carrying one (a ModelInfo, a metrics or summary
    dict); a name that is no task, or none, is a classifier's (as every file before tasks)."""
    if isinstance(owner, dict):
        name = owner.get("task")
    else:
        name = getattr(owner, "task", owner)
    return TASK_TABLE.get(name if isinstance(name, str) else DEFAULT_TASK, TASK_TABLE[DEFAULT_TASK])


def per_pixel_task() -> Task:
    """The row of the task whose output is a mask (what `train --task` names for photos with masks)."""
    return next(task for task in TASK_TABLE.values() if task.per_pixel)
