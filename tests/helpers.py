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


def label_studio_rle(mask: "np.ndarray") -> list[int]:
    """A 2-D uint8 mask in Label Studio's brush code, as its SDK's mask2rle writes it (each
    pixel's value in all four RGBA channels; runs of one as literals, longer ones repeated,
    with 3-, 4-, 8- or 16-bit lengths): test_site_annotations checks it byte for byte against
    a file the SDK wrote."""
    import numpy as np

    values = np.repeat(np.asarray(mask, np.uint8).ravel(), 4)
    bits = [f"{len(values):032b}", f"{8 - 1:05b}", "".join(f"{size - 1:04b}" for size in (3, 4, 8, 16))]
    change = np.flatnonzero(values[1:] != values[:-1])
    ends = np.append(change, len(values) - 1)
    lengths = np.diff(np.append(-1, ends))
    for length, value in zip(lengths.tolist(), values[ends].tolist()):
        if length == 1:
            bits.append(f"000000{value:08b}")
            continue
        while length > 2**16:
            bits.append(f"111{2**16 - 1:016b}{value:08b}")
            length -= 2**16
        for index, size in enumerate((3, 4, 8, 16)):
            if length <= 2**size:
                bits.append(f"1{index:02b}{length - 1:0{size}b}{value:08b}")
                break
    text = "".join(bits)
    text += "0" * (8 - len(text) % 8)  # the SDK pads a whole byte when none is needed, too
    return [int(text[i:i + 8], 2) for i in range(0, len(text), 8)]


def level_joint_site(folder: "Path") -> "Path":
    """A site the tiny segmenter never saw: 8 photos with a level dark slab joint across each,
    clear in the masks. It calls level joints cracks and leaves upright ones alone, so these
    are the joint-site photos (make_mask_set's odd ones) that hold an error to unlearn."""
    site = synth.make_mask_set(folder, photos=16, size=192, seed=5, joints=True)
    for index in range(0, 16, 2):  # make_mask_set's joints run upright on even photos
        for part in ("images", "masks"):
            (site / part / f"{index:03d}.png").unlink()
    return site
