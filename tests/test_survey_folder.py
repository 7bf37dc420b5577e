"""The survey folder against odd photos and odd users: EXIF fields that are no numbers, two
scans into one folder, long and reserved names, dark photos, huge non-images (issue 29)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from crackscan import synth
from crackscan.cli import main
from crackscan.exif import photo_facts
from crackscan.images import ImageReadError, exif_number, read_image_file
from crackscan.measure.scale import photo_scale
from crackscan.photo.scan import scan
from crackscan.survey.layout import SurveyFolder

from .conftest import write_image
from .helpers import photo, run_cli


def _photo_with_exif(path: Path, detail: dict, gps: dict | None = None) -> Path:
    rng = np.random.default_rng(1)
    image = Image.fromarray(np.clip(rng.normal(128, 20, (260, 300, 3)), 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "DJI", "FC3170"
    exif[0x8769] = detail
    if gps is not None:
        exif[0x8825] = gps
    image.save(path, exif=exif, quality=90)
    return path


ODD_LENSES = {
    "text": {0x920A: "fifty"},
    "bytes": {0x920A: b"50"},
    "tuple": {0x920A: (50, 1, 2)},
    "35mm tuple": {0x920A: 4.5, 0xA405: (24, 2)},
    "zero over zero": {0x920A: IFDRational(0, 0)},
}


@pytest.mark.parametrize("kind", sorted(ODD_LENSES))
def test_odd_lens_fields_give_pixels_only_not_a_crash(kind, tmp_path):
    photo = _photo_with_exif(tmp_path / "odd.jpg", ODD_LENSES[kind])
    scale = photo_scale(photo, 300, distance_m=1.5)
    assert scale.mm_per_pixel is None or (math.isfinite(scale.mm_per_pixel) and scale.mm_per_pixel > 0)
    assert "none" in scale.source or scale.mm_per_pixel is not None
    facts = photo_facts(photo)
    assert all(not isinstance(v, float) or math.isfinite(v) for v in facts.values())


def test_a_survey_with_odd_exif_scans_every_photo_and_writes_no_nan(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, (kind, detail) in enumerate(sorted(ODD_LENSES.items())):
        _photo_with_exif(photos / f"{index}.jpg", detail,
                         {1: "N", 2: (51, 5000, 1), 3: "W", 4: (0, 7, 1)} if index == 0 else
                         {1: "N", 2: (51, 30, 1), 3: "W", 4: (0, 7, 1), 6: IFDRational(0, 0)})
    done = subprocess.run([sys.executable, "-m", "crackscan.cli", "scan", "crackscan-seg", str(photos), "--out",
                           str(tmp_path / "scans"), "--distance-m", "1.5", "--limit-mm", "0.3", "--report"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "scans" / "summary.csv", newline="")))
    assert len(rows) == len(ODD_LENSES) and not any(r["problem"] for r in rows)
    for row in rows:
        text = (tmp_path / "scans" / row["outputs"] / "summary.json").read_text()
        assert "NaN" not in text and "Infinity" not in text
        exif = json.loads(text).get("exif", {})
        assert "altitude_m" not in exif  # 0/0 is no altitude
    first = json.loads((tmp_path / "scans" / "0.jpg" / "summary.json").read_text())
    assert "latitude" not in first.get("exif", {})  # 5000 minutes is no position
    geojson = tmp_path / "scans" / "report" / "survey.geojson"
    if geojson.exists():
        json.loads(geojson.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the GeoJSON"))


def test_exif_numbers():
    assert exif_number(IFDRational(45, 10)) == 4.5
    assert exif_number(IFDRational(0, 0)) is None
    assert exif_number("fifty") is None and exif_number(b"50") is None and exif_number((50, 1)) is None
    assert exif_number((24,)) == 24.0 and exif_number(float("nan")) is None and exif_number(True) is None


def test_two_scans_into_one_folder_cannot_both_succeed(tmp_path):
    """While one scan writes a survey (here: this process, holding the folder as a scan does),
    a second scan into it is refused in one line and the first one's results stay."""
    from crackscan.runs import locked

    synth.make_mask_set(tmp_path / "set", photos=2, size=256, seed=2)
    out = tmp_path / "scans"
    command = [sys.executable, "-m", "crackscan.cli", "scan", "crackscan-seg", str(tmp_path / "set" / "images"),
               "--out", str(out)]
    with locked(out, what="survey"):
        second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode != 0 and "Traceback" not in second.stderr
    assert "another crackscan is writing a survey into" in second.stderr
    assert not (out / "summary.csv").exists()
    assert subprocess.run(command, capture_output=True, text=True, timeout=600).returncode == 0  # free again


