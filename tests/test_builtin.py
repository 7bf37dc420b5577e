"""The built-in models: by name everywhere, offline, with the figures they were built with."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import crackscan
from crackscan.model.builtin import builtin_models, held_out_test_files
from crackscan.cli import main

NAMES = ("crackscan-base", "crackscan-nano")
ROOT = Path(__file__).resolve().parent.parent


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_both_models_are_listed_with_intact_files():
    listed = builtin_models()
    assert set(NAMES) <= set(listed)
    for model in listed.values():
        content = model.path.read_bytes()
        assert hashlib.sha256(content).hexdigest() == model.sha256
        assert len(content) == model.size_bytes
    # Three models (two classifiers and the segmenter) ship in the wheel: 5.8 MB together.
    assert sum(m.size_bytes for m in listed.values()) < 8e6


def test_the_built_in_segmenter_draws_a_crack_it_never_saw(tmp_path):
    from crackscan import synth
    from crackscan.segment.pixels import PixelScorer

    seg = builtin_models()["crackscan-seg"]
    assert seg.task == "segment" and seg.pixel_test["by_set"]["deepcrack-train"]["photos"] > 0
    root = synth.make_mask_set(tmp_path / "set", photos=4, size=384, seed=3)
    scorer = PixelScorer()
    for stem in ("001", "002", "003"):
        result = crackscan.scan("crackscan-seg", root / "images" / f"{stem}.png")
        scorer.add(result.mask / 255, np.asarray(Image.open(root / "masks" / f"{stem}.png")) > 0)
        assert result.cracks
    assert scorer.result().at_threshold["f1"] >= 0.8
    assert crackscan.scan("crackscan-seg", root / "images" / "000.png").summary.cracked_area_fraction < 0.001


def test_models_load_by_name_offline_and_label_real_patches(real_data, tmp_path):
    """A fresh process whose KERAS_HOME is empty: nothing from Keras or ImageNet is needed."""
    patches = {"Positive": sorted((real_data / "Positive").glob("*.jpg"))[:8],
               "Negative": sorted((real_data / "Negative").glob("*.jpg"))[:8]}
    script = (
        "import json, sys, crackscan\n"
        "patches = json.loads(sys.argv[1])\n"
        "out = {}\n"
        "for name in ('crackscan-base', 'crackscan-nano'):\n"
        "    predictor = crackscan.load(name)\n"
        "    out[name] = {cls: [p.label for p in predictor.predict(files)] for cls, files in patches.items()}\n"
        "out['keras_imported'] = 'keras' in sys.modules or 'tensorflow' in sys.modules\n"
        "print(json.dumps(out))\n"
    )
    empty_home = tmp_path / "empty-keras-home"
    empty_home.mkdir()
    env = {**os.environ, "KERAS_HOME": str(empty_home)}
    done = subprocess.run([sys.executable, "-c", script, json.dumps({k: list(map(str, v)) for k, v in patches.items()})],
                          env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert result.pop("keras_imported") is False
    for name in NAMES:
        for class_name, labels in result[name].items():
            assert labels.count(class_name) >= 7, (name, class_name, labels)
    assert list(empty_home.iterdir()) == []


def test_builtin_carries_its_metadata_and_scan_uses_its_patch_scale(tmp_path):
    predictor = crackscan.load("crackscan-nano")
    assert predictor.info.input_size == builtin_models()["crackscan-nano"].input_size == 96
    assert predictor.info.positive_class == "Positive"
    assert crackscan.load("crackscan-base").info.input_size == 160
    photo = tmp_path / "wall.png"
    Image.fromarray(np.full((500, 700, 3), 170, np.uint8)).save(photo)
    result = crackscan.scan(predictor, photo)
    assert result.summary.tile == predictor.info.patch_size == 227


def test_unknown_name_lists_the_built_in_models(capsys, tmp_path):
    code, out, err = run_cli(capsys, "predict", "crackscan-huge", tmp_path / "x.jpg")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "crackscan-huge" in err and "crackscan-base" in err and "crackscan-nano" in err


def test_a_path_the_user_has_wins_over_a_built_in_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("crackscan-nano").mkdir()
    code, out, err = run_cli(capsys, "info", "crackscan-nano")
    assert code == 2 and "not a crackscan run" in err


def test_models_command_lists_both(capsys):
    code, out, err = run_cli(capsys, "models")
    assert code == 0
    for name in NAMES:
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert f"{100 * builtin_models()[name].test_accuracy:.2f}%" in line
    code, out, err = run_cli(capsys, "models", "--format", "json")
    assert {row["name"] for row in json.loads(out)} >= set(NAMES)


def test_info_and_cli_commands_take_a_name(capsys, real_data, tmp_path):
    code, out, err = run_cli(capsys, "info", "crackscan-nano")
    assert code == 0 and "built_in:" in out and "input_size: 96" in out
    patch = sorted((real_data / "Positive").glob("*.jpg"))[0]
    code, out, err = run_cli(capsys, "predict", "crackscan-nano", patch, "--format", "csv")
    assert code == 0 and out.splitlines()[1].split(",")[1] == "Positive"
    photo = tmp_path / "photos" / "wall.jpg"
    photo.parent.mkdir()
    Image.open(patch).resize((454, 454)).save(photo)
    code, out, err = run_cli(capsys, "scan", "crackscan-nano", photo.parent, "--out", tmp_path / "scans")
    assert code == 0
    summary = json.loads((tmp_path / "scans" / "wall.jpg" / "summary.json").read_text())
    assert summary["tiles"] == 4


@pytest.mark.slow
def test_models_benchmark_measures_now(capsys):
    code, out, err = run_cli(capsys, "models", "--benchmark", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and all(row["measured_now"] and row["images_per_second"] > 0 for row in rows)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_builtin_accuracy_on_its_held_out_test_split(name, real_data, tmp_path):
    model = builtin_models()[name]
    held_out = held_out_test_files(model, real_data)
    assert len(held_out) == model.test_images
    predictor = crackscan.load(name)
    wrong = sum(prediction.label != class_name for prediction, (_, class_name)
                in zip(predictor.predict([path for path, _ in held_out]), held_out))
    assert wrong == model.test_errors
    floor = {"crackscan-base": 0.998, "crackscan-nano": 0.997}[name]
    assert 1 - wrong / len(held_out) >= floor


@pytest.mark.slow
def test_wheel_and_sdist_carry_both_models(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp_path), str(ROOT)], check=True,
                   capture_output=True)
    wheel = next(tmp_path.glob("*.whl"))
    sdist = next(tmp_path.glob("*.tar.gz"))
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    in_sdist = {Path(*Path(name).parts[1:]).as_posix() for name in tarfile.open(sdist).getnames()}
    for model in builtin_models().values():
        # The model, and what adapt starts from (a classifier's head and features, the segmenter's replay).
        for file in (model.file, *([model.adaptation["file"]] if model.adaptation else [])):
            assert f"crackscan/models/{file}" in in_wheel
            assert f"src/crackscan/models/{file}" in in_sdist
    assert "crackscan/models/models.json" in in_wheel
    assert "crackscan/report/templates/index.html" in in_wheel
    # 12.3 MB of models and adaptation data (compressed little further), 4.6 MB the segmenter's replay.
    assert wheel.stat().st_size < 14e6
