"""The survey driver: plans a survey (which photos, where each one's results go, which are
already done) and hands the rest to an engine; the same planning for every engine, so an
interrupted survey resumes where it stopped, on either."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Sequence

from .. import settings
from ..errors import CrackscanError
from ..files import file_sha256
from ..model.tasks import task_of
from ..runs import locked
from ..measure.options import Measuring
from ..photo.options import ScanOptions
from ..photo.result import SUMMARY_FILE, PhotoSummary
from ..photo.tiling import scan_geometry
from ..progress import Progress, as_progress
from ..runtime.predictor import as_predictor
from .job import SurveyJob
from .layout import SurveyFolder
from .local import scan_here
from .parquet import ensure_tiles_part
from .plan import locate_photos, relative_parts
from .ray_engine import import_ray, scan_on_ray, send_ray_token


@dataclasses.dataclass
class SurveyOutcome:
    scanned: list[PhotoSummary]
    resumed: list[PhotoSummary]
    failed: list[tuple[str, str]]
    summary_csv: Path | None
    engine: str = "local"
    seconds: float = 0.0
    tiles_dataset: Path | None = None


def scan_many(
    model: Any,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    tile: int | None = None,
    stride: int | None = None,
    threshold: float = 0.5,
    max_pixels: int | None = settings.DEFAULT_MAX_PIXELS,
    force: bool = False,
    progress: Progress | bool = False,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    measuring: Measuring | None = None,
    options: ScanOptions | None = None,
) -> SurveyOutcome:
    """Scans photos and folders of photos into ``out``; resumes an interrupted survey.

    A photo is skipped when its folder holds a complete result made with the same model,
    tile, stride and threshold from the same photo file; anything else is scanned again,
    with a line through ``progress`` saying why (``force`` redoes all). An unreadable photo
    is reported through ``progress`` (skipped) and in summary.csv, and skipped; the rest go
    on. ``engine="ray"`` runs the survey on Ray Data: a local Ray on this machine, or the
    cluster at ``address``, with ``workers`` actors (default: one per CPU). A segmenter's
    survey measures each photo's cracks with ``measuring`` (scale, width classes, limit).
    ``options`` gives all of tile, stride, threshold, max_pixels and measuring at once (the
    CLI's way); the separate arguments are for calls from Python.
    """
    started = time.perf_counter()
    report = as_progress(progress)
    survey = SurveyFolder(Path(out))
    if survey.path.exists() and not survey.path.is_dir():
        raise CrackscanError(f"--out {survey.path} is a file: name a folder for the survey")
    settings.ENGINE.check(engine)
    if options is None:
        options = ScanOptions(tile, stride, threshold, max_pixels, measuring or Measuring())
    if workers is not None:
        settings.WORKERS.check(workers)
    if engine == "local" and (address is not None or workers is not None):
        raise CrackscanError("--address and --workers are for --engine ray")
    predictor = as_predictor(model)
    tile, stride = scan_geometry(predictor.info, options.tile, options.stride)
    options = dataclasses.replace(options, tile=tile, stride=stride)
    if engine == "ray":
        if address:
            send_ray_token()
        ray_module = import_ray()  # before any work: a missing extra is one line, not a traceback
    with locked(survey.path, what="survey"):  # a second scan into the same --out is refused, not interleaved
        return _survey(survey, predictor, inputs, options, force, engine, address, workers, report,
                       ray_module if engine == "ray" else None, started)


def _survey(survey: SurveyFolder, predictor: Any, inputs: Sequence[str | os.PathLike], options: ScanOptions,
            force: bool, engine: str, address: str | None, workers: int | None, report: Progress, ray_module: Any,
            started: float) -> SurveyOutcome:
    made_with = {"model": str(predictor.path) if predictor.path else None,
                 "model_sha256": file_sha256(predictor.path) if predictor.path else None,
                 "tile": options.tile, "stride": options.stride, "threshold": options.threshold}
    if task_of(predictor.info).per_pixel:  # a new scale or limit changes every photo's figures
        made_with["measuring"] = repr(options.measuring)
    manifest = survey.manifest()
    located, root = locate_photos(inputs, survey.path, manifest.get("root"))
    survey.write_manifest(manifest, {**made_with, "root": root, "engine": engine}, report.line)
    jobs, resumed = _plan(survey, located, root, made_with, force, engine == "ray", report)
    if engine == "ray":
        log = scan_on_ray(ray_module, predictor, jobs, survey, options, address, workers, report)
    else:
        log = scan_here(predictor, jobs, options, report, survey.path)
    _check_results_exist(survey, log.scanned + resumed)
    summary_csv = survey.write_summary(log.scanned + resumed, log.failed) if (log.scanned or resumed or log.failed) \
        else None
    dataset = survey.tiles_dataset if engine == "ray" and survey.tiles_dataset.is_dir() else None
    return SurveyOutcome(log.scanned, resumed, log.failed, summary_csv, engine, time.perf_counter() - started, dataset)


def _plan(survey: SurveyFolder, located: list[tuple[str, dict[str, Any]]], root: str, made_with: dict[str, Any],
          force: bool, parquet: bool, report: Progress) -> tuple[list[SurveyJob], list[PhotoSummary]]:
    """The photos still to scan, as jobs, and the results kept from earlier scans (each a
    complete result made as it would be now; with ``parquet``, given its part file)."""
    jobs, resumed = [], []
    folders = survey.photo_folders([relative_parts(identity["photo_path"], root) for _, identity in located])
    for (photo, identity), folder in zip(located, folders):
        expected = {**made_with, **identity}
        kept, why = (None, "") if force else survey.completed(folder, expected)
        if kept is not None:
            if parquet:
                ensure_tiles_part(survey.tiles_dataset, folder, kept)
            resumed.append(kept)
            continue
        if why:
            report.line(f"scanning {photo} again: {why}")
        jobs.append(SurveyJob(photo, str(folder.absolute()), expected, survey.outputs_name(folder)))
    return jobs, resumed


def _check_results_exist(survey: SurveyFolder, summaries: list[PhotoSummary]) -> None:
    """A survey whose folder (or photos' folders) went away while it ran fails: summary.csv
    must never list results that are not there."""
    gone = [s for s in summaries if s.outputs is None or not (survey.path / s.outputs / SUMMARY_FILE).is_file()]
    if gone:
        where = f"{survey.path} vanished" if not survey.path.is_dir() else f"{len(gone)} photos' result folders vanished"
        raise CrackscanError(f"{where} while the survey ran ({len(gone)} of {len(summaries)} results gone): scan again "
                             "into a folder that stays")
