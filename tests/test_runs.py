"""Run folders: written whole or not at all, replaced only with --force, one writer at a time."""

from __future__ import annotations

import shutil

import pytest

import crackscan
from crackscan import runs, synth
from crackscan.errors import CrackscanError
from crackscan.site.adapt import adapt

from .conftest import QUICK_TRAIN
from .helpers import run_cli


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


def test_two_writers_of_one_run_folder_cannot_both_succeed(tiny_run, tiny_dataset, labels_folder, tmp_path):
    out = tmp_path / "race"
    with runs.locked(out):
        with pytest.raises(CrackscanError, match="another crackscan is writing a run into"):
            adapt(tiny_run.path, labels_folder, out, int8_backbone=False)
        with pytest.raises(CrackscanError, match="another crackscan is writing"):
            crackscan.train(tiny_dataset, out, image_size=96, alpha=0.35, epochs=1, weights="none")
    assert not runs.is_run(out)
    adapt(tiny_run.path, labels_folder, out, int8_backbone=False)  # the lock is gone with its holder
    with pytest.raises(CrackscanError, match="--force"):
        adapt(tiny_run.path, labels_folder, out, int8_backbone=False)
