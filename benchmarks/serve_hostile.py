"""`crackscan serve` under load with a hostile mix running at the same time.

Starts the server on 127.0.0.1 (int8 LiteRT model, default limits) and measures classify
requests (one real 227 px patch each, 16 in flight) twice in the same run: alone, and
while hostile clients send, without pause:

- decompression bombs: greyscale PNGs of ~140 KB that decode to 12000x12000 px (over the
  per-image limit) and 9500x9500 px (just under it, so they are decoded);
- six bombs in one request;
- scans asking for 44,944 tiles of one patch (tile 16, stride 1);
- chunked uploads of 40 MB with no Content-Length;
- half-sent requests (headers or body never finished), 40 at a time, held open;
- scans of a 12 MP photo whose client leaves after 0.3 s.

Prints classify throughput and p50/p95 alone and under the mix, the p95 ratio, errors on
the well-formed requests, what the hostile requests got, and the server's peak memory
(VmHWM of its process). Every request has a timeout, every loop a count, the run a deadline.

    python benchmarks/serve_hostile.py [--run RUN] [--data ../shared/data/ozgenel-12k]
"""

from __future__ import annotations

import argparse
import collections
import io
import multiprocessing
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common import DEFAULT_DATA, int8_model, patch_bytes, photo_jpeg, real_image_files, serving
from serve_load import REQUEST_TIMEOUT_S, report, run_load, timed

RUN_DEADLINE_S = 900
HOSTILE_ROUNDS = 400  # upper bound per hostile client; they stop when the measured load ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--classify", type=int, default=600)
    args = parser.parse_args()

    import httpx

    work = Path(tempfile.mkdtemp(prefix="crackscan-hostile-"))
    model = int8_model(args.run, args.data, work)
    files = real_image_files(args.data)
    rng = np.random.default_rng(0)
    patches = patch_bytes(files, rng)
    payloads = {
        "bomb over limit": grey_png(12000, 12000),
        "bomb under limit": grey_png(9500, 9500),
        "patch": patches[0],
        "photo": photo_jpeg(files, rng, 4000, 3000),
    }
    print("hostile payloads: " + ", ".join(f"{k} {len(v) / 1024:.0f} KB" for k, v in payloads.items()))

    deadline = time.monotonic() + RUN_DEADLINE_S
    with serving(model) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S,
                          limits=httpx.Limits(max_connections=32, max_keepalive_connections=32)) as client:
            print("limits:", client.get("/health").json()["limits"])
            client.post("/v1/classify", files={"files": ("warm.jpg", patches[0], "image/jpeg")})

            def classify(i: int) -> tuple[float, bool]:
                return timed(lambda: client.post(
                    "/v1/classify", files={"files": (f"{i}.jpg", patches[i % len(patches)], "image/jpeg")}), deadline)

            print(f"server: int8 LiteRT on {base}, 2 cores shared with this client")
            cpu_before = cpu_seconds(server.pid)
            baseline = run_load(classify, args.classify, 16)
            cpu_alone = cpu_seconds(server.pid) - cpu_before
            report("classify alone", baseline)
            resting_rss = vm_kb(server.pid, "VmRSS")

            # The attackers are a process of their own, as they would be: in this one their
            # threads would compete with the measuring client for its GIL, not for the server.
            spawn = multiprocessing.get_context("spawn")
            stop, results = spawn.Event(), spawn.Queue()
            attackers = spawn.Process(target=attack, args=(base, port, payloads, stop, results))
            attackers.start()
            time.sleep(3)  # let the mix get going before measuring
            cpu_before = cpu_seconds(server.pid), cpu_seconds(attackers.pid)
            under_attack = run_load(classify, args.classify, 16)
            cpu_mix = cpu_seconds(server.pid) - cpu_before[0], cpu_seconds(attackers.pid) - cpu_before[1]
            stop.set()
            answers = results.get(timeout=120)
            attackers.join(timeout=60)
            report("classify under the mix", under_attack)
            health = client.get("/health").status_code
        peak = vm_kb(server.pid, "VmHWM")

    p95 = [percentile(m, 95) for m in (baseline, under_attack)]
    errors = sum(not ok for _, ok in under_attack[0])
    print(f"classify p95: {p95[0]:.0f} ms alone, {p95[1]:.0f} ms under the mix = {p95[1] / p95[0]:.2f}x "
          f"(target <= 2x); errors on well-formed requests under the mix: {errors} (target 0)")
    print(f"CPU seconds: server {cpu_alone:.1f} over {baseline[1]:.1f} s alone; under the mix server "
          f"{cpu_mix[0]:.1f} and attackers {cpu_mix[1]:.1f} over {under_attack[1]:.1f} s (2 cores)")
    print("hostile requests answered: " + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())))
    print(f"server memory: {resting_rss / 1024:.0f} MB after the plain load, peak {peak / 1024:.0f} MB for the whole "
          f"run (VmHWM; target < 1,536 MB); /health after the mix: {health}")


