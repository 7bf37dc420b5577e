"""The contracts the rooms rely on: a task on every model, decoded in one place; one typed
photo result; one registry of names; one protocol for every runner; defaults defined once;
Keras archive editing that fails loudly on a layout it does not know."""

from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import crackscan
from crackscan import runs
from crackscan.errors import CrackscanError
from crackscan.model.builtin import builtin_models
from crackscan.model.heads import SiteHead
from crackscan.model.info import ModelInfo
from crackscan.model.keras_archive import ArchiveLayoutError, read_keras_metadata, write_site_model
from crackscan.model.registry import resolve
from crackscan.photo.result import PhotoSummary
from crackscan.runtime.formats import read_litert_metadata
from crackscan.runtime.predictor import Predictor, load
from crackscan.runtime.runners import Runner
from crackscan.settings import TRAIN_SETTINGS, TrainConfig, parse_split

INFO = dict(class_names=("Negative", "Positive"), positive_class="Positive", input_size=96, patch_size=227)


def test_a_model_carries_its_task_and_old_files_are_classifiers():
    for task in ("classify", "segment"):
        info = ModelInfo(**INFO, task=task)
        assert ModelInfo.from_json(info.to_json()).task == task
    old = json.loads(ModelInfo(**INFO).to_json())
    del old["task"]
    assert ModelInfo.from_json(json.dumps(old)).task == "classify"
    with pytest.raises(CrackscanError, match="task must be one of classify, segment"):
        ModelInfo.from_json(json.dumps({**old, "task": "detect"}))


def test_built_in_models_carry_their_task_in_their_metadata():
    for model in builtin_models().values():
        assert read_litert_metadata(model.path.read_bytes()).task == model.task
        assert load(model.name).decoder.__name__ == {"classify": "ClassifyDecoder", "segment": "SegmentDecoder"}[model.task]
    assert {m.task for m in builtin_models().values()} == {"classify", "segment"}


class _Maps:
    """A segmenter's runner: each pixel's crack probability is its red value, at the window's size."""

    batch_size = 4

    def __init__(self, channels: int | None):
        self.channels = channels

    def __call__(self, images: np.ndarray) -> np.ndarray:
        maps = np.asarray(images)[..., 0].astype(np.float32) / 255
        if self.channels is None:
            return maps
        if self.channels == 1:
            return maps[..., None]
        return np.stack([1 - maps, maps], axis=-1)  # class order Negative, Positive


@pytest.mark.parametrize("channels", [None, 1, 2])
def test_a_segment_model_is_decoded_by_its_task(channels: int | None):
    predictor = Predictor(_Maps(channels), ModelInfo(**INFO, task="segment"))
    assert isinstance(predictor.runner, Runner)
    tiles = np.zeros((3, 96, 96, 3), np.uint8)
    tiles[:, 0, 0, 0] = [0, 128, 255]
    assert np.allclose(predictor.crack_probability(tiles), [0, 128 / 255, 1])
    probabilities = predictor.probabilities(tiles)
    assert probabilities.shape == (3, 2) and np.allclose(probabilities.sum(axis=1), 1)
    # A segmenter's scan: windows at the photo's own scale, each tile as cracked as its pixels.
    photo = np.zeros((227, 454, 3), np.uint8)
    photo[:, 227:] = 255
    result = crackscan.scan(predictor, photo, tile=227)
    assert [t.label for t in result.tiles] == ["Negative", "Positive"]


def test_a_segment_output_of_an_unknown_shape_is_one_line():
    predictor = Predictor(lambda images: np.zeros((len(images), 5)), ModelInfo(**INFO, task="segment"))
    with pytest.raises(CrackscanError, match="must be N x H x W"):
        predictor.crack_probability(np.zeros((1, 96, 96, 3), np.uint8))


def test_every_runner_of_every_format_keeps_the_protocol(tiny_exports):
    tiny_run = tiny_exports.run
    for path in (tiny_run.model_path, tiny_exports["litert", False].path, tiny_exports["litert", True].path):
        predictor = load(path, batch_size=4)
        assert isinstance(predictor.runner, Runner) and predictor.runner.batch_size == 4
        for count in (1, 3, 9):
            outputs = predictor.runner(np.zeros((count, 96, 96, 3), np.uint8))
            assert outputs.dtype == np.float32 and outputs.shape == (count, 2), (path.name, count)


