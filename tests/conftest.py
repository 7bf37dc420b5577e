"""Shared fixtures: an offline KERAS_HOME from ../shared, tiny synthetic datasets, a tiny run.

Unit tests use MobileNetV2 alpha 0.35 at 96 px on small synthetic images: seconds each.
Tests marked slow train on real images from ../shared/data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crackscan import synth
from crackscan.testing import shared_dir, use_offline_keras_home

SHARED = shared_dir(Path(__file__))
REAL_DATA = SHARED / "data" / "ozgenel-12k" if SHARED else None
TINY_SETTINGS = dict(image_size=96, alpha=0.35, epochs=4, batch_size=16)
# For tests of what a training run does with its folder, its split or its head, where the int8
# backbone every run carries (made and checked as the run is written) is not the point: it
# skips that step's conversion and check. tiny_run, and the tests of the int8 backbone, keep it.
QUICK_TRAIN = dict(TINY_SETTINGS, int8_backbone=False)
TINY_SEGMENT = dict(image_size=96, alpha=0.35, epochs=8, learning_rate=5e-3, batch_size=8, patience=0, split="70:15:15")


@pytest.fixture(scope="session", autouse=True)
def offline_keras(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """Keras reads ImageNet weights from ../shared instead of downloading them."""
    home = use_offline_keras_home(tmp_path_factory.mktemp("keras-home"))
    if home is None:
        os.environ["KERAS_HOME"] = str(tmp_path_factory.mktemp("keras-home-empty"))
    return home


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """crackscan's cache (backbones converted once, built-in parents) in the session's own
    folder: a test sees what this session made, never what an earlier one left in ~/.cache."""
    folder = tmp_path_factory.mktemp("crackscan-cache")
    os.environ["CRACKSCAN_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def weights(offline_keras: Path | None) -> str:
    """ImageNet weights where ../shared has them, random ones elsewhere (still offline)."""
    return "imagenet" if offline_keras else "none"


@pytest.fixture(scope="session")
def real_data() -> Path:
    if REAL_DATA is None or not REAL_DATA.is_dir():
        pytest.skip("needs ../shared/data/ozgenel-12k beside the project")
    return REAL_DATA


def add_bad_files(folder: Path) -> list[str]:
    """Files a real dataset folder collects: not images, truncated images, empty files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("site visit 3, north wall\n")
    good = next(p for p in sorted(folder.iterdir()) if p.suffix == ".jpg")
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[:600])
    (folder / "empty.png").write_bytes(b"")
    return ["notes.txt", "truncated.jpg", "empty.png"]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "data"
    synth.make_dataset(root, per_class=40, seed=3, size=96)
    # A byte-identical copy: must land in the same split as its original.
    shutil.copy(root / "Positive" / "00000.jpg", root / "Positive" / "copy-of-00000.jpg")
    add_bad_files(root / "Negative")
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory, weights: str):
    import crackscan

    return crackscan.train(tiny_dataset, tmp_path_factory.mktemp("runs") / "tiny", weights=weights, **TINY_SETTINGS)


class Exports(dict):
    """A run's exports, each made once, when a test first asks for it: (format, int8) -> result."""

    def __init__(self, run, folder: Path):
        super().__init__()
        self.run, self.folder = run, folder

    def __missing__(self, key):
        from crackscan.export import export

        fmt, int8 = key
        suffix = ".tflite" if fmt == "litert" else ".onnx"
        self[key] = export(self.run.path, fmt, int8=int8, out=self.folder / f"m{'-int8' if int8 else ''}{suffix}")
        return self[key]


@pytest.fixture(scope="session")
def tiny_exports(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return Exports(tiny_run, tmp_path_factory.mktemp("tiny-exports"))


@pytest.fixture(scope="session")
def tiny_model(tiny_exports) -> Path:
    """The tiny run's float LiteRT export: for tests of scanning and surveys, where the model's
    format is not the point, it loads in milliseconds where model.keras takes seconds."""
    return tiny_exports["litert", False].path


def write_image(path: Path, array: np.ndarray, **save_args) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save_args)
    return path


REAL_PER_CLASS = 1100


def link_first(source: Path, target: Path, per_class: int) -> Path:
    """The first ``per_class`` images of each class of ``source``, linked, not copied."""
    for name in ("Positive", "Negative"):
        (target / name).mkdir(parents=True)
        for path in sorted((source / name).iterdir())[:per_class]:
            (target / name / path.name).symlink_to(path)
    return target


@pytest.fixture(scope="session")
def real_subset(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,200 real images (the first 1,100 of each class), linked, not copied, plus bad files."""
    root = link_first(real_data, tmp_path_factory.mktemp("ozgenel") / "2200", REAL_PER_CLASS)
    add_bad_files(root / "Negative")
    return root


@pytest.fixture(scope="session")
def real_run(real_subset: Path, tmp_path_factory: pytest.TempPathFactory, offline_keras: Path | None):
    """The default method (MobileNetV2 1.0, 160 px, head trained to convergence) on real images."""
    if offline_keras is None:
        pytest.skip("needs ../shared/keras-home for ImageNet weights")
    import crackscan

    return crackscan.train(real_subset, tmp_path_factory.mktemp("real") / "run")


@pytest.fixture(scope="session")
def real_int8(real_run, tmp_path_factory: pytest.TempPathFactory):
    from crackscan.export import export

    return export(real_run.path, "litert", int8=True, out=tmp_path_factory.mktemp("int8") / "model.int8.tflite")


def png_declaring(width: int, height: int) -> bytes:
    """A PNG that declares the given size but holds no pixels: enough to test refusing a
    decompression bomb before decoding, without allocating one."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


@contextlib.contextmanager
def running_server(model, **limits):
    """crackscan's real server (uvicorn, header timeout, limits) on a free loopback port."""
    from crackscan.serve.app import build_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = build_server(model, "127.0.0.1", port, **limits)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="session")
def mask_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic photos of 192 px with their crack masks (images/, masks/)."""
    return synth.make_mask_set(tmp_path_factory.mktemp("mask-set"), photos=24, size=192, seed=0)


@pytest.fixture(scope="session")
def tiny_segmenter(mask_set: Path, tmp_path_factory: pytest.TempPathFactory, weights: str) -> Path:
    """A segmenter run trained on mask_set (alpha 0.35, 96 px windows): ~30 s once."""
    from crackscan.segment.train import train_segmenter
    from crackscan.settings import TrainConfig

    out = tmp_path_factory.mktemp("segmenter") / "run"
    train_segmenter([mask_set], out, TrainConfig(weights=weights, **TINY_SEGMENT))
    return out


@pytest.fixture()
def labels_folder(tiny_dataset: Path, tmp_path: Path) -> Path:
    labels = tmp_path / "labels"
    for name in ("Positive", "Negative"):
        (labels / name).mkdir(parents=True)
        for path in sorted((tiny_dataset / name).glob("0000*.jpg"))[:6]:
            shutil.copy(path, labels / name / path.name)
    return labels
