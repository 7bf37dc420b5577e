"""Inference speed of every model format on the same real images, against Keras.

Trains a model (or takes --run), exports LiteRT and ONNX, float and int8, then prints for
each: images/s at batch 32 on pre-decoded pixels, median single-image latency, and the
ratio to Keras; then `crackscan predict` end to end (decoding included) over a folder of
10,000 JPEGs with the int8 LiteRT model.

    python benchmarks/inference_speed.py [--run RUN] [--data ../shared/data/ozgenel-12k]
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

from common import DEFAULT_DATA, prepare_run, real_image_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--run", type=Path, help="a run folder to use instead of training one")
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput time per format, over all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="turns each format takes")
    parser.add_argument("--folder-images", type=int, default=10_000)
    args = parser.parse_args()

    import crackscan
    from crackscan.images import load_for_model
    from crackscan.export import export
    from crackscan.model.formats import FORMAT_TABLE

    work = Path(tempfile.mkdtemp(prefix="crackscan-infer-"))
    run_dir = prepare_run(args.run, args.data, work)
    models = {"Keras": run_dir / "model.keras"}
    for fmt, int8, name in (("litert", False, "LiteRT float"), ("litert", True, "LiteRT int8"),
                            ("onnx", False, "ONNX float"), ("onnx", True, "ONNX int8")):
        result = export(run_dir, fmt, int8=int8, out=work / f"model{'.int8' if int8 else ''}{FORMAT_TABLE[fmt].suffix}")
        models[name] = result.path
        print(f"exported {name}: label agreement {result.check['label_agreement']:.2%}, accuracy change "
              f"{result.check['accuracy_change_points']:+.2f} points on {result.check['images']} images", flush=True)

    files = sorted((args.data / "Positive").iterdir())[:512] + sorted((args.data / "Negative").iterdir())[:512]
    pixels = np.stack([load_for_model(p, 160) for p in files])
    # Formats take turns over several rounds and each reports its median, so a slow spell
    # of this shared machine lands on all of them rather than on whichever ran then.
    batched = {name: crackscan.load(path, batch_size=32) for name, path in models.items()}
    single = {name: crackscan.load(path, batch_size=1) for name, path in models.items()}
    for name in models:  # warm-up: tracing, allocation
        batched[name].probabilities(pixels[:64])
        single[name].probabilities(pixels[:1])
    rates: dict[str, list[float]] = {name: [] for name in models}
    latencies: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name in models:
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < args.seconds / args.rounds:
                batched[name].probabilities(pixels)
                done += len(pixels)
            rates[name].append(done / (time.perf_counter() - started))
            for i in range(200 // args.rounds):
                tick = time.perf_counter()
                single[name].probabilities(pixels[i : i + 1])
                latencies[name].append(time.perf_counter() - tick)
    rows = [(name, statistics.median(rates[name]), 1000 * statistics.median(latencies[name])) for name in models]
    keras_rate = rows[0][1]
    print(f"\n{'model':<14}{'images/s (batch 32)':>21}{'x Keras':>9}{'latency ms (1 image)':>22}")
    for name, rate, latency in rows:
        print(f"{name:<14}{rate:>21.0f}{rate / keras_rate:>9.2f}{latency:>22.2f}")

    folder = work / "folder"
    folder.mkdir()
    sources = real_image_files(args.data)
    for i in range(args.folder_images):
        (folder / f"{i:05d}.jpg").symlink_to(sources[i % len(sources)].resolve())
    command = [sys.executable, "-m", "crackscan.cli", "predict", str(models["LiteRT int8"]), str(folder), "--format", "csv"]
    started = time.perf_counter()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - started
    count = len(output.splitlines()) - 1
    print(f"\ncrackscan predict, int8 LiteRT, folder of {count} JPEGs, end to end (process start, decoding, "
          f"inference, CSV): {seconds:.1f} s = {count / seconds:.0f} images/s")


if __name__ == "__main__":
    main()
