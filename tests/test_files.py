"""Writing files: a full or read-only disk is one line, before any work."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from crackscan.cli import main

from .conftest import write_image


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 2 MB tmpfs (root only: mounting needs it)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_or_read_only_disk_is_one_line(tiny_model, tiny_dataset, tiny_run, labels_folder, small_disk, tmp_path,
                                              capsys, monkeypatch):
    photos = tmp_path / "photos"
    for i in range(4):
        write_image(photos / f"p{i}.png", np.random.default_rng(i).integers(0, 256, (700, 900, 3), np.uint8))
    code = main(["scan", str(tiny_model), str(photos), "--out", str(small_disk / "scans")])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    started = time.monotonic()
    code = main(["train", str(tiny_dataset), "--out", str(small_disk / "run"), "--weights", "none",
                 "--image-size", "96", "--alpha", "0.35"])
    err = capsys.readouterr().err
    assert code == 2 and "Read-only file system" in err and "Traceback" not in err
    assert time.monotonic() - started < 20  # said before any embedding
    code = main(["label", str(photos), "--masks", str(photos), "--out", str(small_disk / "labels")])
    assert code == 2 and "Read-only file system" in capsys.readouterr().err
    # adapt and export say so before any work: the work itself is not reached.
    import importlib

    export_module = importlib.import_module("crackscan.export")  # crackscan.export is also the function's name
    adapt_module = importlib.import_module("crackscan.site.adapt")

    def reached(*args, **kwargs):
        raise AssertionError("the work started before the read-only folder was said")

    monkeypatch.setattr(adapt_module, "run_backbone", reached)
    monkeypatch.setattr(export_module, "load_keras_model", reached)
    code = main(["adapt", str(tiny_run.path), str(labels_folder), "--out", str(small_disk / "adapted")])
    assert code == 2 and "Read-only file system" in capsys.readouterr().err
    code = main(["export", str(tiny_run.path), "--format", "litert", "--out", str(small_disk / "model.tflite")])
    assert code == 2 and "Read-only file system" in capsys.readouterr().err
