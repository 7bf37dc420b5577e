"""Crack masks as users draw them: ignore values, masks.json, paths below masks/, transparency."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crackscan import synth
from crackscan.cli import main
from crackscan.errors import CrackscanError
from crackscan.evaluate import evaluate_photos
from crackscan.masks import CLEAR, CRACK, UNSURE, ignore_value_of, read_mask, read_mask_parts, tile_truth
from crackscan.site.labels import labels_from_masks

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


def test_masks_are_matched_by_their_path_below_the_masks_folder(tiny_model, tmp_path):
    rng = np.random.default_rng(5)
    for side in ("north", "south"):
        write_image(tmp_path / "images" / side / "a.png", synth.make_photo(rng, 300, 200, cracks=1))
    mask = np.zeros((200, 300), np.uint8)
    write_image(tmp_path / "masks" / "north" / "a.png", mask)
    mask[:, 150] = 255  # south's crack runs down the middle
    write_image(tmp_path / "masks" / "south" / "a.png", mask)
    result = evaluate_photos(tiny_model, tmp_path / "images", tmp_path / "masks", tile=100, out=tmp_path / "eval")
    by_side = {Path(row["photo"]).parent.name: row for row in result.photos}
    assert by_side["north"]["crack_tiles"] == 0 and by_side["south"]["crack_tiles"] == 2
    assert sorted(p.relative_to(tmp_path / "eval" / "overlays").as_posix()
                  for p in (tmp_path / "eval" / "overlays").rglob("*.jpg")) == ["north/a.jpg", "south/a.jpg"]
    made = labels_from_masks(tmp_path / "images", tmp_path / "masks", tmp_path / "labels", per_class=2, tile=100)
    crack_sources = {label.source for label in made.labels.labels.values() if label.label == "Positive"}
    assert crack_sources == {f"mask:{tmp_path / 'masks' / 'south' / 'a.png'}"}
    # One flat mask for two photos of one name: which photo it belongs to cannot be told.
    flat = tmp_path / "flat"
    write_image(flat / "a.png", mask)
    with pytest.raises(CrackscanError, match="none of the 2 photos"):
        evaluate_photos(tiny_model, tmp_path / "images", flat, tile=100)


def test_a_transparent_mask_background_is_no_crack(tmp_path):
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[..., :3] = 255  # white, but transparent
    rgba[40:60, 50, 3] = 255  # an opaque crack line
    write_image(tmp_path / "mask.png", rgba)
    crack = read_mask(tmp_path / "mask.png", 100, 100)
    assert crack.sum() == 20
    assert tile_truth(crack, [(0, 0, 50, 100), (50, 0, 50, 100)]).tolist()[0] != CRACK
