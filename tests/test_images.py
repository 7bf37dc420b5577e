"""Reading photo files: links, pipes, devices and huge files are judged before they are read."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np
import pytest

from crackscan import synth
from crackscan.cli import main
from crackscan.images import ImageReadError, read_image_file

from .conftest import write_image


@pytest.fixture()
def odd_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "good.jpg", synth.make_photo(np.random.default_rng(1), 300, 240, cracks=1))
    (folder / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    with open(folder / "big.jpg", "wb") as handle:  # 3 GB, sparse: nothing to read but its size
        handle.truncate(3 * 2**30)
    (folder / "sub").mkdir()
    (folder / "sub" / "back").symlink_to(folder)  # a loop of folders
    return folder


def test_links_pipes_devices_and_huge_files_are_reported_and_skipped(tiny_model, odd_folder, tmp_path, capsys):
    started = time.monotonic()
    code = main(["predict", str(tiny_model), str(odd_folder)])
    out, err = capsys.readouterr()
    assert code == 1 and "good.jpg" in out
    for name, why in (("dangling.jpg", "dangling symlink"), ("loop.jpg", "symbolic links"), ("pipe.jpg", "FIFO"),
                      ("zero.jpg", "a device"), ("big.jpg", "more than an image")):
        assert any(name in line and why in line for line in err.splitlines()), (name, err)
    code = main(["scan", str(tiny_model), str(odd_folder), "--out", str(tmp_path / "scans")])
    assert code == 1
    rows = {Path(r["photo"]).name: r["problem"] for r in csv.DictReader(open(tmp_path / "scans" / "summary.csv"))}
    assert rows["good.jpg"] == "" and {"dangling.jpg", "loop.jpg", "pipe.jpg", "zero.jpg", "big.jpg"} <= set(rows)
    assert time.monotonic() - started < 120  # nothing hung, nothing read 3 GB


def test_a_file_is_judged_before_a_byte_is_read(tmp_path):
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:
        handle.truncate(2**30)
    with pytest.raises(ImageReadError) as refused:
        read_image_file(huge, max_bytes=2**20)
    assert refused.value.kind == "too_large"


def test_jpeg_headers_read_by_libjpeg_turbo_leave_exif_orientation_to_pillow():
    import io

    from PIL import Image

    from crackscan.images import _has_exif, load_for_model_and_size, resize_pixels

    pixels = np.random.default_rng(0).integers(0, 255, (60, 90, 3), np.uint8)
    plain, turned = io.BytesIO(), io.BytesIO()
    Image.fromarray(pixels).save(plain, "JPEG", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: shown turned a quarter clockwise
    Image.fromarray(pixels).save(turned, "JPEG", quality=95, exif=exif)
    assert not _has_exif(plain.getvalue()) and _has_exif(turned.getvalue())
    assert _has_exif(b"\xff\xd8\x00garbage")  # segments that cannot be walked: Pillow decides
    fast, size = load_for_model_and_size(plain.getvalue(), 40)
    _, turned_size = load_for_model_and_size(turned.getvalue(), 40)
    assert size == (90, 60) and turned_size == (60, 90)
    # The same pixels as Pillow's decoding (both are libjpeg-turbo; 40 px is no DCT shrink).
    reference = resize_pixels(np.asarray(Image.open(plain).convert("RGB")), 40, 40).astype(np.int16)
    assert np.abs(fast.astype(np.int16) - reference).max() <= 2
