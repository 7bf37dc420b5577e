"""Helpers more than one test file uses (tiny photos and files, a CLI call)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from crackscan import synth
from crackscan.cli import main

from .conftest import write_image


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def damaged_png(path: Path) -> Path:
    """A PNG whose IHDR length byte says 4 instead of 13: Pillow raised ValueError on it."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(buffer, "PNG")
    content = bytearray(buffer.getvalue())
    content[11] = 4
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(content))
    return path


def photo(path: Path, seed: int, width: int = 500, height: int = 300, cracks: int = 1) -> Path:
    return write_image(path, synth.make_photo(np.random.default_rng(seed), width, height, cracks=cracks))


LOCAL = "http://127.0.0.1"


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
