"""A run's int8 backbone, made and checked as the run is written.

A trained or adapted run answers through its frozen backbone and its head in NumPy. On 12 MP
photos the float LiteRT backbone scans at ~0.75-0.8x the speed of the built-in's int8 file
(benchmarks/run_scan_speed.py); an int8 backbone closes that gap with no export by the user.
It is calibrated on the run's own images and checked with the run's own head, against the
float backbone, by the rule every int8 export meets (runtime.parity). One that fails is not
kept: the run stays on float and its metrics say why. The backbone is frozen, so a checked
int8 file is kept once per backbone (runtime.backbone_cache) and each later run only checks it
with its own head, calibrating anew where that check fails.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import _tf, runs
from ..files import write_bytes
from ..model.info import ModelInfo
from . import backbone_cache
from .formats import keras_to_litert
from .parity import parity_report
from .runners import HeadOnBackboneRunner, two_classes

CALIBRATION_IMAGES = 256  # export's default too: more changed no check figure measured here
CHECK_IMAGES = 1000

Head = Callable[[np.ndarray, np.ndarray], np.ndarray]


def make_int8_backbone(out: Path, extractor: Any, float_backbone: bytes, head: Head, info: ModelInfo,
                       calibration: np.ndarray, checks: dict[str, tuple[np.ndarray, np.ndarray]],
                       step: Callable[[str], None] = lambda line: None, site_map: bool = True,
                       float_features: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Converts ``extractor`` (classifier.feature_extractor's two-output model; without
    ``site_map``, its pooled features alone) to int8 on the ``calibration`` pixels and keeps it
    in ``out`` if, with ``head``, it passes the int8 rule on every one of ``checks`` (name ->
    labelled pixels) against ``float_backbone``. Returns what metrics.json records: each
    check's figures, and the file or why there is none. ``float_features`` (check name -> the
    float backbone's pooled features of those images, for a head of pooled features alone) are
    given where the caller has them already (training embedded those images with it): the float
    backbone is then not run on them again."""
    started = time.perf_counter()
    kind = "int8-site-map" if site_map else "int8-pooled"
    key = backbone_cache.content_key(float_backbone, kind)
    # No site map beside them, as a pooled-features backbone gives none (BackboneRunner).
    known = {name: two_classes(head(features, np.zeros((len(features), 0, 0, 0), np.float32)), info.positive_index)
             for name, features in (float_features or {}).items()}
    # The float backbone runs only for checks whose answers are not known already.
    reference = None if set(checks) <= set(known) else HeadOnBackboneRunner(float_backbone, head, info.positive_index)

    def checked(content: bytes, made: str) -> dict[str, Any]:
        candidate = HeadOnBackboneRunner(content, head, info.positive_index, site_map=site_map)
        reports = {}
        for name, labelled in checks.items():
            if len(labelled[1]):
                step(f"checking the int8 backbone ({made}) with the run's head on {len(labelled[1])} {name}")
                answers = reference if name not in known else (lambda pixels, answers=known[name]: answers)
                reports[name] = parity_report(answers, candidate, labelled, info, int8=True)
        return reports

    def passed(reports: dict[str, Any]) -> bool:
        return bool(reports) and all(report["passed"] for report in reports.values())

    # The backbone is frozen and the same for every run of it: its int8 file, once made and
    # kept, only needs checking with this run's head (~4 s where calibrating is ~15-20 s).
    content = backbone_cache.read(key, kind)
    reused = content is not None
    if reused:
        reports = checked(content, "made once for this backbone")
        reused = passed(reports)
    if not reused:
        step(f"making the int8 backbone (calibrating on {len(calibration)} of the run's images, ~10-40 s)")

        def batches() -> Any:
            for start in range(0, len(calibration), 32):
                yield calibration[start : start + 32]

        model = extractor if site_map else _tf.keras().Model(extractor.inputs, extractor.outputs[0])
        content = keras_to_litert(model, batches)
        reports = checked(content, "calibrated on this run's images")
        if passed(reports):
            backbone_cache.keep(key, kind, content)
    kept = passed(reports)
    if kept:
        write_bytes(out / runs.INT8_BACKBONE_FILE, content)
    failed = [f"{name}: {r['disagreements']} of {r['images']} labels changed, accuracy "
              f"{r['accuracy_change_points']:+.2f} points (allowed: {r['criterion']})"
              for name, r in reports.items() if not r["passed"]]
    return {
        "file": runs.INT8_BACKBONE_FILE if kept else None,
        "outputs": "pooled features and site map" if site_map else "pooled features",
        "why_not": None if kept else ("; ".join(failed) or "no labelled images to check it on"),
        "calibration_images": None if reused else int(len(calibration)),
        "made": ("kept from an earlier run of the same backbone (crackscan's cache), checked with this run's head"
                 if reused else "calibrated on this run's images"),
        "checks": reports,
        "seconds": round(time.perf_counter() - started, 1),
    }


def sample_rows(count: int, limit: int, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` of ``count`` rows, drawn once by ``seed``, in order."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).permutation(count)[:limit])