def test_long_names_differing_in_case_and_reserved_folder_names_get_their_own_folders(tmp_path):
    survey = SurveyFolder(tmp_path / "scans")
    stem = "a" * 247
    folders = survey.photo_folders([[f"{stem}.jpg"], [f"{stem.upper()}.jpg"], ["report", "images", "1.jpg"],
                                    ["evaluations", "x.jpg"], ["summary.csv"]])
    assert len({str(f).casefold() for f in folders}) == len(folders)
    assert all(len(part.encode()) <= 255 for f in folders for part in f.relative_to(survey.path).parts)
    assert folders[2].relative_to(survey.path).parts[0] != "report"
    assert folders[3].relative_to(survey.path).parts[0] != "evaluations"
    for folder in folders:  # each can be made on this file system
        folder.mkdir(parents=True)


def test_a_dark_photo_has_no_phantom_cracks_at_its_edges(tmp_path):
    for size in ((2048, 1536), (1024, 768)):
        path = tmp_path / f"black-{size[0]}.png"
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path)
        result = scan("crackscan-seg", path, keep_image=False)
        assert result.cracks == [], [(c.x, c.y, c.width, c.height) for c in result.cracks]
        assert result.summary.verdict == "clear"


def test_a_huge_file_that_is_no_image_is_refused_after_its_first_bytes(tmp_path, monkeypatch):
    import crackscan.images as images

    path = tmp_path / "video.jpg"
    with open(path, "wb") as handle:
        handle.write(b"\x00\x00\x00\x18ftypmp42")
        handle.truncate(300 << 20)  # sparse: 300 MB on paper, nothing on disk
    read = []
    real_fdopen = os.fdopen

    class Counted:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def read(self, size=-1):
            data = self.handle.read(size)
            read.append(len(data))
            return data

    monkeypatch.setattr(images.os, "fdopen", lambda *a, **k: Counted(real_fdopen(*a, **k)))
    with pytest.raises(ImageReadError, match="not an image") as refused:
        read_image_file(path, max_bytes=None)
    assert refused.value.kind == "not_image" and sum(read) <= 64


def test_scan_options_are_checked_once_from_the_settings():
    from crackscan.errors import CrackscanError
    from crackscan.photo.options import ScanOptions

    made = ScanOptions.from_settings({"threshold": 0.4, "mm_per_pixel": 0.2, "width_classes": "thin:0.5,thick",
                                      "limit_mm": "aci-humid"})
    assert made.threshold == 0.4 and made.measuring.mm_per_pixel == 0.2
    assert made.measuring.classes.names == ["thin", "thick"] and made.measuring.limit == "aci-humid"
    for bad in ({"mm_per_pixel": float("nan")}, {"mm_per_pixel": -1.0}, {"distance_m": 0.0}, {"limit_mm": "nan"},
                {"limit_mm": "wet"}, {"width_classes": "a:0.3,b:0.1,c"}, {"threshold": 1.0}):
        with pytest.raises(CrackscanError):
            ScanOptions.from_settings(bad)


