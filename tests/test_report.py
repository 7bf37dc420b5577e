"""The inspection report: figures against the survey's files, GeoJSON, PDF, and the page in Chromium."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crackscan.errors import CrackscanError
from crackscan.report.build import build_report

from .test_browser import CHROMIUM, CHROMIUM_ARGS


def _dms(value: float) -> tuple:
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    return degrees, minutes, round(((value - degrees) * 60 - minutes) * 60, 4)


@pytest.fixture(scope="module")
def survey(tiny_segmenter: Path, mask_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A survey of 8 photos, 6 with GPS in their EXIF (the first 3 taken straight down by a
    drone, its gimbal in their XMP), and one unreadable file."""
    photos = tmp_path_factory.mktemp("photos")
    for index, source in enumerate(sorted((mask_set / "images").iterdir())[:8]):
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = "DJI", "FC3170"
        exif[0x8769] = {0x9003: f"2026:11:{10 + index:02d} 10:00:00", 0x920A: 4.5, 0xA405: 24}
        if index < 6:
            exif[0x8825] = {1: "N", 2: _dms(51.5 + 0.0003 * index), 3: "W", 4: _dms(0.12 + 0.0002 * index)}
        xmp = (f'<x:xmpmeta><rdf:Description drone-dji:GimbalYawDegree="+{30 * index}.0" '
               'drone-dji:GimbalPitchDegree="-90.0"/></x:xmpmeta>').encode() if index < 3 else b""
        Image.open(source).convert("RGB").save(photos / f"pier-{index:02d}.jpg", exif=exif, quality=92, xmp=xmp)
    (photos / "broken.jpg").write_bytes(b"not a photo")
    out = tmp_path_factory.mktemp("survey") / "scans"
    done = subprocess.run([sys.executable, "-m", "crackscan.cli", "scan", str(tiny_segmenter), str(photos), "--out",
                           str(out), "--mm-per-pixel", "0.2", "--limit-mm", "aci-humid"], capture_output=True, text=True)
    assert done.returncode == 1 and "1 photo could not be scanned" in done.stderr, done.stderr  # the rest scanned
    return out


@pytest.fixture(scope="module")
def report(survey: Path) -> Path:
    build_report(survey, survey / "report", pdf=shutil.which("true") is not None and _has_weasyprint(), force=True)
    return survey / "report"


def _has_weasyprint() -> bool:
    import importlib.util

    return importlib.util.find_spec("weasyprint") is not None


