"""A trained run and an adapted run scan as fast as the built-in they compete with.

`crackscan scan RUN` runs a run folder through its fastest checked runtime without an export
(see `crackscan.load(..., fastest=True)`). This benchmark times `crackscan scan` (the CLI,
process start included) over one folder of 12 MP photos with:

- crackscan-base, the built-in (int8 LiteRT);
- a trained run (default settings, the same architecture as crackscan-base, trained here on
  3,000 real images unless --run is given), which train wrote with a checked int8 backbone
  where it passed its check;
- an adapted run (`crackscan adapt crackscan-base` on 25 + 25 tiles labelled from
  road-asphalt's masks).

The three are timed in turns, --rounds times, and the ratio of each run's median to
crackscan-base's median is printed with the runtime each scan said it used.

    python benchmarks/run_scan_speed.py [--run RUN] [--photos 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from common import DEFAULT_DATA, folder_of_photos, prepare_run

ROOT = Path(__file__).resolve().parent.parent
ROAD = ROOT.parent / "shared" / "data" / "real-photos" / "road-asphalt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--run", type=Path, help="a trained run (default: train one on 3,000 real images)")
    parser.add_argument("--per-class", type=int, default=1500, help="images of each class the run trains on")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from crackscan.runtime.runners import cpu_name

    print(f"CPU: {cpu_name()}")
    work = Path(tempfile.mkdtemp(prefix="crackscan-run-scan-"))
    trained = prepare_run(args.run, args.data, work, per_class=args.per_class)
    labels = work / "labels"
    _cli("label", ROAD / "images", "--masks", ROAD / "masks", "--out", labels, "--per-class", 25, "--seed", 0)
    adapted = work / "adapted"
    _cli("adapt", "crackscan-base", labels, "--out", adapted)

    folder, files, rng = folder_of_photos(args.data, work / "photos", args.photos)
    import json

    for name, run in (("trained run", trained), ("adapted run", adapted)):
        int8 = json.loads((Path(run) / "metrics.json").read_text()).get("int8_backbone") or {}
        print(f"{name}: int8 backbone {int8.get('file') or 'not kept: ' + str(int8.get('why_not'))}")

    models = {"crackscan-base": "crackscan-base", "trained run": trained, "adapted run": adapted}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    runtimes: dict[str, str] = {}
    for turn in range(args.rounds):
        for name, model in models.items():
            out = work / f"scan-{turn}-{name.replace(' ', '-')}"
            started = time.perf_counter()
            said = _cli("scan", model, folder, "--out", out)
            seconds[name].append(time.perf_counter() - started)
            runtimes[name] = next((line[len("crackscan: using "):].split(":")[0] for line in said.splitlines()
                                  if line.startswith("crackscan: using ")), "the file as given")
    base = statistics.median(seconds["crackscan-base"])
    print(f"\n{args.photos} photos of 4032x3024 px, `crackscan scan` (process start included), median of {args.rounds}")
    print("| model | runtime the scan named | s | photos/s | speed vs crackscan-base |")
    print("|---|---|---:|---:|---:|")
    for name in models:
        median = statistics.median(seconds[name])
        print(f"| {name} | {runtimes[name]} | {median:.1f} | {args.photos / median:.2f} | {base / median:.2f}x |")


def _cli(*command) -> str:
    done = subprocess.run([sys.executable, "-m", "crackscan.cli", *map(str, command)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"crackscan {command[0]} failed: {done.stderr.strip()}")
    return done.stdout + done.stderr


if __name__ == "__main__":
    main()
