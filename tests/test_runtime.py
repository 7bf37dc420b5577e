"""The runtime layer: metadata checked against the graph, one-image interpreters."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

import crackscan
from crackscan import runs
from crackscan.errors import CrackscanError
from crackscan.model.info import ModelInfo
from crackscan.runtime.formats import attach_litert_metadata
from crackscan.runtime.runners import BackboneRunner


def test_a_model_whose_metadata_lists_one_class_is_refused(tiny_run, tmp_path):
    from crackscan.model.info import ModelInfo

    for bad in ({"class_names": ["Positive"], "positive_class": "Positive"},
                {"input_size": 0}, {"patch_size": -3}, {"class_names": ["A", "A"], "positive_class": "A"}):
        values = {"class_names": ["Negative", "Positive"], "positive_class": "Positive", "input_size": 96, **bad}
        with pytest.raises(CrackscanError, match="metadata"):
            ModelInfo.from_json(json.dumps({"format": "crackscan-model", **values}), "model")


def test_a_lone_image_runs_on_its_own_interpreter(tiny_run):
    backbone = BackboneRunner((tiny_run.path / runs.BACKBONE_FILE).read_bytes() if
                              (tiny_run.path / runs.BACKBONE_FILE).is_file() else _backbone_of(tiny_run), 16)
    images = np.random.default_rng(0).integers(0, 256, (20, 96, 96, 3)).astype(np.uint8)
    pooled, site = backbone.features(images)
    assert backbone._single is not None  # the 4 left over went one by one
    lone_pooled, lone_site = backbone.features(images[:1])
    assert np.allclose(lone_pooled, pooled[:1], atol=1e-4) and np.allclose(lone_site, site[:1], atol=1e-4)


def _backbone_of(tiny_run) -> bytes:
    from crackscan.model.classifier import feature_extractor
    from crackscan.model.keras_archive import load_keras_model
    from crackscan.runtime.formats import keras_to_litert

    return keras_to_litert(feature_extractor(load_keras_model(tiny_run.model_path)[0]))


def test_metadata_that_disagrees_with_the_graph_is_refused_at_load(tiny_model, tmp_path):
    content = tiny_model.read_bytes()
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        start = content.rfind(b"PK\x03\x04")
        info = ModelInfo.from_json(archive.read("crackscan.json"))
    edited = tmp_path / "edited.tflite"
    edited.write_bytes(attach_litert_metadata(content[:start], ModelInfo(**{**info.__dict__, "input_size": 128})))
    with pytest.raises(CrackscanError, match="metadata says 128 px inputs but the model takes 96x96"):
        crackscan.load(edited)


def test_a_served_litert_model_makes_its_one_image_interpreter_when_loaded(tiny_model):
    predictor = crackscan.load(tiny_model)
    assert predictor.runner._single is not None


def test_a_fully_convolutional_litert_file_runs_at_any_window_size_with_its_own_weights():
    """crackscan-seg's int8 file rewritten for a 288 x 416 window (runtime.resize) draws the
    crack of a real DeepCrack photo as its 256 px file does, and a classifier, whose dense
    head fixes its input, is left at its size."""
    from PIL import Image

    from crackscan.photo import segment
    from crackscan.runtime.resize import litert_at_size, resizable
    from crackscan.segment.pixels import pixel_counts

    from .conftest import SHARED

    seg = crackscan.load("crackscan-seg")
    sized = seg.sized(288, 416)
    assert sized is not None and sized.batch_size == 1
    assert sized(np.zeros((1, 288, 416, 3), np.uint8)).shape == (1, 288, 416, 1)
    assert seg.sized(288, 416) is sized  # kept, not rewritten again
    assert not resizable(crackscan.load("crackscan-base").runner.model_content)
    assert crackscan.load("crackscan-base").sized(320, 320) is None
    with pytest.raises(CrackscanError, match="does not divide"):
        litert_at_size(seg.runner.model_content, 300, 416)

    photos = SHARED / "data" / "real-photos" / "deepcrack-train" if SHARED else None
    if photos is None or not photos.is_dir():
        pytest.skip("needs ../shared's deepcrack-train")
    photo = sorted((photos / "images").glob("*.jpg"))[3]
    pixels = np.asarray(Image.open(photo).convert("RGB"))
    truth = np.asarray(Image.open(photos / "masks" / f"{photo.stem}.png")) > 127
    large = segment.crack_probability_map(seg, pixels) >= 0.5  # one 416 x 576 window
    old = segment.WINDOW_LARGEST
    try:
        segment.WINDOW_LARGEST = 0
        small = segment.crack_probability_map(seg, pixels) >= 0.5  # six of 256 px
    finally:
        segment.WINDOW_LARGEST = old
    assert pixel_counts(large, truth).f1 > 0.8 and pixel_counts(small, truth).f1 > 0.8
    assert pixel_counts(large, small).f1 > 0.9
