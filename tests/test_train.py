import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import crackscan
from crackscan import CrackscanError, runs, synth
from crackscan.cli import main
from crackscan.runs import RUN_FILES, Run

from .conftest import QUICK_TRAIN, TINY_SETTINGS
from .helpers import damaged_png


def test_run_folder_holds_every_artifact(tiny_run):
    for name in RUN_FILES:
        assert (tiny_run.path / name).is_file(), name
    for name in ("training_curves.png", "prediction_grid.png", "confusion_matrix.png"):
        assert Image.open(tiny_run.path / name).size[0] > 200
    config = json.loads((tiny_run.path / "config.json").read_text())
    assert config["image_size"] == 96 and config["alpha"] == 0.35
    with open(tiny_run.path / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert len(history) == TINY_SETTINGS["epochs"]
    assert set(history[0]) == {"epoch", "accuracy", "loss", "val_accuracy", "val_loss"}
    for part in ("val", "test"):
        metrics = tiny_run.metrics[part]
        assert {"accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix", "counts"} <= set(metrics)


def test_unreadable_files_are_listed_and_counted_not_dropped(tiny_run):
    with open(tiny_run.path / "skipped.csv") as handle:
        skipped = {row["path"]: row["reason"] for row in csv.DictReader(handle)}
    assert set(skipped) == {"Negative/notes.txt", "Negative/truncated.jpg", "Negative/empty.png"}
    assert "truncated" in skipped["Negative/truncated.jpg"]
    images = tiny_run.metrics["images"]
    assert images["skipped"] == 3 and images["found"] == images["readable"] + 3
    assert images["duplicate_copies"] == 1


def test_identical_files_share_a_split(tiny_run):
    rows = {row["path"]: row for row in runs.split_rows(tiny_run.path)}
    assert rows["Positive/00000.jpg"]["split"] == rows["Positive/copy-of-00000.jpg"]["split"]
    assert rows["Positive/00000.jpg"]["sha256"] == rows["Positive/copy-of-00000.jpg"]["sha256"]
    assert {row["split"] for row in rows.values()} == {"train", "val", "test"}


def test_kept_weights_are_those_of_the_best_validation_epoch(tiny_run):
    best = min(tiny_run.history, key=lambda row: row["val_loss"])
    assert tiny_run.metrics["best_epoch"] == best["epoch"]
    assert tiny_run.metrics["val"]["loss"] == pytest.approx(best["val_loss"], rel=1e-3)


def test_saved_model_reproduces_the_reported_test_metrics(tiny_run, tiny_dataset):
    # The figures come from cached features; the saved end-to-end model must give the same.
    result = crackscan.evaluate(tiny_run.path, tiny_dataset, split="test")
    reported = tiny_run.metrics["test"]
    assert result.metrics["count"] == reported["count"]
    assert result.metrics["accuracy"] == reported["accuracy"]
    assert result.metrics["loss"] == pytest.approx(reported["loss"], abs=1e-4)


def test_evaluating_on_everything_counts_training_images(tiny_run, tiny_dataset):
    result = crackscan.evaluate(tiny_run.path, tiny_dataset)
    assert result.in_training_split == tiny_run.metrics["images"]["split"]["train"]
    assert len(result.skipped) == 3


def test_predictor_takes_paths_pil_images_and_arrays(tiny_run, tiny_dataset):
    predictor = crackscan.load(tiny_run.path)
    path = tiny_dataset / "Positive" / "00003.jpg"
    image = Image.open(path)
    by_path, by_pil, by_array = predictor.predict([path, image, np.asarray(image)])
    assert by_path.crack_probability == pytest.approx(by_pil.crack_probability, abs=1e-6)
    assert by_path.crack_probability == pytest.approx(by_array.crack_probability, abs=1e-6)
    assert by_path.label in ("Positive", "Negative") and 0 <= by_path.crack_probability <= 1
    assert predictor.predict(str(path))[0].source == str(path)
    assert predictor.info.input_size == 96 and predictor.info.patch_size == 96


def test_predicting_a_non_image_raises_a_clear_error(tiny_run, tiny_dataset):
    with pytest.raises(CrackscanError, match="notes.txt: not an image"):
        crackscan.load(tiny_run.path).predict(tiny_dataset / "Negative" / "notes.txt")


def test_run_reopens_from_its_folder(tiny_run):
    reopened = Run.open(tiny_run.path)
    assert reopened.config == tiny_run.config and reopened.metrics["best_epoch"] == tiny_run.metrics["best_epoch"]


def test_an_existing_run_is_not_overwritten_without_force(tiny_run, tiny_dataset):
    with pytest.raises(CrackscanError, match="--force"):
        crackscan.train(tiny_dataset, tiny_run.path, **TINY_SETTINGS)


def test_same_seed_same_split_and_model(tiny_dataset, tmp_path, weights):
    settings = dict(QUICK_TRAIN, epochs=2, weights=weights)
    first = crackscan.train(tiny_dataset, tmp_path / "a", **settings)
    second = crackscan.train(tiny_dataset, tmp_path / "b", **settings)
    assert (first.path / "split.csv").read_text() == (second.path / "split.csv").read_text()
    assert first.metrics["val"]["loss"] == pytest.approx(second.metrics["val"]["loss"], rel=1e-5)


@pytest.mark.slow  # converts the backbone to LiteRT: ~15 s
def test_keras_and_litert_embeddings_train_the_same_model(tiny_dataset, tmp_path, weights):
    settings = dict(TINY_SETTINGS, epochs=2, weights=weights)
    by_keras = crackscan.train(tiny_dataset, tmp_path / "k", embedding_backend="keras", **settings)
    by_litert = crackscan.train(tiny_dataset, tmp_path / "l", embedding_backend="litert", **settings)
    assert by_keras.metrics["embedding_backend"] == "keras" and by_litert.metrics["embedding_backend"] == "litert"
    assert by_keras.metrics["val"]["loss"] == pytest.approx(by_litert.metrics["val"]["loss"], abs=1e-4)


def test_not_a_model_file_is_a_clear_error(tmp_path):
    bogus = tmp_path / "model.keras"
    bogus.write_text("not a zip")
    with pytest.raises(CrackscanError, match="not a Keras model"):
        crackscan.load(bogus)
    with pytest.raises(CrackscanError, match="not found"):
        crackscan.load(tmp_path / "missing.keras")
    with pytest.raises(CrackscanError, match="unknown model format"):
        crackscan.load(tmp_path / "x.txt" if (tmp_path / "x.txt").write_text("x") else None)


def test_missing_weights_file_is_a_clear_error(tiny_dataset, tmp_path):
    with pytest.raises(CrackscanError, match="weights file not found"):
        crackscan.train(tiny_dataset, tmp_path / "r", weights=str(tmp_path / "none.h5"), **TINY_SETTINGS)


def test_evaluating_on_other_classes_is_a_clear_error(tiny_run, tiny_dataset, tmp_path):
    import shutil

    for name in ("wall", "floor"):
        (tmp_path / name).mkdir()
        shutil.copy(tiny_dataset / "Positive" / "00001.jpg", tmp_path / name)
    with pytest.raises(CrackscanError, match=r"the classes in .* \(floor, wall\) are not the model's \(Negative, Positive\)"):
        crackscan.evaluate(tiny_run.path, tmp_path)
    with pytest.raises(CrackscanError, match="are not the model's"):
        crackscan.export(tiny_run.path, "litert", check=tmp_path, out=tmp_path / "m.tflite")


@pytest.mark.slow  # builds and trains twice at full size
def test_backbone_weights_from_a_local_file_match_imagenet(tiny_dataset, tmp_path, offline_keras):
    if offline_keras is None:
        pytest.skip("needs ../shared/keras-home")
    weights_file = next((offline_keras / "models").glob("*_0.35_224_no_top.h5")).resolve()
    settings = dict(QUICK_TRAIN, epochs=1)
    from_file = crackscan.train(tiny_dataset, tmp_path / "file", weights=str(weights_file), **settings)
    from_imagenet = crackscan.train(tiny_dataset, tmp_path / "imagenet", weights="imagenet", **settings)
    assert from_file.metrics["val"]["loss"] == pytest.approx(from_imagenet.metrics["val"]["loss"], rel=1e-5)


def test_head_training_stops_once_validation_loss_stops_improving(tiny_dataset, tmp_path, weights):
    run = crackscan.train(tiny_dataset, tmp_path / "run", weights=weights, image_size=96, alpha=0.35, epochs=300,
                          int8_backbone=False)
    assert run.metrics["stopped_early"] and run.metrics["epochs_run"] < 300
    assert run.metrics["notes"] == []
    assert len(run.history) == run.metrics["epochs_run"]


def test_a_run_that_hits_its_epoch_cap_still_improving_says_so(capsys, tiny_dataset, tmp_path, weights):
    from crackscan.cli import main

    code = main(["train", str(tiny_dataset), "--out", str(tmp_path / "run"), "--image-size", "96", "--alpha", "0.35",
                 "--weights", weights, "--epochs", "2", "--learning-rate", "0.0001", "--int8-backbone", "no"])
    out, err = capsys.readouterr()
    assert code == 0 and "for 2 epochs (the --epochs cap)" in out
    assert "note: validation loss was still falling at the last epoch (2)" in err and "more --epochs" in err


def test_a_run_is_written_with_a_checked_int8_backbone_or_says_why_not(tiny_run, tiny_dataset, tmp_path, weights,
                                                                       monkeypatch, capsys):
    from crackscan.cli import main
    from crackscan.runtime import parity

    int8 = tiny_run.metrics["int8_backbone"]
    assert int8["outputs"] == "pooled features" and int8["checks"]["validation and test images"]["images"] > 0
    assert (tiny_run.path / runs.INT8_BACKBONE_FILE).is_file() == (int8["file"] is not None)
    # An int8 backbone that fails its check is not kept: the run scans on float and says why.
    monkeypatch.setattr(parity, "INT8_MAX_ACCURACY_DROP", -1000.0)
    monkeypatch.setattr(parity, "INT8_MIN_ALLOWANCE", -1000)
    failed = crackscan.train(tiny_dataset, tmp_path / "float-only", weights=weights, **dict(TINY_SETTINGS, epochs=2))
    assert failed.metrics["int8_backbone"]["file"] is None
    assert "labels changed" in failed.metrics["int8_backbone"]["why_not"]
    assert not (failed.path / runs.INT8_BACKBONE_FILE).exists() and (failed.path / runs.BACKBONE_FILE).is_file()
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(next((tiny_dataset / "Positive").glob("*.jpg"))).save(photos / "a.png")
    for run, runtime in ((failed.path, "float LiteRT backbone"), (tiny_run.path, "int8 LiteRT backbone")):
        if runtime.startswith("int8") and int8["file"] is None:
            continue
        assert main(["scan", str(run), str(photos), "--out", str(tmp_path / f"scan-{run.name}")]) == 0
        assert f"using the run's {runtime}" in capsys.readouterr().err


def test_train_reports_progress_when_not_on_a_terminal(tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CRACKSCAN_PROGRESS", raising=False)
    code = main(["train", str(tiny_dataset), "--out", str(tmp_path / "run"), "--weights", "none", "--image-size", "96",
                 "--alpha", "0.35", "--epochs", "2", "--int8-backbone", "no"])
    err = capsys.readouterr().err
    assert code == 0 and "crackscan: reading and embedding:" in err and "crackscan: fitting head:" in err


def test_training_skips_damaged_and_non_utf8_named_files(tmp_path, weights):
    data = synth.make_dataset(tmp_path / "data", per_class=14, seed=1, size=96)
    damaged_png(data / "Negative" / "damaged.png")
    odd_name = os.fsdecode(b"Positive/caf\xe9-\xff.jpg")  # Latin-1 bytes: not UTF-8
    shutil.copy(data / "Positive" / "00001.jpg", data / odd_name)
    run = crackscan.train(data, tmp_path / "run", weights=weights, **{**QUICK_TRAIN, "epochs": 1})
    with open(run.path / "skipped.csv", encoding="utf-8", errors="surrogateescape") as handle:
        skipped = {row["path"]: row["reason"] for row in csv.DictReader(handle)}
    assert "truncated or corrupt" in skipped["Negative/damaged.png"]
    assert odd_name in {row["path"] for row in runs.split_rows(run.path)}
    assert runs.is_run(run.path)


def test_a_second_run_of_the_same_backbone_reuses_its_conversions_and_checks_its_int8_file(tiny_dataset, tmp_path,
                                                                                        weights, monkeypatch):
    """The frozen backbone is converted and quantized once (runtime.backbone_cache): a second
    run converts nothing, and checks the kept int8 file with its own head before it keeps it."""
    from crackscan.runtime import backbone_cache, formats, int8_backbone

    monkeypatch.setenv("CRACKSCAN_CACHE", str(tmp_path / "cache"))
    settings = dict(TINY_SETTINGS, epochs=2, embedding_backend="litert")
    first = crackscan.train(tiny_dataset, tmp_path / "first", weights=weights, **settings)
    kept = {p.name.split(".", 1)[1] for p in (tmp_path / "cache" / backbone_cache.FOLDER).iterdir()}
    assert kept == ({"float.tflite", "int8-pooled.tflite"} if first.metrics["int8_backbone"]["file"] else
                    {"float.tflite"})
    assert first.metrics["int8_backbone"]["made"] == "calibrated on this run's images"

    conversions = []
    real = formats.keras_to_litert
    for module in (formats, int8_backbone):
        monkeypatch.setattr(module, "keras_to_litert", lambda *a, **k: conversions.append(a) or real(*a, **k))
    second = crackscan.train(tiny_dataset, tmp_path / "second", weights=weights, **settings)
    int8 = second.metrics["int8_backbone"]
    if first.metrics["int8_backbone"]["file"] is not None:
        assert conversions == [] and int8["calibration_images"] is None
        assert int8["made"].startswith("kept from an earlier run") and int8["checks"]
        assert (second.path / runs.INT8_BACKBONE_FILE).read_bytes() == (first.path / runs.INT8_BACKBONE_FILE).read_bytes()
    assert (second.path / runs.BACKBONE_FILE).read_bytes() == (first.path / runs.BACKBONE_FILE).read_bytes()
