import json

import pytest

from crackscan import CrackscanError, TrainConfig
from crackscan.settings import ORIGIN_HEAD_SETTINGS, parse_split


def test_defaults_are_the_origins_method():
    config = TrainConfig()
    assert (config.image_size, config.alpha, config.weights) == (160, 1.0, "imagenet")
    assert config.split == (0.70, 0.24, 0.06)
    assert (config.epochs, config.learning_rate, config.batch_size, config.dropout) == (100, 1e-3, 64, 0.0)
    assert (config.patience, config.min_delta) == (5, 1e-3)
    origin = config.replace(**ORIGIN_HEAD_SETTINGS)
    assert (origin.epochs, origin.learning_rate, origin.batch_size, origin.patience) == (10, 1e-4, 16, 0)


@pytest.mark.parametrize("text", ["70:24:6", (0.7, 0.24, 0.06), [70, 24, 6], "0.7:0.24:0.06"])
def test_split_forms_agree(text):
    assert parse_split(text) == (0.7, 0.24, 0.06)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"image_size": 8}, "image_size"),
        ({"alpha": 0.6}, "alpha"),
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"dropout": 1.0}, "dropout"),
        ({"split": "70:30"}, "split"),
        ({"split": "0:50:50"}, "training"),
        ({"split": "a:b:c"}, "split"),
        ({"batch_size": 0}, "batch_size"),
        ({"embedding_backend": "gpu"}, "embedding_backend"),
        ({"colour": "red"}, "unknown setting"),
    ],
)
def test_bad_settings_name_the_setting(changes, words):
    with pytest.raises(CrackscanError, match=words):
        TrainConfig().replace(**changes)


def test_saved_config_loads_back_equal(tmp_path):
    config = TrainConfig(image_size=96, alpha=0.35, split="80:10:10", seed=7)
    config.save(tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text())["split"] == [0.8, 0.1, 0.1]
    assert TrainConfig.load(tmp_path / "config.json") == config


def test_unreadable_config_is_a_user_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CrackscanError, match="cannot read settings"):
        TrainConfig.load(tmp_path / "config.json")
