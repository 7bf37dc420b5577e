"""Whole-photo scanning speed with the int8 LiteRT model.

Builds 4032x3024 photos from real patches (the size the Özgenel patches were cut from),
then times `crackscan.scan` + writing its outputs (file read, tiling, inference, overlay
PNG, tiles.csv, summary.json) for one photo, and `crackscan scan` over a folder of 20.

    python benchmarks/scan_speed.py [--run RUN] [--data ../shared/data/ozgenel-12k]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import DEFAULT_DATA, prepare_run, real_image_files

WIDTH, HEIGHT, PATCH = 4032, 3024, 227


def make_photo(files: list[Path], rng: np.random.Generator) -> Image.Image:
    photo = Image.new("RGB", (WIDTH, HEIGHT))
    for y in range(0, HEIGHT, PATCH):
        for x in range(0, WIDTH, PATCH):
            photo.paste(Image.open(files[rng.integers(len(files))]).convert("RGB"), (x, y))
    return photo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--run", type=Path, help="a run folder (default: train one on 3,000 real images)")
    parser.add_argument("--photos", type=int, default=20)
    args = parser.parse_args()

    import crackscan

    work = Path(tempfile.mkdtemp(prefix="crackscan-scan-"))
    run_dir = prepare_run(args.run, args.data, work)
    model = crackscan.export(run_dir, "litert", int8=True, out=work / "model.int8.tflite").path

    files = real_image_files(args.data)
    rng = np.random.default_rng(0)
    folder = work / "photos"
    folder.mkdir()
    for i in range(args.photos):
        make_photo(files, rng).save(folder / f"photo{i:02d}.jpg", quality=92)

    predictor = crackscan.load(model)
    photo = folder / "photo00.jpg"
    crackscan.scan(predictor, photo).write(work / "warm-up")
    times = []
    for i in range(5):
        started = time.perf_counter()
        result = crackscan.scan(predictor, photo)
        result.write(work / f"one-{i}")
        times.append(time.perf_counter() - started)
    print(f"one {WIDTH}x{HEIGHT} photo, {result.summary['tiles']} tiles of {PATCH} px, int8 LiteRT, "
          f"read + tiles + overlay + csv/json written: median {statistics.median(times):.3f} s "
          f"(best {min(times):.3f} s) of {len(times)}")

    command = [sys.executable, "-m", "crackscan.cli", "scan", str(model), str(folder), "--out", str(work / "survey")]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    print(f"crackscan scan over a folder of {args.photos} such photos (process start included): "
          f"{seconds:.1f} s = {args.photos / seconds:.2f} photos/s")
    print(f"overlay example: {work / 'one-0' / 'overlay.png'}")


if __name__ == "__main__":
    main()
