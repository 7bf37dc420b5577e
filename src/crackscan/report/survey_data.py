"""A finished survey folder read back for its report: each photo's summary, cracks and overlay."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import CrackscanError
from ..measure.cracks import CRACK_NUMBER_FIELDS
from ..measure.options import CrackFigures, finite_number
from ..photo.result import CRACKS_FILE, OVERLAY_FILE, SUMMARY_FILE, VERDICTS, photo_verdict
from ..survey.layout import SUMMARY_CSV, SURVEY_MANIFEST, SurveyFolder

def class_order(photos: list["PhotoFinding"]) -> list[str]:
    """The width classes the survey was measured with, narrowest first, as its summaries name
    them (cracks_by_class): the defaults or the user's own --width-classes."""
    order: list[str] = []
    for photo in photos:
        figures = photo.figures
        for name in figures.cracks_by_class if figures else ():
            if name not in order:
                order.append(name)
    return order


@dataclasses.dataclass
class PhotoFinding:
    number: int  # 1-based, in the findings' order: the card's anchor
    summary: dict[str, Any]
    cracks: list[dict[str, Any]]
    overlay: Path | None
    # The photo's crack figures, typed (read and checked with its summary); None for a
    # classifier's photo, which measured no crack.
    figures: CrackFigures | None = None
    outputs: Path | None = None  # the photo's result folder: its cracks as vectors are there

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
        return photo_verdict(self.summary) == VERDICTS[0]

    def severity_key(self, order: list[str] = ()) -> tuple:
        """Worst first: by the measured cracks (class in ``order``, narrowest first; over the
        limit, widest, length), and for a classifier's survey, which measured none, by its
        cracked share."""
        f = self.figures
        if f is None:
            return (0, 0, 0, 0, -(self.summary.get("cracked_area_fraction") or 0), self.photo)
        rank = order.index(f.worst_class) + 1 if f.worst_class in order else 0
        return (-rank, -(f.cracks_over_limit or 0), -(f.max_width_px or 0), -f.total_length_px,
                -(self.summary.get("cracked_area_fraction") or 0), self.photo)


@dataclasses.dataclass
class SurveyData:
    folder: Path
    manifest: dict[str, Any]
    photos: list[PhotoFinding]
    unreadable: list[tuple[str, str]]


SUMMARY_NUMBERS = ("cracked_area_fraction", "max_crack_probability", "cracked_tiles", "tiles", "width", "height")


def read_survey(folder: str | Path) -> SurveyData:
    """The survey in ``folder`` (what `crackscan scan --out` wrote), worst photo first. Results
    are found below ``folder`` wherever the survey was scanned from or moved to; a photo whose
    result is missing or damaged is listed as unreadable with the reason, and the rest reported."""
    folder = Path(folder)
    listing = folder / SUMMARY_CSV
    if not listing.is_file():
        raise CrackscanError(f"{folder} holds no finished survey (no {SUMMARY_CSV}): run crackscan scan MODEL PHOTOS "
                             f"--out {folder} first")
    try:
        manifest = json.loads((folder / SURVEY_MANIFEST).read_text(errors="surrogateescape")) \
            if (folder / SURVEY_MANIFEST).is_file() else {}
        # summary.csv holds photo names as they are on disk, which need not be UTF-8.
        with open(listing, newline="", errors="surrogateescape") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, ValueError, csv.Error) as error:
        raise CrackscanError(f"cannot read the survey in {folder} ({error})") from None
    if not isinstance(manifest, dict):
        manifest = {}
    survey = SurveyFolder(folder)
    photos, unreadable = [], []
    for row in rows:
        name = readable(row.get("photo") or "?")
        if row.get("problem"):
            unreadable.append((name, row["problem"]))
            continue
        outputs = survey.result_folder(row.get("outputs") or "")
        try:
            summary, figures = _checked_summary(json.loads((outputs / SUMMARY_FILE).read_text(
                errors="surrogateescape")))
        except (OSError, ValueError) as error:
            unreadable.append((name, f"its result {outputs / SUMMARY_FILE} is unreadable ({error})"))
            continue
        try:
            cracks = _checked_cracks(outputs / CRACKS_FILE) if (outputs / CRACKS_FILE).is_file() else []
        except (OSError, ValueError, csv.Error) as error:
            unreadable.append((name, f"its {outputs / CRACKS_FILE} is damaged ({error})"))
            continue
        overlay = outputs / OVERLAY_FILE
        photos.append(PhotoFinding(0, summary, cracks, overlay if overlay.is_file() else None, figures, outputs))
    order = class_order(photos)
    photos.sort(key=lambda photo: photo.severity_key(order))
    for number, photo in enumerate(photos, start=1):
        photo.number = number
    return SurveyData(folder, manifest, photos, unreadable)


def _checked_summary(values: Any) -> tuple[dict[str, Any], CrackFigures | None]:
    """A summary.json as the report reads it: an object with its figures as numbers; its EXIF
    position kept only when it is a position. With its crack figures, typed (CrackFigures.read)."""
    if not isinstance(values, dict):
        raise ValueError(f"not an object but {type(values).__name__}")
    values = dict(values)
    for name in SUMMARY_NUMBERS:
        number = finite_number(values.get(name), name)
        if not isinstance(values.get(name), (int, float)) or isinstance(values.get(name), bool):
            values[name] = None if number is None else int(number) if number.is_integer() else number
    figures = CrackFigures.read(values)  # a classifier's survey measured none
    if figures is not None:  # the templates read them from the summary too: checked, as typed
        values.update(figures.to_dict())
    for name in ("worst_class", "scale_source", "model"):
        if values.get(name) is not None and not isinstance(values[name], str):
            values[name] = str(values[name])
    exif = values.get("exif")
    if not isinstance(exif, dict):
        exif = {}
    exif = dict(exif)
    try:
        latitude = finite_number(exif.get("latitude"), "latitude")
        longitude = finite_number(exif.get("longitude"), "longitude")
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ValueError("out of range")
    except ValueError:  # no position, or one that is none: the photo is reported without it
        exif.pop("latitude", None)
        exif.pop("longitude", None)
    if "altitude_m" in exif and _safe_number(exif["altitude_m"]) is None:
        del exif["altitude_m"]
    values = {**values, "exif": exif}
    values["photo"] = readable(values.get("photo") if isinstance(values.get("photo"), str) else
                               str(values.get("photo", "")))
    return values, figures


def readable(name: str) -> str:
    """A file name as the report shows it: one that is not UTF-8 keeps its odd bytes as \\xNN,
    so the HTML, the PDF and the GeoJSON stay valid text."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _safe_number(value: Any) -> float | None:
    try:
        return finite_number(value, "value")
    except ValueError:
        return None


def _checked_cracks(path: Path) -> list[dict[str, Any]]:
    """cracks.csv's rows, each figure checked to be a number (a text file of another encoding is
    read with its odd bytes replaced, since only its numbers matter here)."""
    with open(path, newline="", errors="replace") as handle:
        rows = list(csv.DictReader(handle))
    for index, row in enumerate(rows, start=1):
        for name in CRACK_NUMBER_FIELDS:
            try:
                finite_number(row.get(name), name, optional=name != "length_px" and name != "max_width_px")
            except ValueError as error:
                raise ValueError(f"crack row {index}: {error}") from None
    return rows
