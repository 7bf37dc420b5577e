"""The local engine: one process, photo after photo, the model's threads on every core."""

from __future__ import annotations

from pathlib import Path

from ..photo.options import ScanOptions

from ..progress import Progress
from ..runtime.predictor import Predictor
from .job import OutcomeLog, SurveyJob, scan_job


def scan_here(predictor: Predictor, jobs: list[SurveyJob], options: ScanOptions, progress: Progress,
              survey_path: Path | None = None) -> OutcomeLog:
    log = OutcomeLog(len(jobs), progress, survey_path)
    bar = progress.bar(total=len(jobs), desc="photos", unit="photo")
    for job in jobs:
        outcome = scan_job(predictor, job, options)
        bar.clear()
        log.add(outcome)
        bar.update(1)
    bar.close()
    return log
