"""Survey speed: the local engine against Ray Data (a local Ray on this machine's cores), on
the same photos, in one run.

40 photos of 4032x3024 (the size the Özgenel patches were cut from), tiled with real
patches and saved as JPEG, are scanned into a fresh folder by each engine in turn, over
rounds (medians reported), with the same model: photos/s each and Ray's ratio to local
(target: at least 0.8x). Ray's start (ray.init, a few seconds, once per survey) is
measured apart from the survey itself, and both figures are printed. Memory: the peak
resident set (VmHWM) of each Ray worker process and of the local engine's process.

    python benchmarks/survey_speed.py [--model crackscan-base] [--photos 40] [--rounds 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from common import DEFAULT_DATA, photo_of_patches, real_image_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crackscan-base", help="a LiteRT or ONNX model, or a built-in name")
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()

    import ray

    from crackscan.runtime.runners import cpu_name, cpu_threads
    from crackscan.survey.driver import scan_many

    work = Path(tempfile.mkdtemp(prefix="crackscan-survey-"))
    photos = work / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    files = real_image_files(args.data)
    for i in range(args.photos):
        photo_of_patches(files, rng).save(photos / f"site-{i:03d}.jpg", quality=90)
    print(f"CPU: {cpu_name()}; model {args.model}; {args.photos} photos of 4032x3024 in {photos}")

    started = time.perf_counter()
    ray.init(address="local", num_cpus=cpu_threads(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray_start = time.perf_counter() - started
    print(f"Ray started in {ray_start:.1f} s (once per survey; not in the figures below)")

    speeds: dict[str, list[float]] = {"local": [], "ray": []}
    worker_peaks: list[int] = []
    for round_number in range(args.rounds):
        for engine in ("local", "ray"):
            out = work / f"out-{engine}-{round_number}"
            watcher = WorkerMemory() if engine == "ray" else None
            started = time.perf_counter()
            outcome = scan_many(args.model, [photos], out, engine=engine)
            seconds = time.perf_counter() - started
            if watcher is not None:
                worker_peaks.extend(watcher.stop())
            assert len(outcome.scanned) == args.photos and not outcome.failed
            speeds[engine].append(args.photos / seconds)
            print(f"   round {round_number + 1}, {engine:5s}: {seconds:6.1f} s = {args.photos / seconds:.2f} photos/s",
                  flush=True)
            shutil.rmtree(out)
    ray.shutdown()

    local, on_ray = statistics.median(speeds["local"]), statistics.median(speeds["ray"])
    print("\n| engine | photos/s (median) | x local |")
    print("|---|---:|---:|")
    print(f"| local | {local:.2f} | 1.00 |")
    print(f"| Ray Data, {cpu_threads()} workers | {on_ray:.2f} | {on_ray / local:.2f} |")
    print(f"Ray / local: {on_ray / local:.2f}x (target >= 0.8x); with Ray's start counted on one survey of "
          f"{args.photos} photos: {args.photos / (args.photos / on_ray + ray_start) / local:.2f}x")
    if worker_peaks:
        print(f"peak memory per Ray worker (VmHWM): {max(worker_peaks) / 1024:.0f} MB at most, "
              f"{statistics.median(worker_peaks) / 1024:.0f} MB median over {len(worker_peaks)} workers")
    print(f"peak memory of this process (driver and local engine): {peak_rss_kb() / 1024:.0f} MB")
    shutil.rmtree(work)


class WorkerMemory:
    """Samples the survey's worker processes while they run; their peak resident sets (KiB)."""

    def __init__(self) -> None:
        self.peaks: dict[int, int] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            for pid in _worker_pids():
                peak = _status_kb(pid, "VmHWM")
                if peak:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), peak)

    def stop(self) -> list[int]:
        self._done.set()
        self._thread.join()
        return list(self.peaks.values())


def _worker_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if "SurveyWorker" in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_kb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
