"""Whole-photo scanning speed with the int8 LiteRT model.

Builds 4032x3024 photos from real patches (the size the Özgenel patches were cut from),
then times `crackscan.scan` + writing its outputs (file read, tiling, inference, overlay
PNG, tiles.csv, summary.json) for one photo, `crackscan scan` over a folder of 20, and the
peak memory of `crackscan scan` on one 50-megapixel photo.

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


from common import DEFAULT_DATA, folder_of_photos, int8_model, photo_of_patches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--run", type=Path, help="a run folder (default: train one on 3,000 real images)")
    parser.add_argument("--photos", type=int, default=20)
    args = parser.parse_args()

    import crackscan

    work = Path(tempfile.mkdtemp(prefix="crackscan-scan-"))
    model = int8_model(args.run, args.data, work)

    folder, files, rng = folder_of_photos(args.data, work / "photos", args.photos)

    predictor = crackscan.load(model)
    photo = folder / "photo00.jpg"
    crackscan.scan(predictor, photo).write(work / "warm-up")
    times = []
    for i in range(5):
        started = time.perf_counter()
        result = crackscan.scan(predictor, photo)
        result.write(work / f"one-{i}")
        times.append(time.perf_counter() - started)
    print(f"one {result.width}x{result.height} photo, {result.summary.tiles} tiles of {result.summary.tile} px, int8 LiteRT, "
          f"read + tiles + overlay + csv/json written: median {statistics.median(times):.3f} s "
          f"(best {min(times):.3f} s) of {len(times)}")

    command = [sys.executable, "-m", "crackscan.cli", "scan", str(model), str(folder), "--out", str(work / "survey")]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    print(f"crackscan scan over a folder of {args.photos} such photos (process start included): "
          f"{seconds:.1f} s = {args.photos / seconds:.2f} photos/s")

    # Memory: one 50-megapixel photo through the CLI, in a child process of its own.
    big = work / "big"
    big.mkdir()
    photo_of_patches(files, rng, width=8192, height=6144).save(big / "photo-50mp.jpg", quality=92)
    started = time.perf_counter()
    # The child reports its own VmHWM: a forked child's ru_maxrss also counts the parent's
    # pages from before exec, which would charge this benchmark's memory to the scan.
    reporter = ("import sys; from crackscan.cli import main; code = main(sys.argv[1:]); "
                "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0], file=sys.stderr); "
                "sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", reporter, "scan", str(model), str(big), "--out", str(work / "big-out")],
                          check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    peak_mb = int(done.stderr.split("VmHWM:")[1].split()[0]) / 1024  # kB
    print(f"crackscan scan of one 8192x6144 (50 MP) photo: {seconds:.1f} s with process start, "
          f"peak memory of the process {peak_mb:.0f} MB")
    print(f"overlay example: {work / 'one-0' / 'overlay.jpg'}")


if __name__ == "__main__":
    main()
