"""A run's int8 backbone, made and checked as the run is written.

A trained or adapted run answers through its frozen backbone and its head in NumPy. On 12 MP
photos the float LiteRT backbone scans at ~0.75-0.8x the speed of the built-in's int8 file
(benchmarks/run_scan_speed.py); an int8 backbone closes that gap with no export by the user.
It is calibrated on the run's own images and checked with the run's own head, against the
float backbone, by the rule every int8 export meets (runtime.parity). One that fails is not
kept: the run stays on float and its metrics say why.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import _tf, runs
from ..files import write_bytes
from ..model.info import ModelInfo
from .formats import keras_to_litert
from .parity import parity_report
from .runners import HeadOnBackboneRunner

CALIBRATION_IMAGES = 256  # export's default too: more changed no check figure measured here
CHECK_IMAGES = 1000

Head = Callable[[np.ndarray, np.ndarray], np.ndarray]


def make_int8_backbone(out: Path, extractor: Any, float_backbone: bytes, head: Head, info: ModelInfo,
                       calibration: np.ndarray, checks: dict[str, tuple[np.ndarray, np.ndarray]],
                       step: Callable[[str], None] = lambda line: None, site_map: bool = True) -> dict[str, Any]:
    """Converts ``extractor`` (classifier.feature_extractor's two-output model; without
    ``site_map``, its pooled features alone) to int8 on the ``calibration`` pixels and keeps it
    in ``out`` if, with ``head``, it passes the int8 rule on every one of ``checks`` (name ->
    labelled pixels) against ``float_backbone``. Returns what metrics.json records: each
    check's figures, and the file or why there is none."""
    started = time.perf_counter()
    step(f"making the int8 backbone (calibrating on {len(calibration)} of the run's images, ~10-40 s)")

    def batches() -> Any:
        for start in range(0, len(calibration), 32):
            yield calibration[start : start + 32]

    if not site_map:
        extractor = _tf.keras().Model(extractor.inputs, extractor.outputs[0])
    content = keras_to_litert(extractor, batches)
    reference = HeadOnBackboneRunner(float_backbone, head, info.positive_index)
    candidate = HeadOnBackboneRunner(content, head, info.positive_index, site_map=site_map)
    reports = {}
    for name, labelled in checks.items():
        if len(labelled[1]):
            step(f"checking the int8 backbone with the run's head on {len(labelled[1])} {name}")
            reports[name] = parity_report(reference, candidate, labelled, info, int8=True)
    passed = bool(reports) and all(report["passed"] for report in reports.values())
    if passed:
        write_bytes(out / runs.INT8_BACKBONE_FILE, content)
    failed = [f"{name}: {r['disagreements']} of {r['images']} labels changed, accuracy "
              f"{r['accuracy_change_points']:+.2f} points (allowed: {r['criterion']})"
              for name, r in reports.items() if not r["passed"]]
    return {
        "file": runs.INT8_BACKBONE_FILE if passed else None,
        "outputs": "pooled features and site map" if site_map else "pooled features",
        "why_not": None if passed else ("; ".join(failed) or "no labelled images to check it on"),
        "calibration_images": int(len(calibration)),
        "checks": reports,
        "seconds": round(time.perf_counter() - started, 1),
    }


def sample_rows(count: int, limit: int, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` of ``count`` rows, drawn once by ``seed``, in order."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).permutation(count)[:limit])
