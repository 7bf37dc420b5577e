"""Your own site: tile truth from masks, evaluation on photos with masks, labels, adapt."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import crackscan
from crackscan import runs, synth
from crackscan.cli import main
from crackscan.datasets import find_dataset
from crackscan.errors import CrackscanError
from crackscan.evaluate import evaluate_photos
from crackscan.export import export
from crackscan.masks import CLEAR, CRACK, UNSURE, tile_truth
from crackscan.model.heads import any_cell_logit, cell_logits
from crackscan.progress import Progress
from crackscan.runtime.predictor import load_head_on_backbone
from crackscan.serve.app import create_app
from crackscan.site.adapt import adapt
from crackscan.site.fit import dihedral, estimate_crack_share, fit_any_cell, fit_logistic
from crackscan.site.labels import LABELS_FILE, LabelSet, labelled_samples, labels_from_masks, unlabelled_site_tiles

from .conftest import SHARED, write_image
from .helpers import LOCAL, jpeg

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
    assert np.abs(keras_answers - load_head_on_backbone(result.path, int8=False).probabilities(pixels)).max() < 1e-4
    # The int8 backbone is kept only where it passed its check with the new head; scan takes it then.
    int8 = m["int8_backbone"]
    assert set(int8["checks"]) == {"labelled site tiles", "parent's validation and test images"}
    assert (result.path / runs.INT8_BACKBONE_FILE).is_file() == (int8["file"] is not None) == (int8["why_not"] is None)
    fastest = crackscan.load(result.path, fastest=True)
    assert fastest.format == ("int8 litert backbone + head" if int8["file"] else "litert backbone + head")
    if int8["file"]:
        agree = np.mean(fastest.probabilities(pixels).argmax(1) == keras_answers.argmax(1))
        assert agree >= 1 - 2 / len(pixels)  # the check's own allowance on this many tiles
    exported = export(result.path, "litert", out=tmp_path / "adapted.tflite")
    assert np.abs(crackscan.load(exported.path).probabilities(pixels) - keras_answers).max() < 1e-4
    with pytest.raises(CrackscanError, match="--force"):
        adapt(tiny_run.path, labels, tmp_path / "adapted")
    code = main(["adapt", str(result.path), str(labels), "--out", str(tmp_path / "again")])
    assert code == 2 and "itself adapted" in capsys.readouterr().err
    code = main(["adapt", str(tiny_run.path), str(labels), "--out", str(tmp_path / "again"), "--int8-backbone", "no"])
    out, err = capsys.readouterr()
    assert code == 0 and "cross-validated" in out and "parent's test images" in out


def test_adapt_refuses_what_it_cannot_use(tiny_run, tmp_path):
    one_class = tmp_path / "one"
    write_image(one_class / "Positive" / "a.png", np.zeros((30, 30, 3), np.uint8))
    write_image(one_class / "Negative" / "b.txt.png", np.zeros((30, 30, 3), np.uint8))
    (one_class / "Negative" / "b.txt.png").write_bytes(b"not an image")
    with pytest.raises(CrackscanError):
        adapt(tiny_run.path, one_class, tmp_path / "out")
    with pytest.raises(CrackscanError, match="run folder"):
        adapt(tiny_run.path / "model.keras.missing", one_class, tmp_path / "out")
    assert not runs.is_run(tmp_path / "out")


def test_any_cell_fit_finds_the_cell_that_makes_a_tile_a_crack():
    """Multiple-instance learning: a tile is a crack when any of its cells is, and the labels
    never say which cell. Channel 0 marks a crack cell; the fit must find it from tile labels."""
    rng = np.random.default_rng(0)
    cells = rng.uniform(0, 1, (300, 16, 6)).astype(np.float32)
    crack = rng.random(300) < 0.4
    cells[:, :, 0] *= 0.3
    cells[crack, rng.integers(0, 16, int(crack.sum())), 0] = 3.0
    weights, bias = fit_any_cell(cells, crack, np.ones(300), (np.zeros(6), 0.0), l2=1e-3)
    assert np.argmax(np.abs(weights)) == 0 and weights[0] > 0
    said = any_cell_logit(cell_logits(cells, (weights, bias))) >= 0
    assert np.mean(said == crack) > 0.97
    # any_cell_logit is log(sum(exp)), computed without overflow.
    assert np.allclose(any_cell_logit(np.array([[1000.0, 1000.0]])), 1000 + np.log(2))


def test_crack_share_is_estimated_from_unlabelled_tiles():
    """A head fitted at 1/2 sees tiles of which one in five is a crack: EM finds the 20%."""
    rng = np.random.default_rng(1)
    crack = rng.random(4000) < 0.2
    scores = np.where(crack, rng.normal(2.0, 1.5, 4000), rng.normal(-2.0, 1.5, 4000))
    logits = scores * 2 * 2.0 / 1.5**2  # the calibrated log-odds of two such Gaussians at a share of 1/2
    assert abs(estimate_crack_share(logits) - 0.2) < 0.02
    assert estimate_crack_share(np.full(10, -30.0)) == pytest.approx(0.02)  # bounded, not zero


def test_unlabelled_site_tiles_come_from_the_labels_photos(asphalt, tmp_path):
    out = tmp_path / "labels"
    labels_from_masks(asphalt["images"], asphalt["masks"], out, per_class=3, seed=0)
    sample = unlabelled_site_tiles(out, 96, count=20)
    assert sample.pixels.shape == (20, 96, 96, 3) and 1 <= sample.photos <= 6
    # The photos are recorded as absolute paths: the labels work from any folder.
    assert all(Path(label.photo).is_absolute() for label in LabelSet(out).labels.values())
    photos = {label.photo for label in LabelSet(out).labels.values()}
    everything = unlabelled_site_tiles(out, 96, count=1000)
    assert everything.photos == len(photos) and len(everything.pixels) == 9 * len(photos) - 6  # no labelled tile
    assert len(unlabelled_site_tiles(tmp_path / "nowhere", 96, count=20).pixels) == 0


def _inverted_site(tiny_dataset: Path, folder: Path, names: list[str]) -> Path:
    """A site the tiny run has never seen: its patches with brightness inverted (light cracks
    on dark ground), as a class-folder dataset."""
    for name in ("Positive", "Negative"):
        (folder / name).mkdir(parents=True)
        for file in names:
            pixels = np.asarray(Image.open(tiny_dataset / name / file).convert("RGB"))
            Image.fromarray(255 - pixels).save(folder / name / file.replace(".jpg", ".png"))
    return folder


def test_adapt_learns_a_site_the_parent_gets_wrong(tiny_run, tiny_dataset, tmp_path):
    files = sorted(p.name for p in (tiny_dataset / "Positive").glob("000*.jpg"))
    labelled, held_out = files[:12], files[12:24]
    labels = _inverted_site(tiny_dataset, tmp_path / "labels", labelled)
    unseen = _inverted_site(tiny_dataset, tmp_path / "unseen", held_out)
    # int8 is checked on the export below: the run's own int8 backbone is not the point here.
    result = adapt(tiny_run.path, labels, tmp_path / "adapted", int8_backbone=False)

    def accuracy(model) -> float:
        predictor = crackscan.load(model)
        return np.mean([p.label == Path(p.source).parent.name for p in predictor.predict(sorted(unseen.rglob("*.png")))])

    before, after = accuracy(tiny_run.path), accuracy(result.path)
    assert before < 0.95 and 1 - after <= (1 - before) / 2 and after >= 0.9, (before, after)
    # int8 is calibrated on the site's tiles too, and checked on them: the parent's images
    # alone never reach the site head, and a calibration without them lost the site.
    exported = export(result.path, "litert", int8=True, out=tmp_path / "adapted.int8.tflite")
    assert exported.check["passed"] and exported.check["site"]["passed"]
    assert exported.check["site"]["images"] == 24
    assert accuracy(exported.path) >= after - 0.1
    m = result.metrics
    assert m["parent_test"]["accuracy_after"] >= m["parent_test"]["accuracy_before"] - 0.002
    assert m["site_cross_validated"]["after"]["accuracy"] > m["site_cross_validated"]["before"]["accuracy"]
    assert m["site_crack_share"] is None  # a folder of crops names no photos to sample


def test_a_run_without_cached_features_still_adapts(tiny_run, tiny_dataset, tmp_path):
    old = tmp_path / "old-run"
    shutil.copytree(tiny_run.path, old)
    for name in (runs.FEATURES_FILE, runs.BACKBONE_FILE):
        (old / name).unlink(missing_ok=True)
    labels = _inverted_site(tiny_dataset, tmp_path / "labels", sorted(p.name for p in
                                                                      (tiny_dataset / "Positive").glob("000*.jpg"))[:6])
    lines = []
    result = adapt(old, labels, tmp_path / "adapted", progress=Progress(on_step=lines.append), int8_backbone=False)
    assert any("embedding the parent run's images once" in line for line in lines)
    assert runs.load_features(old) is not None and runs.is_run(result.path)
    cached = runs.load_features(old)
    assert np.allclose(cached["features"], runs.load_features(tiny_run.path)["features"], atol=0.05)


def test_a_built_in_model_is_the_parent_of_adapt(asphalt, real_data, tmp_path, monkeypatch):
    """crackscan adapt crackscan-nano ...: the built-in's float model is made once in the cache
    from the ImageNet weights it was built on, and adapts like a run."""
    monkeypatch.setenv("CRACKSCAN_CACHE", str(tmp_path / "cache"))
    labels = tmp_path / "labels"
    labels_from_masks(asphalt["images"], asphalt["masks"], labels, per_class=6, seed=0)
    lines: list[str] = []
    result = adapt("crackscan-nano", labels, tmp_path / "adapted", progress=Progress(on_step=lines.append),
                   int8_backbone=False)
    assert any("making crackscan-nano's float model once" in line for line in lines)
    m = result.metrics
    assert m["parent_test"]["images"] == 1000 and m["parent_test"]["change_points"] >= -0.2
    assert m["site_crack_share"] is not None and runs.is_run(result.path)
    # The float parent is the built-in model: the same labels on real patches as the int8 file.
    parent = Path(m["adapted_from"])
    patches = sorted((real_data / "Positive").glob("*.jpg"))[:16] + sorted((real_data / "Negative").glob("*.jpg"))[:16]
    float_labels = [p.label for p in crackscan.load(parent / "model.keras").predict(patches)]
    int8_labels = [p.label for p in crackscan.load("crackscan-nano").predict(patches)]
    assert float_labels == int8_labels and float_labels.count("Positive") == 16
    lines.clear()
    code = main(["adapt", "crackscan-nano", str(labels), "--out", str(tmp_path / "again"), "--int8-backbone", "no"])
    assert code == 0 and not any("making" in line for line in lines)  # made once, kept in the cache
    assert sorted(p.name for p in (tmp_path / "cache" / "builtin").iterdir()) == [parent.name]


def test_a_parent_check_that_is_a_worst_case_is_reported_not_a_refusal(tmp_path, monkeypatch, capsys):
    """Road photos from crackscan-base: its shipped test images count wrong wherever the site
    head could move them (no pixels ship to check them again), which refused every real site."""
    if PHOTOS is None:
        pytest.skip("needs ../shared/data/real-photos beside the project")
    monkeypatch.setenv("CRACKSCAN_CACHE", str(tmp_path / "cache"))
    images, masks = tmp_path / "images", tmp_path / "masks"
    for folder in (images, masks):
        folder.mkdir()
    for path in sorted((PHOTOS / "road-asphalt" / "images").iterdir())[:12]:
        (images / path.name).symlink_to(path.resolve())
        mask = next((PHOTOS / "road-asphalt" / "masks").glob(f"{path.stem}.*"))
        (masks / mask.name).symlink_to(mask.resolve())
    labels = tmp_path / "labels"
    labels_from_masks(images, masks, labels, per_class=25, seed=0)
    code = main(["adapt", "crackscan-nano", str(labels), "--out", str(tmp_path / "adapted"), "--int8-backbone", "no"])
    out, err = capsys.readouterr()
    assert code == 0 and runs.is_run(tmp_path / "adapted"), err
    parent = json.loads((tmp_path / "adapted" / "metrics.json").read_text())["parent_test"]
    assert parent["bound"] and parent["images"] == 1000
    if parent["change_points"] < 0:
        assert "at least" in out and "worst case" in err


def test_max_parent_drop_bounds_a_measured_loss(tiny_run, tiny_dataset, tmp_path, capsys):
    """Labels that contradict the parent's own data cost it measured accuracy: refused at the
    default bound, accepted when the user allows it."""
    labels = tmp_path / "labels"
    for name, other in (("Positive", "Negative"), ("Negative", "Positive")):
        (labels / other).mkdir(parents=True)
        for path in sorted((tiny_dataset / name).glob("*.jpg"))[:20]:
            shutil.copy(path, labels / other / path.name)
    code = main(["adapt", str(tiny_run.path), str(labels), "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and "--max-parent-drop" in err and not (tmp_path / "a").exists()
    assert main(["adapt", str(tiny_run.path), str(labels), "--out", str(tmp_path / "a"), "--max-parent-drop", "100",
                 "--int8-backbone", "no"]) == 0
    parent = json.loads((tmp_path / "a" / "metrics.json").read_text())["parent_test"]
    assert not parent["bound"] and parent["lost"] > parent["gained"] and parent["max_drop_points"] == 100


def test_adapt_into_its_own_parent_is_refused_before_anything_is_touched(tiny_run, labels_folder, tmp_path):
    parent = tmp_path / "self"
    shutil.copytree(tiny_run.path, parent)
    before = sorted((p.name, p.stat().st_size) for p in parent.iterdir())
    code = main(["adapt", str(parent), str(labels_folder), "--out", str(parent), "--force"])
    assert code == 2
    assert sorted((p.name, p.stat().st_size) for p in parent.iterdir()) == before


def test_an_interrupted_label_leaves_nothing_a_rerun_counts(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    for i in range(3):
        write_image(tmp_path / "images" / f"{i}.png", synth.make_photo(rng, 300, 300, cracks=1))
        mask = np.zeros((300, 300), np.uint8)
        mask[:, 40 + 50 * i] = 255
        write_image(tmp_path / "masks" / f"{i}.png", mask)
    out = tmp_path / "labels"

    def killed(self):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(LabelSet, "save", killed)
        with pytest.raises(KeyboardInterrupt):
            labels_from_masks(tmp_path / "images", tmp_path / "masks", out, per_class=3, tile=100, seed=0)
    assert list(out.rglob("*.png")) and not (out / LABELS_FILE).exists()  # crops written, no labels.csv
    # A crop a kill -9 left half-written, under its temporary name: the re-run clears it.
    leftover = out / "Positive" / ".0-x0-y0-100x100-0123456789.1a2b3c4d.partial.png"
    leftover.write_bytes(b"\x89PNG half")
    os.utime(leftover, (time.time() - 60, time.time() - 60))
    made = labels_from_masks(tmp_path / "images", tmp_path / "masks", out, per_class=2, tile=100, seed=1)
    on_disk = [p for name in ("Positive", "Negative") for p in (out / name).iterdir()]
    assert len(on_disk) == len(made.labels) == 4
    assert len(labelled_samples(out, ("Negative", "Positive"), "Positive")) == 4
    assert not leftover.exists()


@pytest.mark.parametrize("damage", ["huge field", "wrong header", "random bytes"])
def test_a_damaged_labels_csv_is_named(tiny_run, labels_folder, tmp_path, damage, capsys):
    LabelSet(labels_folder).save()
    path = labels_folder / LABELS_FILE
    if damage == "huge field":
        path.write_text(",".join(["file", "photo", "x", "y", "width", "height", "label", "source", "made"]) + "\n"
                        + '"' + "a" * 200_000 + '",p,0,0,1,1,Positive,s,m\n')
    elif damage == "wrong header":
        path.write_text("name,where\nPositive/a.png,p\n")
    else:
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    code = main(["adapt", str(tiny_run.path), str(labels_folder), "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and "damaged" in err and "Traceback" not in err
    with TestClient(create_app(tiny_run.path, labels=labels_folder), base_url=LOCAL,
                    raise_server_exceptions=False) as site:
        assert site.post("/v1/adapt").status_code == 422
        upload = {"file": ("w.jpg", jpeg(np.full((200, 200, 3), 99, np.uint8)), "image/jpeg")}
        good = '[{"x": 0, "y": 0, "width": 96, "height": 96, "label": "Positive"}]'
        assert site.post("/v1/labels", files=upload, data={"labels": good}).status_code == 422


@pytest.mark.parametrize("damage", ["truncated", "100 columns", "50 rows"])
def test_damaged_features_are_named(tiny_run, labels_folder, tmp_path, damage):
    parent = tmp_path / "parent"
    shutil.copytree(tiny_run.path, parent)
    features = parent / runs.FEATURES_FILE
    cached = runs.load_features(parent)
    if damage == "truncated":
        features.write_bytes(features.read_bytes()[:300])
    else:
        rows = 50 if damage == "50 rows" else len(cached["features"])
        width = 100 if damage == "100 columns" else cached["features"].shape[1]
        with open(features, "wb") as handle:
            np.savez(handle, features=np.zeros((rows, width), np.float16), labels=cached["labels"][:rows],
                     splits=cached["splits"][:rows])
    with pytest.raises(CrackscanError, match=f"{runs.FEATURES_FILE}.*(damaged|features an image)"):
        adapt(parent, labels_folder, tmp_path / "adapted")


def test_a_damaged_split_is_named_not_taken_for_the_labels_fault(tiny_run, labels_folder, tmp_path):
    parent = tmp_path / "parent"
    shutil.copytree(tiny_run.path, parent)
    (parent / runs.FEATURES_FILE).unlink()  # so the split is read to embed the parent again
    split = parent / runs.SPLIT_FILE
    split.write_text(split.read_text()[: len(split.read_text()) // 2])
    with pytest.raises(CrackscanError, match="split.csv") as refused:
        adapt(parent, labels_folder, tmp_path / "adapted")
    assert "would cost" not in str(refused.value)