def grey_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 0).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def percentile(measured, q: float) -> float:
    latencies = sorted(1000 * t for t, ok in measured[0] if ok)
    return latencies[int(q / 100 * (len(latencies) - 1))]


def attack(base: str, port: int, payloads: dict, stop: Any, results: Any) -> None:
    """Runs every attack in its own thread until ``stop``; puts the answers' tally on ``results``."""
    answers: collections.Counter = collections.Counter()
    threads = [threading.Thread(target=attacker, args=(name, base, port, payloads, stop, answers), daemon=True)
               for name in ATTACKS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    results.put(answers)


def attacker(name: str, base: str, port: int, payloads: dict, stop: Any, answers) -> None:
    import httpx

    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
        for _ in range(HOSTILE_ROUNDS):
            if stop.is_set():
                return
            try:
                outcome = ATTACKS[name](client, port, payloads)
            except httpx.HTTPError as error:
                outcome = type(error).__name__
            answers[f"{name} -> {outcome}"] += 1


def _bomb_over(client, port, payloads):
    return client.post("/v1/classify", files={"files": ("b.png", payloads["bomb over limit"], "image/png")}).status_code


def _bomb_under(client, port, payloads):
    return client.post("/v1/scan?overlay=false",
                       files={"file": ("b.png", payloads["bomb under limit"], "image/png")}).status_code


def _six_bombs(client, port, payloads):
    files = [("files", (f"{i}.png", payloads["bomb under limit"], "image/png")) for i in range(6)]
    return client.post("/v1/classify", files=files).status_code


def _tile_flood(client, port, payloads):
    return client.post("/v1/scan?tile=16&stride=1", files={"file": ("p.jpg", payloads["patch"], "image/jpeg")}).status_code


def _chunked(client, port, payloads):
    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n\r\n'
        for _ in range(640):
            yield b"\0" * 65536

    return client.post("/v1/classify", content=body(),
                       headers={"content-type": "multipart/form-data; boundary=b"}).status_code


def _half_sent(client, port, payloads):
    sockets = []
    try:
        for i in range(40):
            held = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\n" if i % 2 else
                         b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 9000\r\n\r\n--b\r\n")
            sockets.append(held)
        time.sleep(3)
        ended = 0
        for held in sockets:
            held.settimeout(20)
            try:
                held.recv(1024)  # b"" (closed) or a 408 answer: either way the server ended it
                ended += 1
            except socket.timeout:
                pass
            except OSError:
                ended += 1
        return f"{ended} of 40 ended by the server"
    finally:
        for held in sockets:
            held.close()


def _leaving_scan(client, port, payloads):
    photo = payloads["photo"]
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
            + photo + b"\r\n--b--\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
        held.sendall(b"POST /v1/scan HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.3)
    return "left"


ATTACKS = {"bomb over limit": _bomb_over, "bomb under limit": _bomb_under, "six bombs": _six_bombs,
           "tile flood": _tile_flood, "chunked 40 MB": _chunked, "half-sent x40": _half_sent,
           "scan, client leaves": _leaving_scan}


if __name__ == "__main__":
    main()
