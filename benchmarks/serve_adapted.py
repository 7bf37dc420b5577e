"""Classify latency of a served run before and after the page's Adapt, in one server.

Trains (or takes) a run, exports it to float LiteRT (what `serve RUN` then runs), starts
`crackscan serve RUN --labels DIR` on 127.0.0.1, and sends classify requests (one real 227 px
patch each, 16 in flight): the parent's figures. Then it labels 25 crack and 25 clear real
patches through /v1/labels, presses Adapt (/v1/adapt: the server now serves the adapted run,
its float LiteRT backbone and NumPy head) and sends the same requests again. Prints req/s,
p50 and p95 of both and the ratio of the p95s.

    python benchmarks/serve_adapted.py [--run RUN] [--data ../shared/data/ozgenel-12k]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import DEFAULT_DATA, patch_bytes, prepare_run, real_image_files, serving
from serve_load import REQUEST_TIMEOUT_S, RUN_DEADLINE_S, report, run_load, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--classify", type=int, default=500)
    parser.add_argument("--labels-per-class", type=int, default=25)
    args = parser.parse_args()

    import httpx

    import crackscan
    from crackscan.runtime.runners import cpu_name

    work = Path(tempfile.mkdtemp(prefix="crackscan-adapted-"))
    run = prepare_run(args.run, args.data, work)
    if not (run / "model.tflite").is_file():
        crackscan.export(run, "litert")
    rng = np.random.default_rng(0)
    patches = patch_bytes(real_image_files(args.data), rng)
    labelled = {name: sorted((args.data / name).iterdir())[-args.labels_per_class:] for name in ("Positive", "Negative")}
    deadline = time.monotonic() + RUN_DEADLINE_S
    with serving(run, "--labels", str(work / "labels")) as (base, _), httpx.Client(
            base_url=base, timeout=REQUEST_TIMEOUT_S,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32)) as client:

        def classify(i: int) -> tuple[float, bool]:
            return timed(lambda: client.post(
                "/v1/classify", files={"files": (f"{i}.jpg", patches[i % len(patches)], "image/jpeg")}), deadline)

        def measure(name: str) -> float:
            client.post("/v1/classify", files={"files": ("warm.jpg", patches[0], "image/jpeg")})
            measured = run_load(classify, args.classify, 16)
            report(name, measured)
            latencies = sorted(t for t, ok in measured[0] if ok)
            return latencies[int(0.95 * (len(latencies) - 1))]

        print(f"server on {base}, 2 cores shared with this client; CPU: {cpu_name()}")
        print(f"parent: {client.get('/health').json()['model']}")
        parent_p95 = measure("classify, parent")
        for name, files in labelled.items():
            for path in files:
                box = [{"x": 0, "y": 0, "width": 227, "height": 227, "label": name}]
                answer = client.post("/v1/labels", files={"file": (path.name, path.read_bytes(), "image/jpeg")},
                                     data={"labels": json.dumps(box)})
                answer.raise_for_status()
        started = time.perf_counter()
        adapted = client.post("/v1/adapt", timeout=600)
        adapted.raise_for_status()
        print(f"adapted in {time.perf_counter() - started:.1f} s: serving {adapted.json()['model']} "
              f"({client.get('/health').json()['format']})")
        adapted_p95 = measure("classify, adapted")
        print(f"p95 adapted / parent: {adapted_p95 / parent_p95:.2f}x (target: at most 1.3x)")


if __name__ == "__main__":
    main()
