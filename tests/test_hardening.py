"""Hostile but ordinary inputs: each test is one failure reported against crackscan.

Damaged files, colliding photo names, resumed surveys, interrupted runs, overwrites and
options that must be refused. Tiny data and MobileNetV2 alpha 0.35 at 96 px.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import crackscan
from crackscan import runs, synth
from crackscan.cli import main
from crackscan.errors import Cancelled, CrackscanError, LimitExceeded

from .conftest import QUICK_TRAIN, write_image


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def damaged_png(path: Path) -> Path:
    """A PNG whose IHDR length byte says 4 instead of 13: Pillow raised ValueError on it."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(buffer, "PNG")
    content = bytearray(buffer.getvalue())
    content[11] = 4
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(content))
    return path


def photo(path: Path, seed: int, width: int = 500, height: int = 300, cracks: int = 1) -> Path:
    return write_image(path, synth.make_photo(np.random.default_rng(seed), width, height, cracks=cracks))


# ---- 1. a one-byte-corrupt image never aborts a command ------------------------------------

def test_predict_skips_a_header_damaged_png_and_predicts_the_rest(capsys, tiny_model, tiny_dataset, tmp_path):
    good = tiny_dataset / "Positive" / "00001.jpg"
    code, out, err = run_cli(capsys, "predict", tiny_model, good, damaged_png(tmp_path / "bad.png"))
    assert code == 1 and "Traceback" not in err
    assert "bad.png: truncated or corrupt image" in err
    assert str(good) in out


def test_scan_skips_a_damaged_photo_and_scans_the_rest(capsys, tiny_model, tmp_path):
    photo(tmp_path / "photos" / "a.jpg", 1)
    damaged_png(tmp_path / "photos" / "b.png")
    code, out, err = run_cli(capsys, "scan", tiny_model, tmp_path / "photos", "--out", tmp_path / "scans")
    assert code == 1 and "b.png" in err and "corrupt" in err
    assert (tmp_path / "scans" / "a.jpg" / "summary.json").is_file()


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


# ---- 2. two photos never share an output folder --------------------------------------------

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


# ---- 3. resume trusts only complete results made the same way ------------------------------

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


# ---- 4. runs and outputs are written atomically ------------------------------------------

@pytest.fixture()
def small_data(tmp_path):
    return synth.make_dataset(tmp_path / "data", per_class=14, seed=2, size=96)


def test_an_interrupted_run_is_no_run_and_a_rerun_replaces_it(small_data, tmp_path, weights, monkeypatch):
    from crackscan import plots

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "prediction_grid", interrupted)
    with pytest.raises(KeyboardInterrupt):
        crackscan.train(small_data, tmp_path / "run", weights=weights, **{**QUICK_TRAIN, "epochs": 1})
    folder = tmp_path / "run"
    assert not runs.is_run(folder)
    assert all(p.stat().st_size > 0 for p in folder.iterdir())  # nothing half-written under a real name
    assert not list(folder.glob(".*partial*"))
    with pytest.raises(CrackscanError, match="unfinished run"):
        crackscan.load(folder)
    monkeypatch.undo()
    run = crackscan.train(small_data, folder, weights=weights, **{**QUICK_TRAIN, "epochs": 1})  # no --force needed
    assert runs.is_run(run.path)


def test_force_clears_the_old_runs_files(small_data, tmp_path, weights):
    first = crackscan.train(small_data, tmp_path / "run", weights=weights, **{**QUICK_TRAIN, "epochs": 1})
    assert (first.path / "prediction_grid.png").is_file()
    (first.path / "model.tflite").write_bytes(b"an export of the old model")
    with pytest.raises(CrackscanError, match="already holds a run"):
        crackscan.train(small_data, first.path, weights=weights, **{**QUICK_TRAIN, "epochs": 1})
    second = crackscan.train(small_data, first.path, weights=weights, force=True,
                             **{**QUICK_TRAIN, "epochs": 1, "split": "80:20:0"})
    assert not (second.path / "prediction_grid.png").exists()  # no test split: no grid, and no stale one
    assert not (second.path / "model.tflite").exists()


