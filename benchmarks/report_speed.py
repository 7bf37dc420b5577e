"""The report of a 1,000-photo survey against the survey's own scan time.

Scans --photos real-size synthetic photos (1024x768, concrete with drawn cracks) with
crackscan-seg (`crackscan scan`, process start included), then makes a 1,000-photo survey folder
from those results (each photo's result folder linked under --copies names, summary.csv listing
them all: the files a real survey of that size holds), and times `crackscan report` (HTML and
GeoJSON; --pdf too with --pdf) on it. The survey's scan time is the measured scan scaled to
1,000 photos.

    python benchmarks/report_speed.py [--photos 50] [--copies 20] [--pdf] [--photo-size 768]

With --pdf the PDF's size is printed too (target: 5 MB for a 93-photo survey).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=50)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--pdf", action="store_true")
    parser.add_argument("--photo-size", type=int, default=768, help="the synthetic photos' side, px")
    args = parser.parse_args()

    from crackscan import synth
    from crackscan.runtime.runners import cpu_name

    print(f"CPU: {cpu_name()}")
    work = Path(tempfile.mkdtemp(prefix="crackscan-report-"))
    synth.make_mask_set(work / "photos", photos=args.photos, size=args.photo_size, seed=2)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "crackscan.cli", "scan", "crackscan-seg", str(work / "photos" / "images"),
                    "--out", str(work / "scans"), "--mm-per-pixel", "0.1"], check=True, capture_output=True)
    scan_s = time.perf_counter() - started

    big = work / "big"
    big.mkdir()
    rows = list(csv.DictReader(open(work / "scans" / "summary.csv", newline="")))
    listed = []
    for copy in range(args.copies):
        for row in rows:
            folder = big / f"c{copy:03d}-{Path(row['outputs']).name}"
            folder.symlink_to(Path(row["outputs"]).resolve(), target_is_directory=True)
            listed.append({**row, "outputs": str(folder), "photo": f"c{copy:03d}/{row['photo']}"})
    with open(big / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(listed)
    (big / "survey.json").write_text((work / "scans" / "survey.json").read_text())
    started = time.perf_counter()
    command = [sys.executable, "-m", "crackscan.cli", "report", str(big), "--out", str(work / "report")]
    subprocess.run(command + (["--pdf"] if args.pdf else []), check=True, capture_output=True)
    report_s = time.perf_counter() - started
    survey_s = scan_s * len(listed) / len(rows)
    print(f"scan of {len(rows)} photos of {args.photo_size}x{args.photo_size} px with crackscan-seg: {scan_s:.1f} s "
          f"-> {len(listed)} photos: {survey_s:.0f} s")
    print(f"crackscan report of the {len(listed)}-photo survey{' with --pdf' if args.pdf else ''}: {report_s:.1f} s = "
          f"{100 * report_s / survey_s:.1f}% of the survey's scan time (target under 10%)")
    if args.pdf:
        pdf = work / "report" / "report.pdf"
        print(f"report.pdf: {pdf.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
