"""The report of a survey whose files are damaged, oddly named or written over (issue 29): one
line per bad photo and a report of the rest, never a traceback; a report written again leaves
none of the earlier one's files; the figures say what was measured on these photos."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crackscan import synth
from crackscan.report.build import build_report, survey_figures
from crackscan.report.survey_data import read_survey


@pytest.fixture(scope="module")
def clean_survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A survey of 5 synthetic photos scanned with crackscan-seg at 0.2 mm/px."""
    root = tmp_path_factory.mktemp("survey")
    synth.make_mask_set(root / "set", photos=5, size=288, seed=11)
    done = subprocess.run([sys.executable, "-m", "crackscan.cli", "scan", "crackscan-seg", str(root / "set" / "images"),
                           "--out", str(root / "scans"), "--mm-per-pixel", "0.2"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return root / "scans"


def _copy(survey: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(survey, tmp_path / "copy"))


def _first_result(survey: Path) -> Path:
    row = next(csv.DictReader(open(survey / "summary.csv", newline="", errors="surrogateescape")))
    return survey / row["outputs"]


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


DAMAGE = {
    "summary without a figure": lambda f: (f / "summary.json").write_text(json.dumps(
        {k: v for k, v in _summary(f).items() if k != "cracked_area_fraction"})),
    "summary that is a list": lambda f: (f / "summary.json").write_text("[1, 2, 3]"),
    "summary with a NaN": lambda f: (f / "summary.json").write_text(json.dumps({**_summary(f), "max_width_mm": float("nan")})),
    "a length that is no number": lambda f: (f / "cracks.csv").write_text(
        (f / "cracks.csv").read_text().replace("\n", "\n", 1) + "99,abc," + ",".join([""] * 17) + "\n"),
    "cracks.csv not UTF-8": lambda f: (f / "cracks.csv").write_bytes(re.sub(
        rb"(transverse|longitudinal|diagonal|branched|map)", lambda m: b"\xe9" + m.group(1), (f / "cracks.csv").read_bytes(), count=1)),
    "latitude north": lambda f: (f / "summary.json").write_text(json.dumps(
        {**_summary(f), "exif": {"latitude": "north", "longitude": 3.0}})),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_photo_result_is_one_line_and_the_rest_is_reported(clean_survey, tmp_path, damage):
    survey = _copy(clean_survey, tmp_path)
    DAMAGE[damage](_first_result(survey))
    done = subprocess.run([sys.executable, "-m", "crackscan.cli", "report", str(survey), "--force"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    data = read_survey(survey)
    if damage in ("latitude north", "cracks.csv not UTF-8"):  # still a result: its position, or its odd bytes, go
        assert len(data.photos) == 5 and not data.unreadable
        assert not any(p.has_position for p in data.photos)
    else:
        assert len(data.photos) == 4 and len(data.unreadable) == 1, data.unreadable
    page = (survey / "report" / "index.html").read_text()
    assert "NaN" not in page


def test_a_photo_name_that_is_not_utf8_is_reported(clean_survey, tmp_path):
    """summary.csv and summary.json hold a Linux name's odd bytes as they are (surrogate escapes)."""
    survey = _copy(clean_survey, tmp_path)
    result = _first_result(survey)
    values = _summary(result)
    odd = values["photo"].replace(".png", "-caf\udce9.png")
    (result / "summary.json").write_text(json.dumps({**values, "photo": odd}, ensure_ascii=False),
                                         encoding="utf-8", errors="surrogateescape")
    listing = survey / "summary.csv"
    text = listing.read_text().replace(values["photo"] + ",", odd + ",", 1)
    listing.write_text(text, encoding="utf-8", errors="surrogateescape")
    report = build_report(survey, survey / "report", force=True)
    assert report.photos == 5
    assert "caf\\xe9" in report.index.read_text()


def test_a_report_written_again_leaves_none_of_the_old_one_s_files(clean_survey, tmp_path):
    survey = _copy(clean_survey, tmp_path)
    out = survey / "report"
    build_report(survey, out, force=True)
    (out / "cards-007.html").write_text("an earlier, larger report's page")
    (out / "images" / "00999.jpg").write_bytes(b"an earlier report's image")
    (out / "report.pdf").write_bytes(b"%PDF an earlier report")
    (out / "survey.geojson").write_text("{}")
    (out / "notes.txt").write_text("the user's own notes")
    build_report(survey, out, force=True)
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "cards-007.html" not in left and "images/00999.jpg" not in left
    assert "report.pdf" not in left and "survey.geojson" not in left  # no --pdf, no GPS this time
    assert "notes.txt" in left and "cards-001.html" in left


def test_the_report_says_its_model_figure_is_not_of_these_photos_until_one_is_measured(clean_survey, tmp_path):
    survey = _copy(clean_survey, tmp_path)
    figures = survey_figures(read_survey(survey))
    assert figures["site_figures"] == []
    assert "not measured on these photos" in figures["measure_here"]
    assert "held-out" in figures["model_reference"] and "its makers' test photos" in figures["model_reference"]
    images = clean_survey.parent / "set" / "images"
    done = subprocess.run([sys.executable, "-m", "crackscan.cli", "evaluate", "crackscan-seg", str(images), "--masks",
                           str(clean_survey.parent / "set" / "masks"), "--out", str(survey)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (survey / "evaluations" / "images" / "metrics.json").is_file()
    build_report(survey, survey / "report", force=True)
    page = (survey / "report" / "index.html").read_text()
    measured = page.split('id="site-figures">', 1)[1].split("</dd>", 1)[0]
    assert "pixel F1" in measured and "on 5 of these photos" in measured
    assert page.index('id="site-figures"') < page.index('id="model-reference"')  # the survey's own figure first


def test_cards_are_paged_a_few_dozen_a_page(clean_survey, tmp_path):
    from crackscan.report import build

    assert 10 <= build.CARDS_PER_PAGE <= 50


def test_the_report_reads_the_width_classes_it_is_given(tmp_path):
    """Custom --width-classes: every class in the by-class table, ordered narrowest first, and
    the worst photo first by those classes."""
    synth.make_mask_set(tmp_path / "set", photos=4, size=288, seed=13)
    survey = tmp_path / "scans"
    done = subprocess.run([sys.executable, "-m", "crackscan.cli", "scan", "crackscan-seg", str(tmp_path / "set" / "images"),
                           "--out", str(survey), "--mm-per-pixel", "0.2", "--width-classes", "thin:0.5,thick"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    data = read_survey(survey)
    figures = survey_figures(data)
    measured = {c["width_class"] for p in data.photos for c in p.cracks}
    assert measured and measured <= {"thin", "thick"}
    assert set(figures["by_class"]) == measured
    assert list(figures["by_class"]) == [name for name in ("thin", "thick") if name in measured]
    assert sum(c["cracks"] for c in figures["by_class"].values()) == figures["cracks"]
    worst = [p.summary.get("worst_class") for p in data.photos if p.summary.get("worst_class")]
    assert worst == sorted(worst, key=lambda name: ("thin", "thick").index(name), reverse=True)