def test_a_truncated_split_is_refused_not_measured(capsys, tiny_run, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    split = (run / "split.csv").read_text().splitlines()
    (run / "split.csv").write_text("\n".join(split[:7]) + "\n")
    code, _, err = run_cli(capsys, "evaluate", run, tiny_dataset, "--split", "test")
    assert code == 2 and "split.csv" in err and "damaged" in err


# ---- 5. nothing a user made is overwritten without --force ---------------------------------

def test_export_refuses_to_replace_a_file_without_force(capsys, tiny_run, tmp_path):
    target = tmp_path / "mine.tflite"
    target.write_bytes(b"the user's own model")
    code, _, err = run_cli(capsys, "export", tiny_run.path, "--format", "litert", "--out", target)
    assert code == 2 and "already exists" in err and "--force" in err
    assert target.read_bytes() == b"the user's own model"


def test_evaluate_into_a_run_folder_writes_beside_its_files(capsys, tiny_run, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    metrics_before = (run / "metrics.json").read_bytes()
    code, _, err = run_cli(capsys, "evaluate", run, tiny_dataset, "--split", "test", "--out", run)
    assert code == 0, err
    assert (run / "metrics.json").read_bytes() == metrics_before
    written = run / "evaluations" / f"{tiny_dataset.name}-test" / "metrics.json"
    assert json.loads(written.read_text())["split"] == "test"
    code, _, err = run_cli(capsys, "evaluate", run, tiny_dataset, "--split", "test", "--out", run)
    assert code == 2 and "already exists" in err
    assert run_cli(capsys, "evaluate", run, tiny_dataset, "--split", "test", "--out", run, "--force")[0] == 0


# ---- 7. options that must be refused -------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["train", "{data}", "--split", "70:40:6"], "add up to 100"),
    (["train", "{data}", "--split", "nan:24:6"], "split"),
    (["train", "{data}", "--config", "{list_config}"], "JSON object"),
    (["train", "{data}", "--config", "{split5_config}"], "split"),
    (["train", "{data}", "--config", "{text_dropout}"], "dropout must be a number"),
    (["predict", "{run}", "{image}", "--batch-size", "0"], "batch_size must be a whole number in [1, 4,096]"),
    (["scan", "{run}", "{image}", "--out", "{a_file}"], "is a file"),
    (["scan", "{run}", "{image}", "--out", "{tmp}/s", "--tile", "0"], "tile must be"),
    (["scan", "{run}", "{image}", "--out", "{tmp}/s", "--stride", "0"], "stride must be"),
    (["scan", "{run}", "{image}", "--out", "{tmp}/s", "--threshold", "1"], "threshold must be"),
    (["serve", "{run}", "--port", "99999"], "port must be"),
    (["serve", "{run}", "--max-pixels", "-1"], "max_pixels must be"),
    (["serve", "{run}", "--max-upload-mb", "0"], "max_upload_mb must be"),
    (["export", "{run}", "--format", "litert", "--check-images", "0"], "check_images must be"),
])
def test_bad_options_are_one_line_errors(capsys, tmp_path, tiny_run, tiny_dataset, args, message):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "split5.json").write_text('{"split": 5}')
    (tmp_path / "text_dropout.json").write_text('{"dropout": "high"}')
    (tmp_path / "a_file").write_text("x")
    values = dict(data=tiny_dataset, run=tiny_run.path, image=tiny_dataset / "Positive" / "00001.jpg",
                  list_config=tmp_path / "list.json", split5_config=tmp_path / "split5.json",
                  text_dropout=tmp_path / "text_dropout.json", a_file=tmp_path / "a_file", tmp=tmp_path)
    code, out, err = run_cli(capsys, *[a.format(**values) for a in args])
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_model_whose_metadata_lists_one_class_is_refused(tiny_run, tmp_path):
    from crackscan.model.info import ModelInfo

    for bad in ({"class_names": ["Positive"], "positive_class": "Positive"},
                {"input_size": 0}, {"patch_size": -3}, {"class_names": ["A", "A"], "positive_class": "A"}):
        values = {"class_names": ["Negative", "Positive"], "positive_class": "Positive", "input_size": 96, **bad}
        with pytest.raises(CrackscanError, match="metadata"):
            ModelInfo.from_json(json.dumps({"format": "crackscan-model", **values}), "model")


# ---- scan budgets used by the server --------------------------------------------------------

def test_a_scan_over_its_tile_cap_is_refused_before_any_work(tiny_run):
    predictor = crackscan.load(tiny_run.path)
    pixels = np.zeros((227, 227, 3), np.uint8)
    with pytest.raises(LimitExceeded, match="44,944 tiles, over the limit of 4,096"):
        crackscan.scan(predictor, pixels, tile=16, stride=1, max_tiles=4096)


def test_a_scan_stops_between_batches_when_asked(tiny_run):
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(Cancelled, match="after 128 of"):
        crackscan.scan(crackscan.load(tiny_run.path), np.zeros((800, 800, 3), np.uint8), tile=32, batch_size=64, should_stop=stop)
