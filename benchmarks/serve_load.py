"""Load on `crackscan serve` over loopback: classify and scan requests, concurrent.

Starts the server on 127.0.0.1 with the int8 LiteRT model, sends 500 classify requests
(one real 227 px patch each) with 16 in flight, then 50 scan requests (a 4032x3024 photo
built from real patches) with 4 in flight, and prints throughput, p50 / p95 latency and
the error count of each. Every request has a timeout and the whole run a deadline.

    python benchmarks/serve_load.py [--run RUN] [--data ../shared/data/ozgenel-12k]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from common import DEFAULT_DATA, int8_model, patch_bytes, photo_jpeg, real_image_files, serving

REQUEST_TIMEOUT_S = 60
RUN_DEADLINE_S = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--classify", type=int, default=500)
    parser.add_argument("--scans", type=int, default=50)
    args = parser.parse_args()

    import httpx

    work = Path(tempfile.mkdtemp(prefix="crackscan-load-"))
    model = int8_model(args.run, args.data, work)
    files = real_image_files(args.data)
    rng = np.random.default_rng(0)
    patches = patch_bytes(files, rng)
    photo_bytes = photo_jpeg(files, rng)

    deadline = time.monotonic() + RUN_DEADLINE_S
    with serving(model) as (base, _), httpx.Client(
            base_url=base, timeout=REQUEST_TIMEOUT_S,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32)) as client:
        client.post("/v1/classify", files={"files": ("warm.jpg", patches[0], "image/jpeg")})

        def classify(i: int) -> tuple[float, bool]:
            return timed(lambda: client.post(
                "/v1/classify", files={"files": (f"{i}.jpg", patches[i % len(patches)], "image/jpeg")}), deadline)

        def scan(i: int) -> tuple[float, bool]:
            return timed(lambda: client.post(
                "/v1/scan", files={"file": (f"photo{i}.jpg", photo_bytes, "image/jpeg")}), deadline)

        print(f"server: int8 LiteRT on {base}, 2 cores shared with this client")
        report("classify (1 patch)", run_load(classify, args.classify, 16))
        report("scan (4032x3024 photo)", run_load(scan, args.scans, 4))


def timed(send, deadline: float) -> tuple[float, bool]:
    if time.monotonic() > deadline:
        return 0.0, False
    started = time.perf_counter()
    try:
        ok = send().status_code == 200
    except Exception:
        ok = False
    return time.perf_counter() - started, ok


def run_load(request, count: int, in_flight: int) -> tuple[list[tuple[float, bool]], float]:
    started = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        outcomes = list(pool.map(request, range(count)))
    return outcomes, time.perf_counter() - started


def report(name: str, measured: tuple[list[tuple[float, bool]], float]) -> None:
    outcomes, seconds = measured
    latencies = sorted(1000 * t for t, ok in outcomes if ok)
    errors = sum(not ok for _, ok in outcomes)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
    print(f"{name:<24} {len(outcomes)} requests in {seconds:.1f} s = {len(outcomes) / seconds:.1f} req/s; "
          f"p50 {p50:.0f} ms, p95 {p95:.0f} ms; errors {errors}")


if __name__ == "__main__":
    main()
