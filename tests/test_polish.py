"""What a newcomer hit (issue 20's small things): masks with a "don't care" value, a crack /
clear verdict whatever the class names, overlays whose flush tiles do not overlap, a note
when predict is given whole photos, progress lines where no bar can be drawn."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import crackscan
from crackscan import synth
from crackscan.cli import main
from crackscan.evaluate import evaluate_photos
from crackscan.photo.tiling import owned_boxes, tile_grid
from crackscan.progress import LogLines, Progress
from crackscan.masks import CLEAR, CRACK, UNSURE, ignore_value_of, read_mask_parts, tile_truth
from crackscan.errors import CrackscanError

from .conftest import write_image


def _joint_mask(tmp_path):
    mask = np.zeros((100, 300), np.uint8)
    mask[:, 20:60] = 128  # a formwork joint, marked "don't care"
    mask[10:90, 250] = 255  # a crack
    return write_image(tmp_path / "masks" / "wall.png", mask)


def test_ignored_mask_pixels_count_neither_way(tmp_path):
    path = _joint_mask(tmp_path)
    boxes = [(0, 0, 100, 100), (100, 0, 100, 100), (200, 0, 100, 100)]
    crack, ignored = read_mask_parts(path, 300, 100)
    assert tile_truth(crack, boxes, ignored).tolist() == [CRACK, CLEAR, CRACK]  # the joint graded as a crack
    crack, ignored = read_mask_parts(path, 300, 100, ignore_value=128)
    assert tile_truth(crack, boxes, ignored).tolist() == [CLEAR, CLEAR, CRACK]
    everything_ignored = np.ones((100, 300), bool)
    assert tile_truth(np.zeros((100, 300), bool), boxes, everything_ignored).tolist() == [UNSURE] * 3


def test_a_masks_json_names_the_ignored_value_and_an_option_wins(tiny_model, tmp_path, capsys):
    _joint_mask(tmp_path)
    write_image(tmp_path / "images" / "wall.png", synth.make_photo(np.random.default_rng(0), 300, 100))
    assert ignore_value_of(tmp_path / "masks") is None
    (tmp_path / "masks" / "masks.json").write_text(json.dumps({"ignore_value": 128}))
    assert ignore_value_of(tmp_path / "masks") == 128 and ignore_value_of(tmp_path / "masks", 200) == 200
    result = evaluate_photos(tiny_model, tmp_path / "images", tmp_path / "masks", tile=100)
    assert result.metrics["crack_tiles"] == 1 and result.metrics["ignored_mask_value"] == 128
    code = main(["evaluate", str(tiny_model), str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
                 "--tile", "100", "--ignore-value", "300"])
    assert code == 2 and "ignore_value must be" in capsys.readouterr().err
    (tmp_path / "masks" / "masks.json").write_text("{not json")
    with pytest.raises(CrackscanError, match="masks.json is damaged"):
        evaluate_photos(tiny_model, tmp_path / "images", tmp_path / "masks", tile=100)


def test_tiles_and_summaries_say_crack_or_clear(tiny_model, tmp_path):
    photo = synth.make_photo(np.random.default_rng(4), 400, 300, cracks=2)
    result = crackscan.scan(tiny_model, photo, tile=100, threshold=0.5)
    assert {t.verdict for t in result.tiles} <= {"crack", "clear"}
    assert all((t.verdict == "crack") == (t.crack_probability >= 0.5) for t in result.tiles)
    assert result.summary.verdict == ("crack" if result.summary.cracked_tiles else "clear")
    folder = result.write(tmp_path / "out")
    rows = list(csv.DictReader(open(folder / "tiles.csv")))
    assert rows[0].keys() >= {"label", "verdict"} and [r["verdict"] for r in rows] == [t.verdict for t in result.tiles]
    assert json.loads((folder / "summary.json").read_text())["verdict"] == result.summary.verdict


@pytest.mark.parametrize("width, height, tile, stride", [(512, 300, 227, 227), (500, 227, 227, 113),
                                                        (1000, 700, 96, 60), (150, 100, 227, 227)])
def test_drawn_tiles_own_every_pixel_once(width, height, tile, stride):
    _, boxes = tile_grid(width, height, tile, stride)
    owners = np.zeros((height, width), int)
    for x, y, w, h in owned_boxes(boxes):
        owners[y : y + h, x : x + w] += 1
    assert (owners == 1).all()


def test_predict_on_whole_photos_points_to_scan(tiny_model, tmp_path, capsys):
    write_image(tmp_path / "photos" / "wall.jpg", synth.make_photo(np.random.default_rng(1), 1200, 900))
    patch = crackscan.load(tiny_model).info.patch_size
    write_image(tmp_path / "photos" / "patch.jpg", synth.make_patch(np.random.default_rng(1), True, size=patch))
    assert main(["predict", str(tiny_model), str(tmp_path / "photos")]) == 0
    err = capsys.readouterr().err
    assert "1 of these images are photos far larger" in err and "wall.jpg, 1200x900" in err and "crackscan scan" in err


def test_progress_lines_where_no_bar_can_be_drawn(monkeypatch):
    lines = []
    monkeypatch.setattr("crackscan.progress.LOG_EVERY_S", 0.0)
    bar = Progress(on_log=lines.append).bar(total=200, desc="reading and embedding", unit="img")
    assert isinstance(bar, LogLines)
    bar.update(50)
    bar.close()
    assert lines[0].startswith("reading and embedding: 50 of 200 img (25%) in ")
    assert not isinstance(Progress(bars=True, on_log=lines.append).bar(total=1), LogLines)


def test_train_reports_progress_when_not_on_a_terminal(tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CRACKSCAN_PROGRESS", raising=False)
    code = main(["train", str(tiny_dataset), "--out", str(tmp_path / "run"), "--weights", "none", "--image-size", "96",
                 "--alpha", "0.35", "--epochs", "2", "--int8-backbone", "no"])
    err = capsys.readouterr().err
    assert code == 0 and "crackscan: reading and embedding:" in err and "crackscan: fitting head:" in err


def test_a_run_without_exports_scans_on_its_litert_backbone(tiny_run, tmp_path, capsys):
    import shutil

    from crackscan import runs

    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run, ignore=shutil.ignore_patterns(runs.BACKBONE_FILE, runs.INT8_BACKBONE_FILE,
                                                                        "model*.tflite"))
    fast = crackscan.load(run, fastest=True)
    assert fast.format == "litert backbone + head" and (run / runs.BACKBONE_FILE).is_file()  # converted, kept
    photo = synth.make_photo(np.random.default_rng(2), 400, 300, cracks=1)
    keras_result = crackscan.scan(crackscan.load(run), photo)
    fast_result = crackscan.scan(fast, photo)
    assert np.abs(np.array([t.crack_probability for t in keras_result.tiles])
                  - np.array([t.crack_probability for t in fast_result.tiles])).max() < 1e-4
    write_image(tmp_path / "photos" / "p.jpg", photo)
    assert main(["scan", str(run), str(tmp_path / "photos"), "--out", str(tmp_path / "scans")]) == 0
    assert "using the run's float LiteRT backbone and NumPy head" in capsys.readouterr().err
