"""The CLI end to end, in-process on tiny data: output, formats and one-line errors."""

import json
import os
import shutil

import numpy as np
import pytest

import crackscan
from crackscan import synth
from crackscan.cli import main
from crackscan.progress import LogLines, Progress

from .conftest import write_image
from .helpers import damaged_png, run_cli


def test_train_prints_results_and_writes_the_run(capsys, tiny_dataset, tmp_path, weights):
    code, out, err = run_cli(
        capsys, "train", tiny_dataset, "--out", tmp_path / "run", "--image-size", 96, "--alpha", 0.35,
        "--epochs", 2, "--weights", weights, "--split", "60:25:15", "--seed", 3, "--int8-backbone", "no",
    )
    assert code == 0, err
    assert "test:" in out and "accuracy" in out and "3 unreadable files skipped" in out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["split"] == [0.6, 0.25, 0.15]
    assert "Traceback" not in err


def test_predict_formats(capsys, tiny_run, tiny_dataset):
    images = [tiny_dataset / "Positive" / "00001.jpg", tiny_dataset / "Negative" / "00001.jpg"]
    code, out, _ = run_cli(capsys, "predict", tiny_run.path, *images)
    assert code == 0 and out.splitlines()[0].split() == ["label", "crack_p", "path"]
    assert len(out.splitlines()) == 3
    code, out, _ = run_cli(capsys, "predict", tiny_run.path / "model.keras", *images, "--format", "json")
    rows = json.loads(out)
    assert [r["path"] for r in rows] == [str(p) for p in images]
    assert all(0 <= r["crack_probability"] <= 1 for r in rows)
    code, out, _ = run_cli(capsys, "predict", tiny_run.path, f"{tiny_dataset}/Positive/0000*.jpg", "--format", "csv")
    assert out.splitlines()[0] == "path,label,crack_probability" and len(out.splitlines()) == 11


def test_predict_skips_bad_files_reports_them_and_exits_non_zero(capsys, tiny_run, tiny_dataset, tmp_path):
    folder = tmp_path / "survey"
    folder.mkdir()
    shutil.copy(tiny_dataset / "Positive" / "00001.jpg", folder / "a.jpg")
    shutil.copy(tiny_dataset / "Negative" / "truncated.jpg", folder / "b.jpg")
    shutil.copy(tiny_dataset / "Negative" / "00002.jpg", folder / "c.jpg")
    code, out, err = run_cli(capsys, "predict", tiny_run.path, folder, "--format", "csv")
    assert code == 1
    assert [line.split(",")[0] for line in out.splitlines()[1:]] == [str(folder / "a.jpg"), str(folder / "c.jpg")]
    assert f"skipped {folder / 'b.jpg'}: truncated or corrupt image" in err


def test_evaluate_a_run_on_its_test_split(capsys, tiny_run, tiny_dataset, tmp_path):
    code, out, err = run_cli(capsys, "evaluate", tiny_run.path, tiny_dataset, "--split", "test", "--out", tmp_path / "ev")
    assert code == 0
    assert f"{tiny_run.metrics['test']['count']} images" in out and "confusion matrix" in out
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["split"] == "test"
    assert (tmp_path / "ev" / "confusion_matrix.png").is_file()
    code, out, err = run_cli(capsys, "evaluate", tiny_run.path, tiny_dataset)
    assert "training split" in err and "optimistic" in err


@pytest.mark.parametrize("args, message", [
    (["train", "{tmp}/missing"], "dataset folder not found"),
    (["train", "{tmp}/one-class"], "only one class"),
    (["train", "{tmp}/empty"], "no class folders"),
    (["predict", "{tmp}/missing.keras", "x.jpg"], "model not found"),
    (["predict", "{tmp}/fake.keras", "x.jpg"], "not a Keras model"),
    (["predict", "{tmp}/fake.tflite", "x.jpg"], "no crackscan metadata"),
    (["predict", "{tmp}/folder-without-model", "x.jpg"], "not a crackscan run"),
    (["predict", "{run}", "{tmp}/nothing-here.jpg"], "no such file"),
    (["evaluate", "{tmp}/copied.keras", "{data}", "--split", "test"], "needs a run folder"),
    (["train", "{data}", "--epochs", "0"], "epochs must be"),
    (["train", "{data}", "--split", "50:50"], "split must be"),
    (["serve", "{tmp}/missing.keras"], "model not found"),
    (["scan", "{tmp}/fake.keras", "{data}", "--out", "{tmp}/scans"], "not a Keras model"),
    (["export", "{run}", "--format", "onnx", "--out", "{tmp}/m.tflite"], "must end in .onnx"),
])
def test_user_errors_are_one_line_and_exit_2(capsys, tmp_path, tiny_run, tiny_dataset, args, message):
    (tmp_path / "one-class" / "Positive").mkdir(parents=True)
    shutil.copy(tiny_dataset / "Positive" / "00001.jpg", tmp_path / "one-class" / "Positive")
    (tmp_path / "empty").mkdir()
    (tmp_path / "folder-without-model").mkdir()
    (tmp_path / "fake.keras").write_text("hello")
    (tmp_path / "fake.tflite").write_bytes(b"\x00" * 64)
    shutil.copy(tiny_run.model_path, tmp_path / "copied.keras")
    filled = [a.format(tmp=tmp_path, run=tiny_run.path, data=tiny_dataset) for a in args]
    code, out, err = run_cli(capsys, *filled)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crackscan: error: ") and message in lines[0], err


