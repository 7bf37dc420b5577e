"""Your own site: tile truth from masks, evaluation on photos with masks, labels, adapt."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import crackscan
from crackscan import runs
from crackscan.adapt import adapt, dihedral, fit_logistic
from crackscan.cli import main
from crackscan.data import find_dataset
from crackscan.errors import CrackscanError
from crackscan.evaluate import evaluate_photos
from crackscan.export import export
from crackscan.labels import LabelSet, labels_from_masks
from crackscan.predict import load_head_on_backbone
from crackscan.masks import CLEAR, CRACK, UNSURE, tile_truth

from .conftest import SHARED, write_image

PHOTOS = SHARED / "data" / "real-photos" if SHARED else None


@pytest.fixture(scope="session")
def asphalt(tmp_path_factory) -> dict[str, Path]:
    """Six real asphalt photos with their masks, one photo without a mask, one broken photo."""
    if PHOTOS is None or not (PHOTOS / "asphalt-512").is_dir():
        pytest.skip("needs ../shared/data/real-photos beside the project")
    folder = tmp_path_factory.mktemp("asphalt")
    for name in ("1", "2", "3", "10", "11", "12"):
        (folder / "images").mkdir(exist_ok=True)
        (folder / "images" / f"{name}.jpg").symlink_to((PHOTOS / "asphalt-512" / "images" / f"{name}.jpg").resolve())
    shutil.copy(PHOTOS / "asphalt-512" / "images" / "13.jpg", folder / "images" / "no-mask.jpg")
    (folder / "images" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    masks = folder / "masks"
    masks.mkdir()
    for name in ("1", "2", "3", "10", "11", "12"):
        (masks / f"{name}.png").symlink_to((PHOTOS / "asphalt-512" / "masks" / f"{name}.png").resolve())
    write_image(masks / "broken.png", np.zeros((512, 512), np.uint8))
    return {"images": folder / "images", "masks": masks}


def test_tile_truth_follows_the_half_percent_rule():
    mask = np.zeros((100, 300), bool)
    mask[10:20, 105] = True  # 10 of 10,000 px: 0.1%, unsure
    mask[:, 250] = True  # 100 px: 1%, crack
    truth = tile_truth(mask, [(0, 0, 100, 100), (100, 0, 100, 100), (200, 0, 100, 100)])
    assert truth.tolist() == [CLEAR, UNSURE, CRACK]


def test_evaluate_photos_grades_tiles_against_masks_and_writes_overlays(asphalt, tmp_path):
    predictor = crackscan.load("crackscan-nano")
    result = evaluate_photos(predictor, asphalt["images"], asphalt["masks"], out=tmp_path / "eval")
    m = result.metrics
    assert m["photos"] == 6 and m["tile"] == 227
    assert {Path(p).name for p, _ in result.skipped} == {"no-mask.jpg", "broken.jpg"}
    # The pooled counts are the sums of the per-photo rows, and F1 follows from them.
    for key in ("true_positives", "false_positives", "false_negatives", "true_negatives", "unsure_tiles"):
        assert m[key] == sum(row[key] for row in result.photos)
    tp, fp, fn = m["true_positives"], m["false_positives"], m["false_negatives"]
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["tiles"] + m["unsure_tiles"] == 6 * 9
    assert 0.6 < m["f1"] <= 1.0  # crackscan-nano finds most cracks on these asphalt photos
    assert sorted(p.name for p in (tmp_path / "eval" / "overlays").iterdir()) == [f"{n}.jpg" for n in
                                                                                     ("1", "10", "11", "12", "2", "3")]
    with open(tmp_path / "eval" / "photos.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 6
    with pytest.raises(CrackscanError, match="--force"):
        evaluate_photos(predictor, asphalt["images"], asphalt["masks"], out=tmp_path / "eval")


def test_evaluate_with_masks_from_the_command_line(capsys, asphalt, tmp_path):
    code = main(["evaluate", "crackscan-nano", str(asphalt["images"]), "--masks", str(asphalt["masks"]),
                 "--tile", "128", "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 1 and "no-mask.jpg" in err and "broken.jpg" in err
    assert json.loads(out)["tile"] == 128
    assert main(["evaluate", "crackscan-nano", str(asphalt["images"]), "--tile", "128"]) == 2
    assert "--masks" in capsys.readouterr().err


def test_labels_from_masks_make_a_dataset_with_a_record(asphalt, tmp_path):
    out = tmp_path / "labels"
    made = labels_from_masks(asphalt["images"], asphalt["masks"], out, per_class=4, seed=1)
    assert made.added == {"Positive": 4, "Negative": 4}
    dataset = find_dataset(out)
    assert dataset.class_names == ("Negative", "Positive") and len(dataset.samples) == 8
    with open(out / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and all(r["source"].startswith("mask:") for r in rows)
    for row in rows:  # each crop is its tile, at the photo's pixels
        crop = np.asarray(Image.open(out / row["file"]))
        assert crop.shape[:2] == (int(row["height"]), int(row["width"])) == (227, 227)
    again = labels_from_masks(asphalt["images"], asphalt["masks"], tmp_path / "again", per_class=4, seed=1)
    assert sorted(again.labels.labels) == sorted(made.labels.labels)  # seeded
    with pytest.raises(CrackscanError, match="--force"):
        labels_from_masks(asphalt["images"], asphalt["masks"], out, per_class=4)


def test_a_tile_labelled_again_replaces_its_earlier_label(tmp_path):
    labels = LabelSet(tmp_path)
    crop = np.zeros((20, 20, 3), np.uint8)
    first = labels.add(crop, "wall.jpg", (0, 0, 20, 20), True, "page")
    labels.add(crop, "wall.jpg", (0, 0, 20, 20), False, "page")
    labels.save()
    reread = LabelSet(tmp_path)
    assert len(reread) == 1 and reread.counts() == {"Positive": 0, "Negative": 1}
    assert not (tmp_path / first.file).exists()


def test_dihedral_views_and_logistic_fit():
    image = np.arange(12).reshape(2, 2, 3)
    views = dihedral(image[None])
    assert len(views) == 8 and len({v.tobytes() for v in views}) == 8
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    truth = (x @ np.array([2.0, -1, 0, 0, 0.5]) > 0).astype(float)
    w, b = fit_logistic(x, truth, np.ones(400), (np.zeros(5), 0.0), l2=1e-3)
    assert np.mean(((x @ w + b) >= 0) == truth) > 0.97
    # At the optimum the regularised gradient vanishes.
    p = 1 / (1 + np.exp(-(x @ w + b)))
    assert np.abs(x.T @ (p - truth) / 400 + 1e-3 * w).max() < 1e-3


def test_adapt_makes_a_run_every_command_takes(tiny_run, tiny_dataset, tmp_path, capsys):
    labels = tmp_path / "labels"
    for name in ("Positive", "Negative"):
        (labels / name).mkdir(parents=True)
        for path in sorted((tiny_dataset / name).glob("0000*.jpg"))[:6]:
            shutil.copy(path, labels / name / path.name)
    result = adapt(tiny_run.path, labels, tmp_path / "adapted")
    assert runs.is_run(result.path)
    m = result.metrics
    assert m["site_tiles"] == {"Negative": 6, "Positive": 6}
    assert m["parent_test"]["change_points"] >= -0.2
    assert set(m["site_cross_validated"]) == {"folds", "before", "after"}
    assert (tmp_path / "adapted" / runs.BACKBONE_FILE).is_file()  # converted once, kept
    assert (tiny_run.path / runs.BACKBONE_FILE).is_file()
    assert (result.path / "site_confusion_matrix.png").is_file()
    # model.keras (written without Keras) is the NumPy head on the LiteRT backbone, end to end,
    # and exports like any run's model.
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(labels.rglob("*.jpg"))])
    keras_answers = crackscan.load(result.path).probabilities(pixels)
    assert np.abs(keras_answers - load_head_on_backbone(result.path).probabilities(pixels)).max() < 1e-4
    exported = export(result.path, "litert", out=tmp_path / "adapted.tflite")
    assert np.abs(crackscan.load(exported.path).probabilities(pixels) - keras_answers).max() < 1e-4
    with pytest.raises(CrackscanError, match="--force"):
        adapt(tiny_run.path, labels, tmp_path / "adapted")
    code = main(["adapt", str(result.path), str(labels), "--out", str(tmp_path / "again")])
    assert code == 2 and "itself adapted" in capsys.readouterr().err
    code = main(["adapt", str(tiny_run.path), str(labels), "--out", str(tmp_path / "again")])
    out, err = capsys.readouterr()
    assert code == 0 and "cross-validated" in out and "parent's test images" in out


def test_adapt_refuses_what_it_cannot_use(tiny_run, tmp_path):
    one_class = tmp_path / "one"
    write_image(one_class / "Positive" / "a.png", np.zeros((30, 30, 3), np.uint8))
    write_image(one_class / "Negative" / "b.txt.png", np.zeros((30, 30, 3), np.uint8))
    (one_class / "Negative" / "b.txt.png").write_bytes(b"not an image")
    with pytest.raises(CrackscanError):
        adapt(tiny_run.path, one_class, tmp_path / "out")
    with pytest.raises(CrackscanError, match="built-in model"):
        adapt("crackscan-nano", one_class, tmp_path / "out")
    with pytest.raises(CrackscanError, match="run folder"):
        adapt(tiny_run.path / "model.keras.missing", one_class, tmp_path / "out")
    assert not runs.is_run(tmp_path / "out")
