"""Mutated image files: every one is either read or refused with a reason, never a traceback.

Seeded mutations of small valid files in each decoded format (byte flips in the header,
header integers set to extreme values, truncation, bytes spliced in), plus formats Pillow
knows but crackscan refuses. 2,400 mutants in a few seconds.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from crackscan.images import ImageReadError, READ_ERROR_KINDS, read_pixels

MUTANTS_PER_FORMAT = 400


def _valid_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    files = {}
    for name, image, save_args in [
        ("JPEG", Image.fromarray(rgb), {"quality": 90}),
        ("PNG", Image.fromarray(rgb), {}),
        ("PNG-palette", Image.fromarray(rgb).convert("P"), {"format": "PNG"}),
        ("BMP", Image.fromarray(rgb), {}),
        ("TIFF", Image.fromarray(rgb), {"compression": "tiff_deflate"}),
        ("WEBP", Image.fromarray(rgb), {"quality": 80}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, save_args.pop("format", name), **save_args)
        files[name] = buffer.getvalue()
    return files


def _mutants(content: bytes, count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    found = []
    for index in range(count):
        data = bytearray(content)
        kind = index % 4
        if kind == 0:  # flip bytes, mostly in the header
            for _ in range(rng.integers(1, 4)):
                position = int(rng.integers(0, min(len(data), 96)) if rng.random() < 0.8 else rng.integers(0, len(data)))
                data[position] ^= int(rng.integers(1, 256))
        elif kind == 1:  # a header integer set to an extreme value (lengths, sizes, offsets)
            position = int(rng.integers(0, min(len(data) - 4, 96)))
            data[position : position + 4] = bytes(rng.choice([b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
                                                              b"\x7f\xff\xff\xff", b"\x00\x00\x00\x04"]))
        elif kind == 2:  # truncated
            data = data[: int(rng.integers(1, len(data)))]
        else:  # random bytes spliced into the header
            position = int(rng.integers(0, min(len(data), 64)))
            data[position:position] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
        found.append(bytes(data))
    return found


@pytest.mark.parametrize("format_name", list(_valid_files()))
def test_every_mutant_is_read_or_refused_with_a_reason(format_name):
    content = _valid_files()[format_name]
    read = refused = 0
    for index, mutant in enumerate(_mutants(content, MUTANTS_PER_FORMAT, seed=hash(format_name) % 10_000)):
        try:
            pixels = read_pixels(mutant, max_pixels=4_000_000)
        except ImageReadError as error:  # anything else fails the test with its traceback
            assert error.kind in READ_ERROR_KINDS and error.reason, (index, error)
            refused += 1
        else:
            assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8
            read += 1
    assert read + refused == MUTANTS_PER_FORMAT
    assert refused > MUTANTS_PER_FORMAT // 4  # the mutations really do break files


def test_the_reported_header_damage_is_a_corrupt_image():
    """The issue's cases: a PNG whose IHDR length byte says 4, and damaged foreign headers."""
    png = bytearray(_valid_files()["PNG"])
    assert png[8:16] == b"\x00\x00\x00\rIHDR"
    png[11] = 4
    with pytest.raises(ImageReadError) as caught:
        read_pixels(bytes(png))
    assert caught.value.kind == "corrupt" and "corrupt" in caught.value.reason


@pytest.mark.parametrize("format_name,save_args", [("PPM", {}), ("JPEG2000", {}), ("DDS", {}), ("GIF", {}),
                                                    ("TGA", {}), ("ICO", {})])
def test_formats_crackscan_does_not_decode_are_refused_whole_or_mutated(format_name, save_args):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    if format_name == "DDS":
        image = image.convert("RGBA")
    buffer = io.BytesIO()
    image.save(buffer, format_name, **save_args)
    with pytest.raises(ImageReadError) as caught:
        read_pixels(buffer.getvalue())
    assert caught.value.kind == "unsupported" and format_name.replace("JPEG2000", "JPEG2000") in caught.value.reason
    for mutant in _mutants(buffer.getvalue(), 60, seed=7):
        with pytest.raises(ImageReadError):
            read_pixels(mutant)
