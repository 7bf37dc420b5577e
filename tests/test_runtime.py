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
