"""The survey folder: every file name in it, the photos' result folders, the manifest, the
resume identity and summary.csv. One owner, so engines and readers agree on each name."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path, PurePath
from typing import Any, Callable, Sequence

from ..errors import CrackscanError, first_line
from ..files import atomic_open, write_text
from ..measure.options import SUMMARY_COLUMNS
from ..photo.result import RESULT_FILES, SUMMARY_FILE, PhotoSummary
from ..runs import LOCK_FILE
from .parquet import CRACKS_DATASET
from ..version import __version__

SURVEY_MANIFEST = "survey.json"
SUMMARY_CSV = "summary.csv"
REPORT_FOLDER = "report"  # crackscan scan --report, and crackscan report's default --out
# `crackscan evaluate MODEL PHOTOS --masks MASKS --out SURVEY`: figures measured on this survey's
# own photos (a folder each), which its report shows before the model's reference figure.
EVALUATIONS_FOLDER = "evaluations"
TILES_DATASET = "tiles.parquet"  # a folder of Parquet part files, one per photo (Ray engine)
# What a photo's result must have been made with to be kept when a survey resumes.
RESUME_KEYS = ("photo_path", "model_sha256", "tile", "stride", "threshold", "photo_bytes", "photo_mtime_ns",
               "measuring")
# The settings a whole survey is made with: a change means photos are scanned again.
MANIFEST_KEYS = ("model_sha256", "tile", "stride", "threshold")
SUMMARY_CSV_FIELDS = ["photo", "verdict", "cracked_area_fraction", "cracked_tiles", "tiles", "max_crack_probability",
                      *SUMMARY_COLUMNS, "width", "height", "seconds", "outputs", "problem"]


# Names the survey itself uses at its top level; a photo folder of the same name gets a suffix.
RESERVED_NAMES = frozenset({REPORT_FOLDER, EVALUATIONS_FOLDER, TILES_DATASET, CRACKS_DATASET, SUMMARY_CSV,
                            SURVEY_MANIFEST, LOCK_FILE})
NAME_MAX_BYTES = 255  # a file name's limit on Linux, macOS and Windows file systems


def _with_digest(name: str, key: str) -> str:
    """``name`` with a short hash of ``key``, shortened so the result stays a legal file name."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    while name and len(f"{name}-{digest}".encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES:
        name = name[:-1]
    return f"{name}-{digest}"


