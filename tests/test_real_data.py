"""Integration: the origin's method on real Özgenel patches from ../shared reaches 98%+."""

import pytest

import crackscan

from .conftest import add_bad_files

pytestmark = pytest.mark.slow
PER_CLASS = 1100


@pytest.fixture(scope="module")
def real_subset(real_data, tmp_path_factory):
    """2,200 real images (the first 1,100 of each class), linked, not copied."""
    root = tmp_path_factory.mktemp("ozgenel-2200")
    for name in ("Positive", "Negative"):
        (root / name).mkdir()
        for path in sorted((real_data / name).iterdir())[:PER_CLASS]:
            (root / name / path.name).symlink_to(path)
    add_bad_files(root / "Negative")
    return root


@pytest.fixture(scope="module")
def real_run(real_subset, tmp_path_factory, offline_keras):
    if offline_keras is None:
        pytest.skip("needs ../shared/keras-home for ImageNet weights")
    return crackscan.train(real_subset, tmp_path_factory.mktemp("real") / "run")


def test_default_training_on_real_images_reaches_98_percent(real_run):
    test = real_run.metrics["test"]
    assert test["count"] >= 120
    assert test["accuracy"] >= 0.98, test
    assert real_run.metrics["val"]["accuracy"] >= 0.98
    assert real_run.metrics["images"]["skipped"] == 3


def test_saved_model_agrees_with_the_run_on_real_test_images(real_run, real_subset):
    result = crackscan.evaluate(real_run.path, real_subset, split="test")
    assert result.metrics["accuracy"] == pytest.approx(real_run.metrics["test"]["accuracy"], abs=1e-9)
