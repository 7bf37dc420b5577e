"""Export to LiteRT and ONNX, float and int8: metadata inside, parity with Keras, one predictor."""

import numpy as np
import pytest

import crackscan
from crackscan import CrackscanError
from crackscan.cli import main
from crackscan.export import export

from .helpers import run_cli

# ONNX conversion (tf2onnx) takes ~15 s a model: those run in the slow tier, which CI runs.
FORMATS = [("litert", False), ("litert", True),
           pytest.param("onnx", False, marks=pytest.mark.slow), pytest.param("onnx", True, marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def exported(tiny_exports):
    return tiny_exports


@pytest.mark.parametrize("fmt, int8", FORMATS)
def test_export_is_checked_and_loads_with_its_metadata(exported, tiny_run, fmt, int8):
    result = exported[fmt, int8]
    assert result.path.is_file() and result.check["passed"]
    assert result.check["images"] == tiny_run.metrics["images"]["split"]["val"] + tiny_run.metrics["images"]["split"]["test"]
    if not int8:
        assert result.check["max_crack_probability_difference"] <= 1e-4
    predictor = crackscan.load(result.path)
    assert predictor.format == fmt
    assert predictor.info == crackscan.load(tiny_run.path).info


@pytest.mark.parametrize("fmt, int8", FORMATS)
def test_every_format_gives_the_same_answers(exported, tiny_run, tiny_dataset, fmt, int8):
    images = sorted((tiny_dataset / "Positive").glob("000*.jpg"))[:6] + sorted((tiny_dataset / "Negative").glob("000*.jpg"))[:6]
    reference = crackscan.load(tiny_run.path).predict(images)
    answers = crackscan.load(exported[fmt, int8].path).predict(images)
    if int8:
        # Quantization may move an uncertain answer across 0.5; a clear one must stay.
        clear = [(a, r) for a, r in zip(answers, reference) if abs(r.crack_probability - 0.5) > 0.25]
        assert clear and all(a.label == r.label for a, r in clear)
    else:
        assert max(abs(a.crack_probability - r.crack_probability) for a, r in zip(answers, reference)) <= 1e-4
        assert [a.label for a in answers] == [r.label for r in reference]


def test_int8_litert_is_smaller(exported):
    assert exported["litert", True].size_bytes < exported["litert", False].size_bytes / 2


def test_int8_without_calibration_images_for_a_bare_model(tiny_run, tmp_path):
    bare = tmp_path / "bare.keras"
    bare.write_bytes(tiny_run.model_path.read_bytes())
    with pytest.raises(CrackscanError, match="--check"):
        export(bare, "litert")


def test_output_suffix_must_match_the_format(tiny_run, tmp_path):
    with pytest.raises(CrackscanError, match="must end in .onnx"):
        export(tiny_run.path, "onnx", out=tmp_path / "model.tflite")


@pytest.mark.slow  # a whole conversion, to be refused
def test_failed_check_writes_nothing(tiny_run, tmp_path, monkeypatch):
    import importlib

    parity = importlib.import_module("crackscan.runtime.parity")

    monkeypatch.setattr(parity, "FLOAT_TOLERANCE", -1.0)
    target = tmp_path / "never.tflite"
    with pytest.raises(CrackscanError, match="not written"):
        export(tiny_run.path, "litert", out=target)
    assert not target.exists()


def test_export_cli_and_predict_with_the_export(capsys, tiny_run, tiny_dataset, tmp_path):
    target = tmp_path / "cli.int8.tflite"
    assert main(["export", str(tiny_run.path), "--format", "litert", "--int8", "--calibration",
                 str(tiny_dataset), "--out", str(target)]) == 0
    out, err = capsys.readouterr()
    assert "label agreement" in out and str(target) in out
    assert "converting to LiteRT int8, calibrating" in err and "checking the export" in err  # progress
    assert main(["predict", str(target), str(tiny_dataset / "Positive" / "00001.jpg"), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(str(tiny_dataset / "Positive" / "00001.jpg"))
    assert main(["evaluate", str(target), str(tiny_dataset)]) == 0


def test_runners_pad_partial_batches_consistently(exported, tiny_dataset):
    predictor = crackscan.load(exported["litert", False].path, batch_size=8)
    from crackscan.images import load_for_model

    pixels = np.stack([load_for_model(p, 96) for p in sorted((tiny_dataset / "Positive").glob("000*.jpg"))[:11]])
    whole = predictor.probabilities(pixels)
    one_by_one = np.concatenate([predictor.probabilities(pixels[i : i + 1]) for i in range(len(pixels))])
    assert whole.shape == (11, 2) and np.allclose(whole, one_by_one, atol=1e-6)


def test_missing_exporter_is_named_in_one_line(capsys, tiny_run, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if it were not installed
    assert main(["export", str(tiny_run.path), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["crackscan: error: ONNX export needs the package 'tf2onnx': pip install 'crackscan[export]'"]


def test_export_refuses_to_replace_a_file_without_force(capsys, tiny_run, tmp_path):
    target = tmp_path / "mine.tflite"
    target.write_bytes(b"the user's own model")
    code, _, err = run_cli(capsys, "export", tiny_run.path, "--format", "litert", "--out", target)
    assert code == 2 and "already exists" in err and "--force" in err
    assert target.read_bytes() == b"the user's own model"
