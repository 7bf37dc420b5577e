"""crackscan-seg's crack probability map of a 12 MP photo, its windows in batches of one size
against another, and crackscan-base's scan of the same photo, all in one run (ratios).

The photo is a held-out DeepCrack photo resized to 4032x3024. Each figure is the best of
--repeats runs (the machine may be shared).

    python benchmarks/segment_speed.py [--batches 8 32] [--repeats 3]

Results: results/segment-speed.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common import write_results

PHOTOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "real-photos"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from PIL import Image

    import crackscan
    from crackscan.photo.segment import crack_probability_map, tile_origins
    from crackscan.runtime.runners import cpu_name

    source = sorted((PHOTOS / "deepcrack-train" / "images").glob("*.jpg"))[0]
    pixels = np.asarray(Image.open(source).convert("RGB").resize((4032, 3024), Image.Resampling.BILINEAR))
    segmenter = crackscan.load("crackscan-seg")
    base = crackscan.load("crackscan-base")
    size = segmenter.input_size
    print(f"CPU: {cpu_name()}; {source.name} at 4032x3024; crackscan-seg runner batch {segmenter.batch_size}")

    def best(work) -> float:
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return min(times)

    base_s = best(lambda: crackscan.scan(base, pixels, keep_image=False))
    figures = {"cpu": cpu_name(), "photo": source.name, "base_scan_s": base_s, "batches": {}}
    reference = None
    for batch in args.batches:
        seconds = best(lambda: crack_probability_map(segmenter, pixels, batch_size=batch))
        probability = crack_probability_map(segmenter, pixels, batch_size=batch)
        same = reference is None or float(np.abs(probability - reference).max())
        reference = probability if reference is None else reference
        figures["batches"][batch] = {"map_s": seconds, "over_base_scan": seconds / base_s,
                                     "max_difference_from_first": 0.0 if same is True else same}
        print(f"windows in batches of {batch}: probability map {seconds:.2f} s = {seconds / base_s:.2f}x crackscan-base's "
              f"whole scan ({base_s:.2f} s); largest difference from the first batch size: "
              f"{figures['batches'][batch]['max_difference_from_first']:.2g}", flush=True)
    first, last = args.batches[0], args.batches[-1]
    print(f"batch {last} against {first}: {figures['batches'][first]['map_s'] / figures['batches'][last]['map_s']:.2f}x "
          f"as fast ({len(tile_origins(3024 + 16, size, size - size // 4)) * len(tile_origins(4032 + 16, size, size - size // 4))} windows)")
    write_results("segment-speed", figures)


if __name__ == "__main__":
    main()
