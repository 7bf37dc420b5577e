"""Crack measurement: geometry from masks of known cracks, scale, classes, and the scan's files."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import ezdxf
import geojson
import numpy as np
import pytest
from PIL import Image

from crackscan.errors import CrackscanError
from crackscan.measure.cracks import measure
from crackscan.measure.scale import photo_scale
from crackscan.measure.severity import AT_LIMIT, DEFAULT_CLASSES, grade, parse_limit, parse_width_classes
from crackscan.photo.result import CRACKS_FILE
from crackscan.synth import crack_of_known_geometry, photo_of_known_crack


def straight(width: float, angle_deg: float, length: float = 240, size: int = 400) -> np.ndarray:
    a = math.radians(angle_deg)
    half = np.array([math.cos(a), -math.sin(a)]) * length / 2
    return crack_of_known_geometry((size, size), np.array([size / 2 - half, size / 2 + half]), width)


@pytest.mark.parametrize("width", [3, 5, 8, 12, 20])
def test_straight_cracks_at_every_angle_measure_true(width: float) -> None:
    for angle in range(0, 180, 15):
        [crack] = measure(straight(width, angle))
        assert abs(crack.length_px - 240) <= 0.03 * 240, (angle, crack.length_px)
        assert abs(crack.mean_width_px - width) <= max(0.5, 0.1 * width), (angle, crack.mean_width_px)
        assert abs(crack.max_width_px - width) <= max(0.5, 0.1 * width) + 0.5, (angle, crack.max_width_px)
        assert not crack.at_resolution_limit
        off = min(abs(crack.orientation_deg - angle), 180 - abs(crack.orientation_deg - angle))
        assert off < 2


def test_a_curved_crack_is_measured_along_its_arc() -> None:
    theta = np.linspace(0.2, 2.6, 200)
    radius = 150
    arc = np.stack([200 + radius * np.cos(theta), 220 - radius * np.sin(theta)], axis=1)
    [crack] = measure(crack_of_known_geometry((400, 400), arc, 6))
    assert abs(crack.length_px - radius * 2.4) <= 0.03 * radius * 2.4
    assert abs(crack.mean_width_px - 6) <= 0.6


def test_a_branching_crack_is_one_branched_crack_of_all_its_length() -> None:
    mask = np.maximum(crack_of_known_geometry((400, 400), np.array([[50, 200], [350, 200]]), 5),
                      crack_of_known_geometry((400, 400), np.array([[200, 200], [300, 60]]), 5))
    [crack] = measure(mask)
    assert crack.branches == 3 and crack.type == "transverse"  # branching is a count, the type its direction
    expected = 300 + math.hypot(100, 140)
    assert abs(crack.length_px - expected) <= 0.03 * expected


def test_widths_of_one_or_two_pixels_are_at_the_resolution_limit() -> None:
    for width in (1, 1.5, 2):
        for angle in (0, 30, 45):
            [crack] = measure(straight(width, angle))
            assert crack.at_resolution_limit, (width, angle, crack.max_width_px)


def bent_crack_photo(width: float, seed: int, blur: float = 0.7) -> tuple[np.ndarray, np.ndarray, float]:
    """A photo of one bent crack of ``width`` (blur, noise, JPEG q 90), its true coverage and length."""
    rng = np.random.default_rng(seed)
    along = np.linspace(0, 1, 50)
    angle = rng.uniform(0, math.pi)
    direction = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    centreline = 160 + (along[:, None] - 0.5) * 240 * direction + (np.sin(along * math.pi) * 20)[:, None] * normal
    photo, coverage = photo_of_known_crack(rng, (320, 320), centreline, width, blur_sigma=blur)
    return photo, coverage, float(np.sum(np.hypot(*np.diff(centreline, axis=0).T)))


@pytest.mark.parametrize("width", [2, 3, 6, 9])
def test_widths_read_on_the_photo_hold_however_fat_the_mask(width: float) -> None:
    import cv2

    photo, coverage, length = bent_crack_photo(width, seed=width)
    # A segmenter's mask is 1-2 px wider than the crack: on the mask alone the width inherits it.
    fat = cv2.dilate((coverage >= 0.5).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    [on_mask] = measure(fat)
    [on_photo] = measure(fat, photo=photo)
    assert on_mask.mean_width_px > width + 1.2 and on_mask.width_source == "mask"
    assert on_photo.width_source == "photo"
    assert on_photo.mean_width_px == pytest.approx(width, abs=0.5)
    assert on_photo.length_px == pytest.approx(length, rel=0.05)
    assert 0.05 <= on_photo.width_uncertainty_px < 0.5 < on_mask.width_uncertainty_px
    assert not on_photo.at_resolution_limit


def test_a_crack_no_darker_than_its_surface_keeps_the_mask_s_width() -> None:
    photo, coverage, _ = bent_crack_photo(4, seed=1)
    flat = np.full_like(photo, 128)  # the photo shows nothing where the mask says crack
    [crack] = measure(coverage >= 0.5, photo=flat)
    assert crack.width_source == "mask" and crack.mean_width_px == pytest.approx(4, abs=0.6)
    with pytest.raises(ValueError, match="its mask"):
        measure(coverage >= 0.5, photo=photo[:-1])


def test_a_coarse_scale_classes_what_it_resolves_and_no_more() -> None:
    photo, coverage, _ = bent_crack_photo(1.2, seed=3, blur=0.4)
    [thin] = grade(measure(coverage >= 0.3, mm_per_pixel=0.5, photo=photo), limit_mm=0.3)
    # 1.2 px at 0.5 mm/px reads 0.6 mm, past "medium", but the photo does not resolve it.
    assert thin.at_resolution_limit and thin.width_class == AT_LIMIT and thin.width_class != "wide"
    assert thin.over_limit is None  # the limit (0.3 mm) is finer than the photo resolves (0.75 mm)
    row = thin.row()
    assert row["resolution_limit_mm"] == pytest.approx(0.5 * row["resolution_limit_px"], abs=1e-3)
    said = DEFAULT_CLASSES.resolved(0.5, 1.5)
    assert "hairline, fine, medium cannot be told apart" in said and "only wide can be told" in said
    assert "every class can be told" in DEFAULT_CLASSES.resolved(0.05, 1.5)
    wide_photo, wide_coverage, _ = bent_crack_photo(6, seed=4)
    [wide] = grade(measure(wide_coverage >= 0.5, mm_per_pixel=0.5, photo=wide_photo), limit_mm=0.3)
    assert wide.width_class == "wide" and wide.over_limit  # 3 mm: told at any of these scales


def test_map_cracking_closes_cells_and_a_holed_crack_does_not() -> None:
    grid = np.zeros((400, 400), np.float32)
    for at in (60, 200, 340):  # three by three lines: four closed cells of 140 px
        grid = np.maximum(grid, crack_of_known_geometry((400, 400), np.array([[40, at], [360, at]]), 4))
        grid = np.maximum(grid, crack_of_known_geometry((400, 400), np.array([[at, 40], [at, 360]]), 4))
    [network] = measure(grid)
    assert network.type == "map" and network.branches > 4
    holed = straight(12, 20) >= 0.5
    holed[195:199, 180:186] = False  # spalling: small holes in a wide crack's mask
    holed[202:206, 230:236] = False
    [spalled] = measure(holed)
    assert spalled.type == "transverse"


def test_fragments_across_a_small_gap_are_one_crack_and_far_ones_two() -> None:
    near = np.maximum(crack_of_known_geometry((200, 400), np.array([[20, 100], [190, 100]]), 4),
                      crack_of_known_geometry((200, 400), np.array([[193, 100], [380, 100]]), 4))
    assert len(measure(near)) == 1
    far = np.maximum(crack_of_known_geometry((200, 400), np.array([[20, 100], [150, 100]]), 4),
                     crack_of_known_geometry((200, 400), np.array([[200, 100], [380, 100]]), 4))
    assert len(measure(far)) == 2
    assert measure(np.zeros((50, 50), bool)) == []


def test_millimetres_classes_and_limits_follow_the_scale() -> None:
    [crack] = grade(measure(straight(6, 10), mm_per_pixel=0.1), limit_mm=0.3)
    assert crack.row()["max_width_mm"] == pytest.approx(crack.max_width_px * 0.1, abs=1e-3)
    assert crack.width_class == "wide" and crack.over_limit  # 0.6 mm
    [fine] = grade(measure(straight(6, 10), mm_per_pixel=0.04), limit_mm=0.3)
    assert fine.width_class == "fine" and fine.over_limit is False  # 0.24 mm
    [ungraded] = measure(straight(6, 10), mm_per_pixel=0.1)
    assert ungraded.width_class == "" and ungraded.over_limit is None  # measuring does not judge
    [unscaled] = grade(measure(straight(6, 10)))
    assert unscaled.width_class == "unscaled" and unscaled.row()["length_mm"] is None
    assert "ACI 224R" in DEFAULT_CLASSES.source
    own = parse_width_classes("thin:0.2,thick")
    [classed] = grade(measure(straight(6, 10), mm_per_pixel=0.1), own)
    assert classed.width_class == "thick"
    for bad in ("thin:0.2", "a:0.3,b:0.1,c", "a:x,b"):
        with pytest.raises(CrackscanError, match="--width-classes"):
            parse_width_classes(bad)
    assert parse_limit("aci-seawater")[0] == 0.15
    with pytest.raises(CrackscanError, match="--limit-mm"):
        parse_limit("salty")


def test_scale_from_the_distance_and_the_lens_in_exif(tmp_path: Path) -> None:
    photo = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x8769] = {0x920A: 4.0, 0xA405: 24}  # a 4 mm lens, 24 mm in 35 mm terms: a 6 mm sensor width
    Image.new("RGB", (4000, 3000)).save(photo, exif=exif)
    scale = photo_scale(photo, 4000, distance_m=2.0)
    assert scale.mm_per_pixel == pytest.approx(6.0 * 2000 / (4.0 * 4000))  # 0.75 mm a pixel
    assert "35 mm-equivalent" in scale.source and "--distance-m 2" in scale.source
    bare = tmp_path / "bare.png"
    Image.new("RGB", (100, 100)).save(bare)
    assert photo_scale(bare, 100, distance_m=2.0).mm_per_pixel is None
    assert "no focal length" in photo_scale(bare, 100, distance_m=2.0).source
    assert photo_scale(bare, 100).mm_per_pixel is None and photo_scale(bare, 100, mm_per_pixel=0.2).mm_per_pixel == 0.2


def test_a_segmenter_s_scan_writes_measured_cracks(tiny_segmenter: Path, mask_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "survey"
    done = subprocess.run([sys.executable, "-m", "crackscan.cli", "scan", str(tiny_segmenter),
                           str(mask_set / "images" / "001.png"), "--out", str(out), "--mm-per-pixel", "0.1",
                           "--limit-mm", "aci-humid"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    folder = next(p.parent for p in out.rglob(CRACKS_FILE))
    rows = list(csv.DictReader(open(folder / CRACKS_FILE)))
    assert rows and float(rows[0]["length_px"]) > 50
    assert float(rows[0]["max_width_mm"]) == pytest.approx(float(rows[0]["max_width_px"]) * 0.1, abs=2e-3)
    polylines = json.loads((folder / "cracks.json").read_text())
    assert polylines["mm_per_pixel"] == 0.1 and polylines["cracks"][0]["polylines"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["cracks"] == len(rows) and summary["limit_source"].startswith("aci-humid")
    assert "not resolved" in summary["classes_resolved"]
    vectors = geojson.loads((folder / "cracks.geojson").read_text())
    assert vectors.is_valid and len(vectors["features"]) == len(rows)
    first = vectors["features"][0]
    assert first["geometry"]["type"] == "MultiLineString" and first["properties"]["width_source"] in ("photo", "mask")
    xs = [x for line in first["geometry"]["coordinates"] for x, _ in line]
    assert 0 <= min(xs) and max(xs) <= summary["width"]
    drawing = ezdxf.readfile(folder / "cracks.dxf")
    assert drawing.units == ezdxf.units.MM  # a scale was given: the drawing is in mm
    lines = list(drawing.modelspace().query("LWPOLYLINE"))
    assert lines and all(line.dxf.layer.startswith("cracks-") for line in lines)
    assert max(x for line in lines for x, *_ in line.get_points()) <= summary["width"] * 0.1 + 1e-6
    assert not (folder / "cracks-wgs84.geojson").exists()  # no GPS, no heading: left in pixels
    survey = list(csv.DictReader(open(out / "summary.csv")))
    assert survey[0]["cracks"] == str(len(rows)) and survey[0]["worst_class"]
    bad = subprocess.run([sys.executable, "-m", "crackscan.cli", "scan", str(tiny_segmenter), str(mask_set / "images"),
                          "--out", str(tmp_path / "x"), "--width-classes", "thin:0.2"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--width-classes" in bad.stderr and not (tmp_path / "x").exists()


def test_ray_surveys_keep_each_photo_s_cracks_as_parquet(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    from crackscan.survey.parquet import write_cracks_part

    cracks = measure(straight(6, 10), mm_per_pixel=0.1)
    path = write_cracks_part(tmp_path / "cracks.parquet", tmp_path / "wall.jpg", "site/wall.jpg", cracks)
    table = pq.read_table(path).to_pylist()
    assert len(table) == 1 and table[0]["photo"] == "site/wall.jpg"
    assert table[0]["max_width_mm"] == pytest.approx(cracks[0].row()["max_width_mm"])
    empty = write_cracks_part(tmp_path / "cracks.parquet", tmp_path / "clear.jpg", "site/clear.jpg", [])
    assert pq.read_table(empty).num_rows == 0 and "length_px" in pq.read_table(empty).column_names


def test_profile_widths_place_each_edge_between_samples():
    from crackscan.measure.cracks import PROFILE_STEP_PX, crossing_widths

    centred = [0, 0, 0, 0.25, 0.75, 1, 1, 0.75, 0.25, 0, 0]  # over 0.5 from 3.5 to 7.5 samples
    off_centre = [0, 0, 0, 0, 0, 0.2, 0, 0.75, 1, 0.75, 0]  # centre 5 under: the peak at 8 starts the run
    missed = [0.9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.9]
    widths = crossing_widths(np.array([centred, off_centre, missed]), 0.5)
    assert widths[0] == pytest.approx(4 * PROFILE_STEP_PX)
    assert widths[1] == pytest.approx((9 + 0.25 / 0.75 - (7 - 0.25 / 0.75)) * PROFILE_STEP_PX)
    assert widths[2] == PROFILE_STEP_PX


def test_a_nadir_drone_photo_s_cracks_are_placed_on_the_map() -> None:
    from crackscan.exif import xmp_number
    from crackscan.photo.vectors import drawn, georeference, map_geojson

    assert xmp_number('drone-dji:GimbalYawDegree="+90.5" drone-dji:GimbalPitchDegree="-89.9"', "GimbalYawDegree") == 90.5
    assert xmp_number("<drone-dji:GimbalPitchDegree>-89.9<", "GimbalPitchDegree") == -89.9
    exif = {"latitude": 52.0, "longitude": 13.0, "gimbal_yaw_deg": 90.0, "gimbal_pitch_deg": -90.0}
    assert georeference(exif, None) is None  # no scale: nothing to place by
    assert georeference({**exif, "gimbal_pitch_deg": -45.0}, 2.0) is None  # oblique: not placed
    assert georeference({k: v for k, v in exif.items() if k != "gimbal_yaw_deg"}, 2.0) is None
    place = georeference(exif, 2.0)  # 2 mm a pixel, the photo's top facing east
    mask = crack_of_known_geometry((400, 400), np.array([[200, 200], [300, 200]]), 4)
    [crack] = measure(mask, mm_per_pixel=2.0)
    placed = map_geojson(drawn([crack]), "drone.jpg", 400, 400, place)
    assert geojson.loads(json.dumps(placed)).is_valid  # (geojson rounds to 6 decimals: read the numbers as written)
    line = np.array(placed["features"][0]["geometry"]["coordinates"][0])
    # The centreline's 96 px to the photo's right are 0.192 m south when its top faces east:
    # latitude falls, longitude holds.
    south_m = (line[:, 1].max() - line[:, 1].min()) * math.pi / 180 * 6_378_137
    assert south_m == pytest.approx(96 * 0.002, rel=0.02)
    assert np.ptp(line[:, 0]) * math.pi / 180 * 6_378_137 * math.cos(math.radians(52)) < 0.01
    assert line[np.argmax(np.abs(line[:, 1] - 52.0)), 1] < 52.0


def test_a_crack_s_paths_are_chained_into_few_lines_with_every_point_kept() -> None:
    from crackscan.photo.vectors import chained

    paths = [[(0, 0), (1, 0), (2, 0)], [(2, 0), (3, 1)], [(4, 2), (3, 1)], [(2, 0), (2, 1), (2, 2)], [(9, 9), (9, 8)]]
    lines = chained(paths)
    assert len(lines) == 3  # a junction at (2, 0) joins two of its three paths; (9, 9) stands alone
    assert sorted({p for line in lines for p in line}) == sorted({p for path in paths for p in path})
    assert all(abs(a[0] - b[0]) <= 1 and abs(a[1] - b[1]) <= 1 for line in lines for a, b in zip(line, line[1:]))