def test_the_server_measures_with_the_scale_it_is_given():
    pytest.importorskip("fastapi")
    import io

    from fastapi.testclient import TestClient

    from crackscan.serve.app import create_app

    rng = np.random.default_rng(4)
    photo = synth.make_photo(rng, 320, 320, cracks=1)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "PNG")
    with TestClient(create_app("crackscan-seg"), base_url="http://127.0.0.1") as site:
        answer = site.post("/v1/scan?mm_per_pixel=0.25&limit_mm=0.3&overlay=false",
                           files={"file": ("wall.png", buffer.getvalue(), "image/png")})
        assert answer.status_code == 200, answer.text
        summary = answer.json()["summary"]
        assert summary["mm_per_pixel"] == 0.25 and summary["limit_mm"] == 0.3
        refused = site.post("/v1/scan?mm_per_pixel=-2", files={"file": ("wall.png", buffer.getvalue(), "image/png")})
        assert refused.status_code == 422


def test_one_exif_reader_reads_a_path_and_its_bytes_alike(tmp_path):
    """A photo read from a URI arrives as bytes: its lens scale and facts are the same as from its path."""
    from crackscan.exif import lens_facts

    photo = _photo_with_exif(tmp_path / "lens.jpg", {0x920A: 4.5, 0xA405: 24}, {1: "N", 2: (51, 30, 1), 3: "W",
                                                                            4: (0, 7, 1)})
    assert lens_facts(photo) == lens_facts(photo.read_bytes()) and lens_facts(photo)["focal_length_35mm"] == 24
    assert photo_facts(photo) == photo_facts(photo.read_bytes()) and "latitude" in photo_facts(photo)
    by_path = photo_scale(photo, 300, distance_m=1.5)
    assert by_path.mm_per_pixel and photo_scale(photo.read_bytes(), 300, distance_m=1.5) == by_path


def test_a_survey_opens_each_photo_for_its_exif_once(tmp_path, capsys, monkeypatch):
    """The scale reads the lens and the survey the photo's facts: one reading of the file serves both;
    a photo changed on disk is read again."""
    from crackscan import exif

    reads = []
    real = exif._read_file
    monkeypatch.setattr(exif, "_read_file", lambda source: reads.append(source) or real(source))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        _photo_with_exif(photos / name, {0x920A: 4.5, 0xA405: 24}, {1: "N", 2: (51, 30, 1), 3: "W", 4: (0, 7, 1)})
    code, _, err = run_cli(capsys, "scan", "crackscan-seg", photos, "--out", tmp_path / "scans", "--distance-m", "1.5")
    assert code == 0, err
    summaries = [json.loads(p.read_text()) for p in sorted((tmp_path / "scans").rglob("summary.json"))]
    assert len(summaries) == 2 and all(s["mm_per_pixel"] and "latitude" in s["exif"] for s in summaries)
    assert sorted(Path(r).name for r in reads) == ["a.jpg", "b.jpg"]
    _photo_with_exif(photos / "a.jpg", {0x920A: 9.0, 0xA405: 48})
    assert photo_facts(photos / "a.jpg")["focal_length_mm"] == 9.0 and len(reads) == 3