def _survey_rows(survey: Path) -> list[dict[str, str]]:
    with open(survey / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_geojson_holds_exactly_the_photos_with_gps(report: Path, survey: Path) -> None:
    geojson = pytest.importorskip("geojson")
    collection = geojson.loads((report / "survey.geojson").read_text())
    assert collection.is_valid and collection["type"] == "FeatureCollection"
    names = sorted(Path(f["properties"]["photo"]).name for f in collection["features"])
    assert names == [f"pier-{i:02d}.jpg" for i in range(6)]
    for feature in collection["features"]:
        longitude, latitude = feature["geometry"]["coordinates"]
        assert -0.13 < longitude < -0.11 and 51.49 < latitude < 51.51  # west is negative, x before y
    assert sorted(Path(p).name for p in collection["without_position"]) == ["pier-06.jpg", "pier-07.jpg"]


def test_the_cracks_of_nadir_photos_are_lines_on_the_map(report: Path, survey: Path) -> None:
    geojson = pytest.importorskip("geojson")
    lines = json.loads((report / "survey-cracks.geojson").read_text())
    assert geojson.loads(json.dumps(lines)).is_valid
    placed = {Path(f["properties"]["photo"]).name for f in lines["features"]}
    cracked = {Path(r["photo"]).name for r in _survey_rows(survey) if r.get("cracks") not in ("", "0", None)}
    assert placed == cracked & {"pier-00.jpg", "pier-01.jpg", "pier-02.jpg"} and placed
    for feature in lines["features"]:
        for longitude, latitude in feature["geometry"]["coordinates"][0]:
            assert -0.13 < longitude < -0.11 and 51.49 < latitude < 51.51  # within metres of the photo's GPS
        assert feature["properties"]["length_mm"] == pytest.approx(feature["properties"]["length_px"] * 0.2, abs=0.1)


def test_the_pdf_has_the_summary_first_and_a_page_per_photo_with_findings(report: Path, survey: Path) -> None:
    pypdf = pytest.importorskip("pypdf")
    if not (report / "report.pdf").is_file():
        pytest.skip("WeasyPrint is not installed")
    pages = [page.extract_text() for page in pypdf.PdfReader(report / "report.pdf").pages]
    rows = [r for r in _survey_rows(survey) if not r["problem"]]
    cracks = sum(int(r["cracks"]) for r in rows)
    with_findings = sum(int(r["cracks"]) > 0 for r in rows)
    assert "Summary" in pages[0] and f"{with_findings} of {len(rows)} scanned" in pages[0]
    assert "Cracks measured" in pages[0] and str(cracks) in pages[0]
    assert "page 1 of" in pages[0]
    cards = [text for text in pages[1:] if "Finding" in text and "Camera" in text]
    assert len(cards) == with_findings


def test_the_pdf_s_crack_maps_are_sized_for_the_page(tmp_path: Path) -> None:
    from crackscan.report.build import PRINT_IMAGE_PX, _print_images
    from crackscan.report.survey_data import PhotoFinding

    overlay = tmp_path / "overlay.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 1600, 3), dtype=np.uint8)).save(overlay, quality=90)
    (tmp_path / "print").mkdir()
    [(number, uri)] = _print_images([PhotoFinding(7, {}, [], overlay)], tmp_path / "print").items()
    printed = Path(uri.removeprefix("file://"))
    assert number == 7 and max(Image.open(printed).size) == PRINT_IMAGE_PX
    assert printed.stat().st_size < overlay.stat().st_size / 2


def test_making_a_pdf_leaves_truncated_photos_refused(report: Path, survey: Path, tmp_path: Path) -> None:
    from PIL import ImageFile

    build_report(survey, tmp_path / "again", pdf=_has_weasyprint())
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # WeasyPrint's import sets it; crackscan puts it back


def test_the_report_refuses_a_folder_that_is_no_survey_and_keeps_what_is_there(tmp_path: Path, survey: Path) -> None:
    with pytest.raises(CrackscanError, match="no finished survey"):
        build_report(tmp_path, tmp_path / "report")
    build_report(survey, tmp_path / "mine")
    with pytest.raises(CrackscanError, match="--force"):
        build_report(survey, tmp_path / "mine")


def test_the_report_page_in_chromium(report: Path, survey: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium")
    rows = [r for r in _survey_rows(survey) if not r["problem"]]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto((report / "index.html").as_uri())
            sync_api.expect(page.locator("#photo-count")).to_have_text(str(len(rows) + 1))
            sync_api.expect(page.locator("#crack-count")).to_have_text(str(sum(int(r["cracks"]) for r in rows)))
            sync_api.expect(page.locator("#unreadable")).to_have_text("1")
            over = sum(int(r["cracks_over_limit"] or 0) for r in rows)
            sync_api.expect(page.locator("#over-limit")).to_contain_text(f"{over} in")
            table = page.locator("#findings-table tbody tr")
            sync_api.expect(table).to_have_count(len(rows))
            ranks = {"": 0, "hairline": 1, "fine": 2, "medium": 3, "wide": 4}
            keys = [(ranks[c], int(o), float(w)) for c, o, w in table.evaluate_all(
                "rows => rows.map(r => [r.dataset.class, r.dataset.over, r.dataset.width])")]
            assert keys == sorted(keys, reverse=True)  # worst first: class, then over the limit, then width

            page.get_by_role("button", name="Widest (px)").click()  # numbers sort widest first, then flip
            first = table.evaluate_all("rows => rows.map(r => Number(r.dataset.width))")
            assert first == sorted(first, reverse=True)
            page.get_by_role("button", name="Widest (px)").click()
            assert table.evaluate_all("rows => rows.map(r => Number(r.dataset.width))") == sorted(first)
            page.get_by_role("button", name="Photo").click()
            names = table.evaluate_all("rows => rows.map(r => r.dataset.photo)")
            assert names == sorted(names)

            page.locator("#filter").fill("pier-03")
            sync_api.expect(page.locator("#findings-table tbody tr:visible")).to_have_count(1)
            page.locator("#filter").fill("")
            page.locator("#only-findings").check()
            findings = sum(int(r["cracks"]) > 0 for r in rows)
            sync_api.expect(page.locator("#findings-table tbody tr:visible")).to_have_count(findings)

            sync_api.expect(page.locator("#map circle.mark")).to_have_count(6)
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)

            page.locator("#findings-table tbody tr:visible a").first.click()
            page.wait_for_load_state()
            assert "cards-001.html#photo-" in page.url
            images = page.locator("article.card img")
            assert images.count() == len(rows)
            loaded = images.evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
            assert all(loaded)
        finally:
            browser.close()


def test_a_classifier_survey_reports_tiles_without_measurements(tiny_run, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    from crackscan import synth

    Image.fromarray(synth.make_photo(np.random.default_rng(1), 300, 200)).save(photos / "wall.jpg")
    out = tmp_path / "scans"
    done = subprocess.run([sys.executable, "-m", "crackscan.cli", "scan", str(tiny_run.path), str(photos), "--out",
                           str(out), "--report"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    index = (out / "report" / "index.html").read_text()
    assert "the model measures no cracks" in index and "No photo carries a GPS position" in index
    assert not (out / "report" / "survey.geojson").exists()
    assert json.loads((out / "wall.jpg" / "summary.json").read_text())["exif"] == {}


def test_a_ray_survey_s_positions_are_geoparquet_too(report: Path, tmp_path: Path) -> None:
    import struct

    pq = pytest.importorskip("pyarrow.parquet")
    from crackscan.report.build import write_geoparquet

    collection = json.loads((report / "survey.geojson").read_text())
    table = pq.read_table(write_geoparquet(collection, tmp_path / "survey.geoparquet"))
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    points = [struct.unpack("<BIdd", value) for value in table.column("geometry").to_pylist()]
    assert [p[2:] for p in points] == [tuple(f["geometry"]["coordinates"]) for f in collection["features"]]
    assert table.column("photo").to_pylist() == [f["properties"]["photo"] for f in collection["features"]]
