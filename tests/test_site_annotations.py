"""Site masks from Label Studio, CVAT and colour mask exports, and strokes snapped onto the
crack they were drawn along."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crackscan.errors import CrackscanError
from crackscan.segment.annotations import (UNLABELLED, Region, _gray, decode_label_studio_rle, exported_sources,
                                           rasterize, read_export, snapped_stroke)

from .helpers import label_studio_rle, level_joint_site, run_cli

DATA = Path(__file__).parent / "data"


def _fixture_mask() -> tuple[dict, np.ndarray]:
    made = json.loads((DATA / "label-studio-brush.json").read_text())
    y, x = np.mgrid[:made["height"], :made["width"]]
    mask = ((np.abs(y - (0.6 * x + 5)) < 1.6) | ((x * 7 + y * 3) % 97 == 0)).astype(np.uint8) * 255
    return made, mask


def test_label_studio_s_brush_code_is_read_as_its_sdk_wrote_it() -> None:
    made, mask = _fixture_mask()  # made by label-studio-sdk's own encoder (the file says which)
    layer = decode_label_studio_rle(made["rle"]).reshape(made["height"], made["width"], 4)
    assert (layer[..., 3] == mask).all()
    assert label_studio_rle(mask) == made["rle"]  # so the tests' exports below are the tool's bytes
    with pytest.raises(CrackscanError, match="ends early"):
        decode_label_studio_rle(made["rle"][:40])


def _dark_line_photo(path: Path) -> np.ndarray:
    """A grey wall with a dark crack 3 px wide along y = 50 and a dark joint along x = 150."""
    photo = np.full((120, 200, 3), 170, np.uint8)
    photo[49:52, 10:190] = 60
    photo[:, 149:153] = 70
    photo = np.clip(photo + np.random.default_rng(0).normal(0, 6, photo.shape), 0, 255).astype(np.uint8)
    Image.fromarray(photo).save(path)
    return photo


def test_a_stroke_drawn_beside_a_crack_is_snapped_onto_it_with_its_width(tmp_path: Path) -> None:
    photo = _dark_line_photo(tmp_path / "wall.png")
    drawn = np.array([[20, 54.0], [100, 46.5], [140, 55]])  # up to 4 px off, as a hand draws
    path, width = snapped_stroke(_gray(photo), drawn)
    assert np.abs(path[:, 1] - 50).max() < 1.0 and 2.0 <= width <= 4.5
    values = rasterize([Region(("crack",), "line", points=drawn)], photo, frozenset({"crack"}))
    column = values[:, 100]
    assert set(np.flatnonzero(column == 255)) >= {49, 50, 51} and set(np.flatnonzero(column == 255)) <= set(range(48, 53))
    assert (column[46:55] != 0).all() and (column[:44] == 0).all() and (column[57:] == 0).all()  # a band left unlabelled
    assert UNLABELLED in column


def _cvat_xml(path: Path, image: str, width: int, height: int, shapes: str) -> Path:
    path.write_text(f"""<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version><meta><task><name>site</name></task></meta>