@pytest.mark.slow  # trains the demo's model and scans its survey: the slow tier, beside make demo's own test
def test_demo_makes_data_trains_and_says_where_outputs_are(capsys, tmp_path, weights, monkeypatch):
    # The demo at its real size is measured in the README; here, the smallest honest one.
    code, out, err = run_cli(capsys, "demo", "--out", tmp_path / "demo", "--per-class", 40, "--weights", weights)
    assert code == 0, err
    for name in ("training_curves.png", "prediction_grid.png", "confusion_matrix.png", "metrics.json"):
        assert str(tmp_path / "demo" / "run" / name) in out
        assert (tmp_path / "demo" / "run" / name).is_file()
    report = tmp_path / "demo" / "survey" / "report" / "index.html"
    assert str(report) in out and report.is_file()  # the whole job: photos scanned, measured, reported
    assert "Cracks measured" in report.read_text()
    code, _, err = run_cli(capsys, "demo", "--out", tmp_path / "demo", "--per-class", 40)
    assert code == 2 and "--force" in err


def test_info_shows_what_a_model_and_its_run_carry(capsys, tiny_run):
    code, out, err = run_cli(capsys, "info", tiny_run.path)
    assert code == 0, err
    assert "format: keras" in out and "classes: Negative, Positive" in out and "input_size: 96" in out
    assert "test_accuracy:" in out and "exports: none" in out
    code, out, _ = run_cli(capsys, "info", tiny_run.path / "model.keras", "--format", "json")
    assert json.loads(out)["patch_size"] == 96


def test_scan_and_serve_take_a_runs_fastest_export_and_say_so(capsys, tiny_run, tiny_model, tmp_path):
    import numpy as np
    from PIL import Image

    from crackscan import synth
    from crackscan.model.registry import resolve

    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    assert resolve(run, fastest=True).file == run / "model.keras"
    shutil.copy(tiny_model, run / "model.tflite")  # as `crackscan export RUN --format litert` writes it
    assert resolve(run, fastest=True).file == run / "model.tflite"
    shutil.copy(tiny_model, run / "model.int8.tflite")
    later = (run / "model.int8.tflite").stat().st_mtime + 10
    os.utime(run / "model.keras", (later, later))  # the model is now newer than both exports: they are stale
    assert resolve(run, fastest=True).file == run / "model.keras"
    shutil.copy(tiny_model, run / "model.tflite")
    os.utime(run / "model.tflite", (later + 1, later + 1))
    Image.fromarray(synth.make_photo(np.random.default_rng(1), 300, 200)).save(tmp_path / "p.jpg")
    code, out, err = run_cli(capsys, "scan", run, tmp_path / "p.jpg", "--out", tmp_path / "scans")
    assert code == 0 and "using model.tflite, the run's fastest checked export" in err
    summary = json.loads((tmp_path / "scans" / "p.jpg" / "summary.json").read_text())
    assert summary["model"].endswith("model.tflite")


def test_missing_imagenet_weights_name_the_file_keras_home_and_the_way_out(tmp_path):
    import os
    import subprocess
    import sys

    # A fresh process: Keras reads KERAS_HOME once, when it is imported.
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "empty-home")}
    done = subprocess.run([sys.executable, "-m", "crackscan.cli", "demo", "--out", str(tmp_path / "demo")],
                          env=env, capture_output=True, text=True, timeout=300)
    code, err = done.returncode, done.stderr
    assert code == 2, err
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5" in err
    assert "KERAS_HOME" in err and "--weights none" in err
    assert not (tmp_path / "demo").exists()  # checked before any data was made


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


def test_predict_skips_a_header_damaged_png_and_predicts_the_rest(capsys, tiny_model, tiny_dataset, tmp_path):
    good = tiny_dataset / "Positive" / "00001.jpg"
    code, out, err = run_cli(capsys, "predict", tiny_model, good, damaged_png(tmp_path / "bad.png"))
    assert code == 1 and "Traceback" not in err
    assert "bad.png: truncated or corrupt image" in err
    assert str(good) in out


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
