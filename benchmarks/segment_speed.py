"""crackscan-seg's whole-photo scan against crackscan-base's, on the same 12 MP photos, in one run.

Three 4032x3024 JPEGs (quality 92) of real photos at their own scale, side by side:
- DeepCrack's photos (concrete and asphalt, many cracks: about 200 measured on the photo);
- CRACK500's (phone photos of pavement);
- Özgenel's concrete patches, as the other scan benchmarks draw them.

Each model scans each photo as `crackscan scan` does, less process start: read, crack map or
tiles, cracks measured, every output file written. Each figure is the best of --repeats, the
models in turn (the machine may be shared). crackscan-seg is timed three ways:
- as shipped (large windows, runtime.resize);
- with windows of the model's own size, the layout before issue 34 (--window-largest 0);
- its crack map alone and its measuring alone, so the two costs are apart;
- each photo's map with the previous photo's measuring on a thread beside it, against the two
  one after the other: what a folder scan would gain by overlapping them.
Last, the peak memory of `crackscan scan crackscan-seg` on one 50 MP photo of Özgenel patches.

    python benchmarks/segment_speed.py [--repeats 3] [--other-segmenter FILE --results NAME]

Results: results/segment-speed.json (or NAME.json).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import DEFAULT_DATA, photo_of_patches, real_image_files, write_results

PHOTOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "real-photos"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--results", default="segment-speed", help="the results file's name")
    parser.add_argument("--other-segmenter", type=Path,
                        help="a segmenter file timed beside crackscan-seg (a lighter network, say)")
    args = parser.parse_args()

    import crackscan
    from crackscan.images import read_for_shrinking
    from crackscan.measure.options import Measuring
    from crackscan.photo import segment
    from crackscan.runtime.runners import cpu_name

    work = Path(tempfile.mkdtemp(prefix="crackscan-segment-speed-"))
    rng = np.random.default_rng(0)
    sources = {"deepcrack": sorted((PHOTOS / "deepcrack-train" / "images").glob("*.jpg")),
               "crack500": sorted((PHOTOS / "crack500-train" / "images").glob("*.jpg")),
               "ozgenel": real_image_files(args.data)}
    photos = {}
    for name, files in sources.items():
        photos[name] = work / f"{name}.jpg"
        photo_of_patches(files, rng).save(photos[name], quality=92)
    print(f"CPU: {cpu_name()}; three 4032x3024 photos of real photos side by side: {', '.join(photos)}")

    models = {"crackscan-base": crackscan.load("crackscan-base"), "crackscan-seg": crackscan.load("crackscan-seg")}
    if args.other_segmenter:
        models[args.other_segmenter.name] = crackscan.load(args.other_segmenter)
    largest = getattr(segment, "WINDOW_LARGEST", 0)  # code before issue 34 has none
    runs = 0

    def scan_and_write(model: str, photo: Path, window_largest: int) -> float:
        nonlocal runs
        segment.WINDOW_LARGEST = window_largest
        started = time.perf_counter()
        result = crackscan.scan(models[model], photo)
        result.write(work / f"out-{runs}")
        runs += 1
        return time.perf_counter() - started

    ways = {"crackscan-base": ("crackscan-base", largest), "crackscan-seg": ("crackscan-seg", largest),
            "crackscan-seg, model-size windows": ("crackscan-seg", 0)}
    if args.other_segmenter:
        ways[args.other_segmenter.name] = (args.other_segmenter.name, largest)
    for name, photo in photos.items():  # warm-up: interpreters, resized files, page cache
        for model, window in ways.values():
            scan_and_write(model, photo, window)
    times: dict = {way: {name: [] for name in photos} for way in ways}
    for _ in range(args.repeats):
        for name, photo in photos.items():
            for way, (model, window) in ways.items():
                times[way][name].append(scan_and_write(model, photo, window))
    segment.WINDOW_LARGEST = largest

    parts: dict = {"map_s": {}, "measure_s": {}, "cracks": {}}
    seg = models["crackscan-seg"]
    # Each photo decoded and mapped once here, for the parts and for the overlap below.
    pixels_of = {name: read_for_shrinking(photo, None, None)[0] for name, photo in photos.items()}
    maps = {}
    for name, photo in photos.items():
        pixels = pixels_of[name]
        best_map, best_measure = float("inf"), float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            probability = segment.crack_probability_map(seg, pixels)
            best_map = min(best_map, time.perf_counter() - started)
            started = time.perf_counter()
            cracks, _ = Measuring().cracks(probability, photo, 0.5, pixels)
            best_measure = min(best_measure, time.perf_counter() - started)
        parts["map_s"][name], parts["measure_s"][name], parts["cracks"][name] = best_map, best_measure, len(cracks)
        maps[name] = probability

    # Would a folder scan gain by measuring one photo on a thread while the next one's map runs?
    # Both at once against one after the other, for each photo's map beside the previous one's
    # measuring (the runtime releases the GIL; the map already keeps both cores busy).
    import threading

    # The serial figure is the best of --repeats, the overlapped one a single run: if anything,
    # this understates the overlap's gain.
    names = list(photos)
    overlap = {"serial_s": 0.0, "overlapped_s": 0.0}
    for index, name in enumerate(names):
        previous = names[index - 1]

        def measure_previous() -> None:
            Measuring().cracks(maps[previous], photos[previous], 0.5, pixels_of[previous])

        started = time.perf_counter()
        thread = threading.Thread(target=measure_previous)
        thread.start()
        segment.crack_probability_map(seg, pixels_of[name])
        thread.join()
        overlap["overlapped_s"] += time.perf_counter() - started
        overlap["serial_s"] += parts["map_s"][name] + parts["measure_s"][previous]
    print(f"each photo's map beside the previous photo's measuring: {overlap['overlapped_s']:.2f} s at once, "
          f"{overlap['serial_s']:.2f} s one after the other ({overlap['serial_s'] / overlap['overlapped_s']:.2f}x)")

    # Memory: one 50 MP photo of Özgenel patches through the CLI in a child process, which
    # reports its own VmHWM (a forked child's ru_maxrss would count this process's pages).
    big = work / "big"
    big.mkdir()
    photo_of_patches(sources["ozgenel"], rng, width=8192, height=6144).save(big / "photo-50mp.jpg", quality=92)
    reporter = ("import sys; from crackscan.cli import main; code = main(sys.argv[1:]); "
                "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0], file=sys.stderr); "
                "sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", reporter, "scan", "crackscan-seg", str(big), "--out", str(work / "big-out")],
                          check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_mb = int(done.stderr.split("VmHWM:")[1].split()[0]) / 1024  # kB
    print(f"crackscan scan crackscan-seg of one 8192x6144 (50 MP) photo: peak memory {peak_mb:.0f} MB (target under 1,500)")

    best = {way: {name: min(values) for name, values in by_photo.items()} for way, by_photo in times.items()}
    totals = {way: sum(by_photo.values()) for way, by_photo in best.items()}
    base = totals["crackscan-base"]
    print("| photo | crackscan-base | crackscan-seg | seg, model-size windows | seg map | seg measuring | cracks |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in photos:
        print(f"| {name} | {best['crackscan-base'][name]:.2f} s | {best['crackscan-seg'][name]:.2f} s | "
              f"{best['crackscan-seg, model-size windows'][name]:.2f} s | {parts['map_s'][name]:.2f} s | "
              f"{parts['measure_s'][name]:.2f} s | {parts['cracks'][name]} |")
    ratios = {way: total / base for way, total in totals.items()}
    if args.other_segmenter:
        print(f"{args.other_segmenter.name}: {totals[args.other_segmenter.name]:.1f} s = "
              f"{ratios[args.other_segmenter.name]:.2f}x crackscan-base's")
    print(f"three photos: crackscan-seg {totals['crackscan-seg']:.1f} s = {ratios['crackscan-seg']:.2f}x crackscan-base's "
          f"{base:.1f} s (target at most 2x); with model-size windows {ratios['crackscan-seg, model-size windows']:.2f}x; "
          f"large windows {totals['crackscan-seg, model-size windows'] / totals['crackscan-seg']:.2f}x as fast")
    write_results(args.results, {"photos": list(photos), "window_largest_px": largest,
                                 "window_margin_px": getattr(segment, "WINDOW_MARGIN", None), "best_s": best,
                                 "total_s": totals, "over_base": ratios, "seg_parts": parts,
                                 "map_beside_measuring": overlap, "peak_memory_50mp_mb": peak_mb})


if __name__ == "__main__":
    main()