class SurveyFolder:
    """A survey's output folder."""

    def __init__(self, out: Path):
        self.path = Path(out)

    @property
    def summary_csv(self) -> Path:
        return self.path / SUMMARY_CSV

    @property
    def tiles_dataset(self) -> Path:
        return self.path / TILES_DATASET

    def manifest(self) -> dict[str, Any]:
        """survey.json as an earlier scan wrote it, or {} for a new survey. A damaged one is
        refused: it names the root the photos' folders are named below, which a guess would
        move."""
        path = self.path / SURVEY_MANIFEST
        if not path.exists():
            return {}
        try:
            earlier = json.loads(path.read_text(errors="surrogateescape"))
        except (OSError, ValueError) as error:
            raise CrackscanError(f"{path} is damaged ({first_line(error)}): remove it to scan the survey again, "
                                 "or choose another --out") from None
        if not isinstance(earlier, dict) or earlier.get("format") != "crackscan-survey":
            raise CrackscanError(f"{path} is damaged (not a crackscan survey manifest): remove it to scan the survey "
                                 "again, or choose another --out")
        return earlier

    def write_manifest(self, earlier: dict[str, Any], made_with: dict[str, Any], say: Callable[[str], None]) -> None:
        if earlier and any(earlier.get(k) != made_with[k] for k in MANIFEST_KEYS):
            say(f"{self.path} was scanned before with other settings; photos scanned with those are done again")
        manifest = {"format": "crackscan-survey", "crackscan_version": __version__, **made_with}
        write_text(self.path / SURVEY_MANIFEST, json.dumps(manifest, indent=2) + "\n")

    def photo_folders(self, relative_parts: Sequence[Sequence[str]]) -> list[Path]:
        """One folder per photo, never shared: the photo's path below the survey's root, file
        suffix kept (wall.jpg and wall.png differ), mirrored as folders under the survey. Where
        two would still meet (names differing only in case, on a file system that folds
        case), the later one gets a short hash of its path."""
        folders, taken = [], set()
        for parts in relative_parts:
            parts = list(parts)
            if parts and parts[0].casefold() in RESERVED_NAMES:  # a photo folder named report/ is not the report
                parts[0] = _with_digest(parts[0], "/".join(parts))
            folder = self.path.joinpath(*parts)
            if str(folder).casefold() in taken:
                folder = folder.with_name(_with_digest(folder.name, "/".join(parts)))
            taken.add(str(folder).casefold())
            folders.append(folder)
        return folders

    def is_survey(self) -> bool:
        return (self.path / SURVEY_MANIFEST).is_file()

    def evaluation_folder(self, photos: str | Path) -> Path:
        """Where `crackscan evaluate ... --out SURVEY` writes an evaluation of some of the survey's
        photos: below the survey, beside its results, never over them."""
        return self.path / EVALUATIONS_FOLDER / (Path(photos).resolve().name or "photos")

    def evaluations(self) -> list[tuple[Path, dict[str, Any]]]:
        """The evaluations of this survey's photos (their metrics.json), most photos first; a
        damaged one is passed over, since the report then says no figure was measured here."""
        found = []
        for path in sorted((self.path / EVALUATIONS_FOLDER).glob("*/metrics.json")):
            try:
                metrics = json.loads(path.read_text(errors="replace"))
            except (OSError, ValueError):
                continue
            if isinstance(metrics, dict) and isinstance(metrics.get("photos"), int):
                found.append((path.parent, metrics))
        return sorted(found, key=lambda item: -item[1]["photos"])

    def outputs_name(self, folder: Path) -> str:
        """What summary.json and summary.csv record as a photo's result folder: its path below
        the survey folder, so the survey reads the same whatever the working directory was at
        scan time, and after it is moved or copied."""
        return Path(folder).relative_to(self.path).as_posix()

    def result_folder(self, outputs: str) -> Path:
        """A photo's result folder in this survey, from its recorded ``outputs``: a path below
        the survey folder, or, as crackscan wrote it before 0.2, the folder as given at scan
        time (relative to that working directory, or absolute), found by its longest tail that
        holds a result below this folder. So a moved or copied survey reads its own results,
        never the original's. ``..`` never leads out of the survey."""
        recorded = PurePath(outputs)
        parts = [part for part in recorded.parts[1 if recorded.anchor else 0:] if part not in ("", ".")]
        if ".." in parts:
            parts = parts[len(parts) - parts[::-1].index(".."):]
        for start in range(len(parts)):
            candidate = self.path.joinpath(*parts[start:])
            if (candidate / SUMMARY_FILE).is_file():
                return candidate
        return self.path.joinpath(*parts)

    def completed(self, folder: Path, expected: dict[str, Any]) -> tuple[PhotoSummary | None, str]:
        """The earlier result in a photo's ``folder`` if it is complete and made as
        ``expected`` (RESUME_KEYS); else None and why not ("" when there is none at all)."""
        if not (folder / SUMMARY_FILE).exists():
            return None, ""
        try:
            values = json.loads((folder / SUMMARY_FILE).read_text())
            if not isinstance(values, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as error:
            return None, f"its summary.json is damaged ({error})"
        missing = [name for name in RESULT_FILES if not (folder / name).is_file()]
        if missing:
            return None, f"its result is incomplete (no {', '.join(missing)})"
        changed = [key for key in RESUME_KEYS if values.get(key) != expected.get(key)]
        if changed:
            if "photo_path" in changed:
                return None, f"its folder held the result of another photo ({values.get('photo_path')})"
            if "photo_bytes" in changed or "photo_mtime_ns" in changed:
                return None, "the photo changed since it was scanned"
            return None, "it was scanned with other settings (" + ", ".join(
                f"{key} {values.get(key)!r} -> {expected.get(key)!r}" for key in changed if key != "model_sha256"
            ) + (", another model" if "model_sha256" in changed else "") + ")"
        try:
            kept = PhotoSummary.from_dict(values)
        except (ValueError, TypeError):
            return None, "its summary.json lacks figures"
        kept.outputs = self.outputs_name(folder)  # an older survey's may name its folder as it was then
        return kept, ""

    def write_summary(self, summaries: list[PhotoSummary], failed: Sequence[tuple[str, str]] = ()) -> Path:
        """summary.csv: a row per scanned photo, most cracked first, then a row per photo that
        could not be scanned, with the reason in ``problem``. One row per photo, whatever the
        engine retried."""
        by_photo = {s.photo: s for s in summaries}
        ranked = sorted(by_photo.values(), key=lambda s: (-s.cracked_area_fraction, -s.max_crack_probability, s.photo))
        problems = {photo: reason for photo, reason in failed if photo not in by_photo}
        with atomic_open(self.summary_csv) as handle:
            writer = csv.DictWriter(handle, fieldnames=SUMMARY_CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({**s.to_dict(), "problem": ""} for s in ranked)
            writer.writerows({"photo": photo, "problem": reason} for photo, reason in sorted(problems.items()))
        return self.summary_csv