<image id="0" name="{image}" width="{width}" height="{height}">{shapes}</image>
</annotations>""")
    return path


def test_cvat_masks_polygons_and_polylines_become_the_photo_s_mask(tmp_path: Path) -> None:
    photo = _dark_line_photo(tmp_path / "wall.png")
    # A 4x3 mask box at (10, 100): runs of 0s and 1s in turn, row by row.
    shapes = ('<mask label="crack" source="manual" occluded="0" rle="1, 3, 2, 2, 1, 1, 2" left="10" top="100" '
              'width="4" height="3" z_order="0"></mask>'
              '<polygon label="joint" occluded="0" points="146.0,0.0;156.0,0.0;156.0,119.0;146.0,119.0" z_order="0"/>'
              '<polyline label="Crack" occluded="0" points="20.0,53.0;100.0,47.0;140.0,54.0" z_order="0"/>'
              '<box label="crack" xtl="0" ytl="0" xbr="5" ybr="5" occluded="0"/>')
    tool, [annotation] = read_export(_cvat_xml(tmp_path / "annotations.xml", "site/wall.png", 200, 120, shapes))
    assert tool == "CVAT" and annotation.names == ("site/wall.png", "wall.png")
    values = rasterize(annotation.regions, photo, frozenset({"crack"}))
    box = values[100:103, 10:14] == 255
    assert box.tolist() == [[False, True, True, True], [False, False, True, True], [False, True, False, False]]
    assert (values[:, 146:157] != 255).all()  # the joint is background
    assert (values[49:52, 60] == 255).all() and (values[0:5, 0:5] == 0).all()  # a box teaches no pixel


def _label_studio_export(path: Path, entries: list[tuple[str, np.ndarray, list]]) -> Path:
    tasks = []
    for index, (name, mask, polygons) in enumerate(entries):
        height, width = mask.shape
        result = [{"type": "brushlabels", "original_width": width, "original_height": height, "from_name": "tag",
                   "to_name": "image", "value": {"format": "rle", "rle": label_studio_rle(mask),
                                                  "brushlabels": ["Crack"]}}] if mask.any() else []
        result += [{"type": "polygonlabels", "original_width": width, "original_height": height,
                    "value": {"points": points, "polygonlabels": [label]}} for label, points in polygons]
        tasks.append({"id": index + 1, "data": {"image": f"/data/upload/3/{index:08x}-{name}"},
                      "annotations": [{"id": index + 1, "result": result, "was_cancelled": False,
                                       "updated_at": "2026-11-30T10:00:00Z"}]})
    tasks.append({"id": 99, "data": {"image": "/data/upload/3/0000abcd-never-annotated.png"}, "annotations": []})
    path.write_text(json.dumps(tasks))
    return path


def test_label_studio_brushes_and_polygons_with_photos_named_as_uploaded(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    _dark_line_photo(photos / "wall.png")
    Image.fromarray(np.full((60, 80, 3), 150, np.uint8)).save(photos / "never-annotated.png")
    Image.fromarray(np.full((60, 80, 3), 150, np.uint8)).save(photos / "not-exported.png")
    crack = np.zeros((120, 200), np.uint8)
    crack[49:52, 10:190] = 255
    export = _label_studio_export(tmp_path / "export.json", [
        ("wall.png", crack, [("crack", [[0, 0], [5, 0], [5, 10], [0, 10]]), ("joint", [[70, 0], [80, 0], [80, 100]])])])
    sources, skipped, tool = exported_sources(photos, export, "crack")
    assert tool == "Label Studio" and [item.photo.name for item, _ in sources] == ["wall.png"]
    reasons = dict((Path(name).name, why) for name, why in skipped)
    assert "not annotated" in reasons["never-annotated.png"] and "not in export.json" in reasons["not-exported.png"]
    pixels, cracked, weights = sources[0][1]()
    assert (cracked[49:52, 10:190]).all() and cracked[0:12, 0:10].all()  # the brush, and 5% x 10% of the photo
    assert not cracked[80:, 150:].any() and (weights == 1).all()
    with pytest.raises(CrackscanError, match="labelled 'fissure' .*its labels: Crack, crack, joint.*--crack-label"):
        exported_sources(photos, export, "fissure")


def test_a_colour_mask_export_is_read_by_its_labelmap(tmp_path: Path) -> None:
    photos, export = tmp_path / "photos", tmp_path / "export"
    photos.mkdir()
    (export / "SegmentationClass").mkdir(parents=True)
    _dark_line_photo(photos / "wall.png")
    colours = np.zeros((120, 200, 3), np.uint8)
    colours[49:52, 10:190] = (250, 50, 83)
    colours[:, 149:153] = (61, 61, 245)
    Image.fromarray(colours).save(export / "SegmentationClass" / "wall.png")
    (export / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncrack:250,50,83::\n"
                                         "joint:61,61,245::\n")
    sources, skipped, tool = exported_sources(photos, export / "SegmentationClass", "crack")
    _, cracked, _ = sources[0][1]()
    assert tool == "colour masks" and not skipped
    assert cracked.sum() == 3 * (180 - 4) and not cracked[:, 152].any()  # the joint was painted over the crack


def test_adapt_learns_the_site_from_a_label_studio_export(capsys, tiny_segmenter: Path, tmp_path: Path) -> None:
    """As an inspector would: the joint site's cracks painted with Label Studio's brush, the
    slab joints left unpainted; crackscan adapt reads the export as it comes."""
    site = level_joint_site(tmp_path / "site")
    entries = [(photo.name, np.asarray(Image.open(site / "masks" / photo.name)), [])
               for photo in sorted((site / "images").iterdir())]
    export = _label_studio_export(tmp_path / "project-1-at-2026-12-03.json", entries)
    code, out, err = run_cli(capsys, "adapt", tiny_segmenter, site / "images", "--masks", export, "--crack-label",
                             "crack", "--steps", "84", "--out", tmp_path / "run")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    cv = metrics["site_cross_validated"]
    assert cv["photos"] == 8 and cv["after"]["f1"] > cv["before"]["f1"]
    if cv["before"]["precision"] < 0.9:  # the test segmenter's draw called the joints cracks
        assert cv["after"]["precision"] > cv["before"]["precision"]
    # What it learnt is kept in the run, as masks: the same pixels the brush painted.
    made = sorted((tmp_path / "run" / "site-masks").glob("*.png"))
    assert len(made) == 8
    assert (np.asarray(Image.open(made[0])) > 0).sum() == (entries[0][1] > 0).sum()
    assert "pixel F1 within 2 px" in out
