"""One photo of a survey: scanned and written the same way by every engine, and the log of
outcomes as they arrive."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from ..errors import LimitExceeded
from ..images import ImageReadError, max_file_bytes
from ..photo.options import ScanOptions
from ..exif import photo_facts
from ..photo.result import PhotoSummary
from ..photo.scan import scan
from ..progress import Progress
from ..runtime.predictor import Predictor
from .parquet import CRACKS_DATASET, write_cracks_part, write_tiles_part
from .plan import is_uri, read_uri


@dataclasses.dataclass(frozen=True)
class SurveyJob:
    """One photo to scan: where it is (a path or a URI), where its results go (``folder``, an
    absolute path, so a Ray worker in another working directory writes the same place), what
    summary.json records as that folder (``outputs``: relative to the survey folder, so a survey
    moved or copied still finds its results) and what its result must record to be kept next time."""

    photo: str
    folder: str
    expected: dict[str, Any]
    outputs: str


def scan_job(predictor: Predictor, job: SurveyJob, options: ScanOptions, tiles_dataset: Path | None = None
             ) -> dict[str, Any]:
    """Scans one photo of a survey and writes its results; the same for every engine.
    Returns {"photo", "summary": its PhotoSummary} or, for a photo that cannot be scanned,
    {"photo", "failed": reason}; Ray's worker ships the summary as summary.json's values."""
    try:
        source: Any = read_uri(job.photo, max_file_bytes(options.max_pixels)) if is_uri(job.photo) else job.photo
        result = scan(predictor, source, options.tile, options.stride, options.threshold, options.max_pixels,
                      measuring=options.measuring)
    except (ImageReadError, LimitExceeded) as error:
        return {"photo": job.photo, "failed": error.reason if isinstance(error, ImageReadError) else str(error)}
    except OSError as error:  # a remote file that went away, a permission refused
        return {"photo": job.photo, "failed": f"cannot read it ({error.strerror or error})"}
    result.summary.record({"photo": job.photo, "outputs": job.outputs, **job.expected, "exif": photo_facts(source)})
    if tiles_dataset is not None:  # before summary.json, which marks the result complete
        write_tiles_part(tiles_dataset, Path(job.folder), job.photo, result.tiles)
        if result.cracks is not None:
            write_cracks_part(tiles_dataset.with_name(CRACKS_DATASET), Path(job.folder), job.photo, result.cracks)
    result.write(job.folder)
    return {"photo": job.photo, "summary": result.summary}


class OutcomeLog:
    """Outcomes as they arrive: collected, and a line each with photos done of total and the
    rate so far."""

    def __init__(self, total: int, progress: Progress, survey_path: Path | None = None):
        self.total, self.done, self.started = total, 0, time.perf_counter()
        self.survey_path = survey_path
        self.progress = progress
        self.scanned: list[PhotoSummary] = []
        self.failed: list[tuple[str, str]] = []

    def add(self, outcome: dict[str, Any]) -> None:
        self.done += 1
        rate = self.done / max(1e-9, time.perf_counter() - self.started)
        if "failed" in outcome:
            self.failed.append((outcome["photo"], outcome["failed"]))
            self.progress.skipped(outcome["photo"], outcome["failed"])
            return
        summary = outcome["summary"]
        if not isinstance(summary, PhotoSummary):  # from a Ray worker, as plain values
            summary = PhotoSummary.from_dict(summary)
        self.scanned.append(summary)
        folder = self.survey_path / summary.outputs if self.survey_path and summary.outputs else None
        self.progress.line(f"[{self.done}/{self.total}, {rate:.2f} photos/s] {summary.line(folder)}")
