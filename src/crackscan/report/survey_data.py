"""A finished survey folder read back for its report: each photo's summary, cracks and overlay."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import CrackscanError
from ..photo.result import CRACKS_FILE, OVERLAY_FILE, SUMMARY_FILE
from ..survey.layout import SUMMARY_CSV, SURVEY_MANIFEST

CLASS_ORDER = ("hairline", "fine", "medium", "wide")


@dataclasses.dataclass
class PhotoFinding:
    number: int  # 1-based, in the findings' order: the card's anchor
    summary: dict[str, Any]
    cracks: list[dict[str, Any]]
    overlay: Path | None

    @property
    def photo(self) -> str:
        return str(self.summary.get("photo", ""))

    @property
    def name(self) -> str:
        return Path(self.photo).name

    @property
    def exif(self) -> dict[str, Any]:
        return self.summary.get("exif") or {}

    @property
    def has_position(self) -> bool:
        return "latitude" in self.exif and "longitude" in self.exif

    @property
    def worst_class(self) -> str:
        return self.summary.get("worst_class") or ""

    @property
    def has_findings(self) -> bool:
        return bool(self.summary.get("cracks")) or (self.summary.get("cracks") is None and
                                                     self.summary.get("verdict") == "crack")

    def severity_key(self) -> tuple:
        """Worst first: by the measured cracks (class, over the limit, widest, length), and
        for a classifier's survey, which measured none, by its cracked share."""
        s = self.summary
        rank = CLASS_ORDER.index(s["worst_class"]) + 1 if s.get("worst_class") in CLASS_ORDER else 0
        return (-rank, -(s.get("cracks_over_limit") or 0), -(s.get("max_width_px") or 0),
                -(s.get("total_length_px") or 0), -(s.get("cracked_area_fraction") or 0), self.photo)


@dataclasses.dataclass
class SurveyData:
    folder: Path
    manifest: dict[str, Any]
    photos: list[PhotoFinding]
    unreadable: list[tuple[str, str]]


def read_survey(folder: str | Path) -> SurveyData:
    """The survey in ``folder`` (what `crackscan scan --out` wrote), worst photo first."""
    folder = Path(folder)
    listing = folder / SUMMARY_CSV
    if not listing.is_file():
        raise CrackscanError(f"{folder} holds no finished survey (no {SUMMARY_CSV}): run crackscan scan MODEL PHOTOS "
                             f"--out {folder} first")
    try:
        manifest = json.loads((folder / SURVEY_MANIFEST).read_text()) if (folder / SURVEY_MANIFEST).is_file() else {}
        with open(listing, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, ValueError) as error:
        raise CrackscanError(f"cannot read the survey in {folder} ({error})") from None
    photos, unreadable = [], []
    for row in rows:
        if row.get("problem"):
            unreadable.append((row["photo"], row["problem"]))
            continue
        outputs = Path(row.get("outputs") or "")
        if not outputs.is_absolute():
            outputs = folder / outputs
        try:
            summary = json.loads((outputs / SUMMARY_FILE).read_text())
        except (OSError, ValueError) as error:
            unreadable.append((row["photo"], f"its result {outputs / SUMMARY_FILE} is unreadable ({error})"))
            continue
        cracks = []
        if (outputs / CRACKS_FILE).is_file():
            with open(outputs / CRACKS_FILE, newline="") as handle:
                cracks = list(csv.DictReader(handle))
        overlay = outputs / OVERLAY_FILE
        photos.append(PhotoFinding(0, summary, cracks, overlay if overlay.is_file() else None))
    photos.sort(key=PhotoFinding.severity_key)
    for number, photo in enumerate(photos, start=1):
        photo.number = number
    return SurveyData(folder, manifest, photos, unreadable)