def test_one_summary_type_round_trips_and_keeps_what_it_does_not_know():
    summary = PhotoSummary("a.jpg", 400, 300, 227, 227, 0.5, 4, 2, 2, 1, 0.31, 0.93, "m.tflite", 0.2)
    summary.record({"outputs": "scans/a.jpg", "photo_bytes": 1234, "model_sha256": "ab"})
    values = summary.to_dict()
    assert values["outputs"] == "scans/a.jpg" and values["photo_bytes"] == 1234
    again = PhotoSummary.from_dict(json.loads(json.dumps(values)))
    assert again == summary
    del values["cracked_tiles"]
    with pytest.raises(ValueError, match="cracked_tiles"):
        PhotoSummary.from_dict(values)


def test_the_registry_resolves_every_kind_of_name(tiny_run, tiny_exports, tmp_path: Path):
    built_in = resolve("crackscan-nano")
    assert built_in.builtin is not None and built_in.builtin.name == "crackscan-nano" and built_in.run is None
    assert resolve(built_in.file).builtin == built_in.builtin  # the file of a built-in is that built-in
    assert resolve(tiny_run.path) == resolve(tiny_run.path / runs.MODEL_FILE)
    assert resolve(tiny_run.path).run == tiny_run.path
    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    assert resolve(run, fastest=True).file == run / runs.MODEL_FILE
    shutil.copyfile(tiny_exports["litert", True].path, run / "model.int8.tflite")
    fastest = resolve(run, fastest=True)
    assert fastest.file == run / "model.int8.tflite" and fastest.run == run
    with pytest.raises(CrackscanError, match="no file, run folder or built-in model"):
        resolve(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrackscanError, match="not a crackscan run"):
        resolve(tmp_path / "empty")


def test_train_config_defaults_are_the_settings_defaults():
    config = TrainConfig()
    for setting in TRAIN_SETTINGS:
        expected = parse_split(setting.default) if setting.name == "split" else setting.default
        assert getattr(config, setting.name) == expected, setting.name
    assert {f.name for f in dataclasses.fields(TrainConfig)} == {s.name for s in TRAIN_SETTINGS}


def _site_head(width: int, channels: int, seed: int = 0) -> SiteHead:
    rng = np.random.default_rng(seed)
    return SiteHead((rng.normal(0, 0.05, width), 0.1), (rng.normal(0, 0.05, channels), -1.0),
                    (rng.normal(0, 0.05, width), 0.2))


def test_the_archive_editor_writes_a_model_keras_loads_as_the_numpy_head(tiny_run, tmp_path: Path):
    from crackscan import _tf
    from crackscan.model.backbone import SITE_LAYER
    from crackscan.model.classifier import feature_extractor
    from crackscan.model.keras_archive import load_keras_model

    keras_model, info = load_keras_model(tiny_run.model_path)
    extractor = feature_extractor(keras_model)
    pixels = np.random.default_rng(1).integers(0, 256, (5, 96, 96, 3)).astype(np.float32)
    pooled, site_map = (np.asarray(x) for x in extractor.predict(pixels, verbose=0))
    head = _site_head(pooled.shape[1], site_map.shape[-1])
    edited = write_site_model(tiny_run.model_path, tmp_path / "site.keras", head, info, site_map.shape[1:], SITE_LAYER)
    assert read_keras_metadata(edited) == info
    reloaded = _tf.keras().saving.load_model(edited, compile=False)
    answers = np.asarray(reloaded.predict(pixels, verbose=0))[:, info.positive_index]
    assert np.abs(answers - head.crack_probability(pooled, site_map)).max() < 1e-4


def test_the_archive_editor_refuses_a_layout_it_does_not_know(tiny_run, tmp_path: Path):
    changed = tmp_path / "changed.keras"
    with zipfile.ZipFile(tiny_run.model_path) as source, zipfile.ZipFile(changed, "w") as target:
        for name in source.namelist():
            content = source.read(name)
            if name == "config.json":  # as if a Keras release renamed the head's weight group
                content = content.replace(b'"classes"', b'"class_probabilities"')
            target.writestr(name, content)
    with pytest.raises(ArchiveLayoutError, match="not laid out as crackscan expects"):
        write_site_model(changed, tmp_path / "out.keras", _site_head(1280, 576), read_keras_metadata(changed),
                         (6, 6, 576), "block_13_expand_relu")
    assert not (tmp_path / "out.keras").exists()
