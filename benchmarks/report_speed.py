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
    parser.add_argument("--photo-size", type=int, default=768, help="the photos' long side, px")
    parser.add_argument("--from", dest="source", type=Path,
                        help="real photos instead of synthetic ones: the first --photos of this folder by name, "
                             "resized to --photo-size (e.g. ../shared/data/real-photos/deepcrack-train/images)")
    args = parser.parse_args()

    from crackscan import synth
    from crackscan.runtime.runners import cpu_name

    print(f"CPU: {cpu_name()}")
    work = Path(tempfile.mkdtemp(prefix="crackscan-report-"))
    if args.source:
        from PIL import Image

        (work / "photos" / "images").mkdir(parents=True)
        for path in sorted(p for p in args.source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:args.photos]:
            with Image.open(path) as image:
                scale = args.photo_size / max(image.size)
                image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)),
                                            Image.Resampling.BICUBIC).save(work / "photos" / "images" / f"{path.stem}.jpg",
                                                                         quality=92)
    else:
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
            # A survey names each result folder relative to itself (older ones: as given at scan time).
            folder.symlink_to((work / "scans" / row["outputs"]).resolve(), target_is_directory=True)
            listed.append({**row, "outputs": folder.name, "photo": f"c{copy:03d}/{row['photo']}"})
    with open(big / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(listed)
    (big / "survey.json").write_text((work / "scans" / "survey.json").read_text())
    from crackscan.report.survey_data import read_survey

    unread = read_survey(big).unreadable
    if unread:  # a report of unreadable results times nothing
        raise SystemExit(f"{len(unread)} of the {len(listed)} photos' results cannot be read: {unread[0]}")
    started = time.perf_counter()
    command = [sys.executable, "-m", "crackscan.cli", "report", str(big), "--out", str(work / "report")]
    subprocess.run(command + (["--pdf"] if args.pdf else []), check=True, capture_output=True)
    report_s = time.perf_counter() - started
    survey_s = scan_s * len(listed) / len(rows)
    print(f"scan of {len(rows)} {'photos from ' + str(args.source) if args.source else 'synthetic photos'} of "
          f"{args.photo_size} px on their long side with crackscan-seg: {scan_s:.1f} s "
          f"-> {len(listed)} photos: {survey_s:.0f} s")
    print(f"crackscan report of the {len(listed)}-photo survey{' with --pdf' if args.pdf else ''}: {report_s:.1f} s = "
          f"{100 * report_s / survey_s:.1f}% of the survey's scan time (target under 10%)")
    if args.pdf:  # the PDF's own share: the same report without it, timed in the same run
        started = time.perf_counter()
        subprocess.run([*command[:-1], str(work / "report-html")], check=True, capture_output=True)
        pdf_s = report_s - (time.perf_counter() - started)
        print(f"the PDF alone: {pdf_s:.1f} s = {pdf_s / survey_s:.2f}x the survey's scan time (target 0.25x)")
        pdf = work / "report" / "report.pdf"
        with_cracks = sum(1 for row in rows if row.get("cracks") not in (None, "", "0"))
        print(f"report.pdf: {pdf.stat().st_size / 1e6:.2f} MB, {with_cracks} of {len(rows)} photos with cracks")


if __name__ == "__main__":
    main()