def test_photos_with_the_same_stem_or_flattened_path_get_their_own_folders(capsys, tiny_model, tmp_path):
    photos = tmp_path / "photos"
    photo(photos / "wall.jpg", 1, cracks=0)
    photo(photos / "wall.png", 2, cracks=3)
    photo(photos / "x" / "y.jpg", 3)
    photo(photos / "x__y.jpg", 4)
    code, out, err = run_cli(capsys, "scan", tiny_model, photos, "--out", tmp_path / "scans")
    assert code == 0, err
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "scans").rglob("summary.json")]
    assert sorted(Path(s["photo"]).relative_to(photos).as_posix() for s in summaries) == [
        "wall.jpg", "wall.png", "x/y.jpg", "x__y.jpg"]
    assert len({s["outputs"] for s in summaries}) == 4
    with open(tmp_path / "scans" / "summary.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 4


def test_the_survey_folder_inside_the_photo_folder_is_not_scanned(capsys, tiny_model, tmp_path):
    photos = tmp_path / "photos"
    photo(photos / "a.jpg", 1)
    for _ in range(2):
        code, out, err = run_cli(capsys, "scan", tiny_model, photos, "--out", photos / "scans")
        assert code == 0, err
    assert [p.parent.name for p in (photos / "scans").rglob("summary.json")] == ["a.jpg"]


@pytest.mark.parametrize("damage, reason", [
    (lambda path: path.write_text('{"tiles": 6, "crack'), "damaged"),
    (lambda path: path.write_text(""), "damaged"),
    (lambda path: path.with_name("overlay.jpg").unlink(), "incomplete"),
])
def test_a_damaged_earlier_result_is_scanned_again(capsys, tiny_model, tmp_path, damage, reason):
    photo(tmp_path / "photos" / "a.jpg", 1)
    args = ("scan", tiny_model, tmp_path / "photos", "--out", tmp_path / "scans")
    assert run_cli(capsys, *args)[0] == 0
    tiles = json.loads((tmp_path / "scans" / "a.jpg" / "summary.json").read_text())["tiles"]
    damage(tmp_path / "scans" / "a.jpg" / "summary.json")
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and "Traceback" not in err
    assert f"scanning {tmp_path / 'photos' / 'a.jpg'} again" in out and reason in out
    assert json.loads((tmp_path / "scans" / "a.jpg" / "summary.json").read_text())["tiles"] == tiles


def test_other_settings_redo_the_photos_and_summary_holds_one_setting(capsys, tiny_model, tmp_path):
    photo(tmp_path / "photos" / "a.jpg", 1)
    photo(tmp_path / "photos" / "b.jpg", 2)
    out_dir = tmp_path / "scans"
    run_cli(capsys, "scan", tiny_model, tmp_path / "photos", "--out", out_dir, "--threshold", "0.5")
    code, out, _ = run_cli(capsys, "scan", tiny_model, tmp_path / "photos", "--out", out_dir, "--threshold", "0.9")
    assert code == 0 and "scanned before with other settings" in out and out.count("threshold 0.5 -> 0.9") == 2
    thresholds = {json.loads(p.read_text())["threshold"] for p in out_dir.rglob("summary.json")}
    assert thresholds == {0.9}
    assert json.loads((out_dir / "survey.json").read_text())["threshold"] == 0.9
    code, out, _ = run_cli(capsys, "scan", tiny_model, tmp_path / "photos" / "b.jpg", "--out", out_dir,
                           "--threshold", "0.9")
    assert "1 photo already scanned" in out  # a part of the survey lands in the same folders


def test_a_survey_whose_folder_vanishes_fails(tiny_model, tmp_path, monkeypatch, capsys):
    from crackscan.survey import local

    photos = tmp_path / "photos"
    for i in range(3):
        write_image(photos / f"p{i}.png", np.full((200, 300, 3), 40 * i, np.uint8))
    out = tmp_path / "scans"
    real = local.scan_job

    def and_then_the_folder_goes(predictor, job, *options, **more):
        outcome = real(predictor, job, *options, **more)
        shutil.rmtree(out, ignore_errors=True)
        return outcome

    monkeypatch.setattr(local, "scan_job", and_then_the_folder_goes)
    code = main(["scan", str(tiny_model), str(photos), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "vanished" in err
    assert not (out / "summary.csv").exists()


def test_a_damaged_survey_manifest_is_named(tiny_model, tmp_path, capsys):
    photos = tmp_path / "photos"
    write_image(photos / "p.png", np.full((200, 300, 3), 90, np.uint8))
    out = tmp_path / "scans"
    assert main(["scan", str(tiny_model), str(photos), "--out", str(out)]) == 0
    (out / "survey.json").write_text('{"format": "crackscan-survey", "root": ')
    capsys.readouterr()
    code = main(["scan", str(tiny_model), str(photos), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "survey.json is damaged" in err and "Traceback" not in err
