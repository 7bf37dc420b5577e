"""The README's first hour, as written: the Quick start's commands typed literally, with its
relative paths, in a fresh working directory; its install line names what they need; and
`make demo`'s command (slow tier) ends in a report that lists every photo."""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from crackscan import synth

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# What a command needs beyond the base install, by the words it is typed with.
NEEDS = {"--report": "jinja2", "serve": "fastapi", "--pdf": "weasyprint", "--engine ray": "ray"}


def quick_start_block() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Quick start"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def _command(line: str) -> str:
    return line.split("  #")[0].split(" # ")[0].strip()


def _environment() -> dict[str, str]:
    """The shell a user has after the install: crackscan on PATH, nothing of this test's own."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _report_rows(survey: Path) -> list[dict[str, str]]:
    with open(survey / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def check_report_lists_every_photo(survey: Path, photos: int) -> None:
    """The report's header and summary against summary.csv and cracks.csv: every photo listed,
    the photos-with-cracks count the same in all three."""
    page = (survey / "report" / "index.html").read_text()
    assert re.search(r'id="photo-count">\s*(\d+)', page).group(1) == str(photos)
    with_findings = re.search(r'id="with-findings">\s*(\d+) of (\d+) scanned', page)
    assert with_findings.group(2) == str(photos), with_findings.group(0)
    rows = _report_rows(survey)
    assert len(rows) == photos and not any(r["problem"] for r in rows)
    cracked = sum(r["verdict"] == "crack" for r in rows)
    measured = 0
    for row in rows:
        cracks_csv = survey / row["outputs"] / "cracks.csv"
        if cracks_csv.is_file():
            with open(cracks_csv, newline="") as handle:
                has = any(True for _ in csv.DictReader(handle))
            assert has == (row["verdict"] == "crack"), row["photo"]
            measured += has
    assert int(with_findings.group(1)) == cracked
    if any((survey / r["outputs"] / "cracks.csv").is_file() for r in rows):
        assert measured == cracked
    assert "is unreadable" not in page


def test_the_install_line_installs_what_the_commands_need():
    lines = quick_start_block()
    install = next(line for line in lines if line.startswith("pip install"))
    extras = re.search(r"\.\[([^\]]*)\]", install).group(1).split(",")
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = " ".join(" ".join(optional[e]) for e in extras)
    commands = " ".join(_command(line) for line in lines if line.startswith("crackscan"))
    for words, package in NEEDS.items():
        if words in commands:
            assert package in installed, f"the Quick start uses {words!r}, which needs {package}, not in {extras}"


def test_the_quick_start_runs_as_written(tmp_path: Path):
    """Every crackscan line of the Quick start, as typed, in a new working directory holding
    my-photos/: the relative --out gives a report of every photo."""
    work = tmp_path / "work"
    synth.make_mask_set(tmp_path / "made", photos=5, size=320, seed=7)
    shutil.copytree(tmp_path / "made" / "images", work / "my-photos")
    photos = len(list((work / "my-photos").iterdir()))
    reported = []
    for line in quick_start_block():
        if not line.startswith("crackscan"):
            continue
        done = subprocess.run(_command(line), shell=True, cwd=work, env=_environment(), capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
        words = shlex.split(_command(line))
        if "--report" in words:
            reported.append(work / words[words.index("--out") + 1])
    assert reported, "the Quick start shows no report"
    for survey in reported:
        check_report_lists_every_photo(survey, photos)


def test_a_survey_moved_and_copied_reports_its_own_results(tmp_path: Path):
    work = tmp_path / "work"
    synth.make_mask_set(tmp_path / "made", photos=4, size=288, seed=3)
    shutil.copytree(tmp_path / "made" / "images", work / "photos")
    done = subprocess.run(["crackscan", "scan", "crackscan-seg", "photos", "--out", "scans", "--report"], cwd=work,
                          env=_environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "report of 4 photos" in done.stdout
    shutil.copytree(work / "scans", tmp_path / "copy")
    (work / "scans").rename(tmp_path / "moved")
    (tmp_path / "copy" / "001.png" / "summary.json").unlink()  # the copy's own damage must show in its own report
    for survey, expected in ((tmp_path / "moved", 4), (tmp_path / "copy", 3)):
        done = subprocess.run(["crackscan", "report", str(survey), "--force"], cwd=tmp_path, env=_environment(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"report of {expected} photos" in done.stdout, (survey, done.stdout)


def test_a_survey_written_with_paths_as_given_at_scan_time_is_still_read(tmp_path: Path):
    """Before 0.2 summary.csv named each result folder as given at scan time (scans/001.png,
    relative to that working directory, or absolute): such a survey still reports every photo."""
    from crackscan.report.survey_data import read_survey

    work = tmp_path / "work"
    synth.make_mask_set(tmp_path / "made", photos=3, size=256, seed=5)
    shutil.copytree(tmp_path / "made" / "images", work / "photos")
    done = subprocess.run(["crackscan", "scan", "crackscan-seg", "photos", "--out", "scans"], cwd=work,
                          env=_environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    listing = work / "scans" / "summary.csv"
    rows = _report_rows(work / "scans")
    for index, row in enumerate(rows):
        row["outputs"] = f"scans/{row['outputs']}" if index else str((work / "scans" / row["outputs"]).resolve())
    with open(listing, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (work / "scans").rename(tmp_path / "elsewhere")
    data = read_survey(tmp_path / "elsewhere")
    assert len(data.photos) == 3 and not data.unreadable
    assert all(str(p.overlay).startswith(str(tmp_path / "elsewhere")) for p in data.photos)


@pytest.mark.slow
def test_make_demo_s_command_ends_in_a_report_of_every_photo(tmp_path: Path):
    """What `make demo` runs (its recipe's command), in a new working directory."""
    recipe = re.search(r"^demo:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    command = recipe.replace("$(BIN)/", "")
    done = subprocess.run(command, shell=True, cwd=tmp_path, env=_environment(), capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    check_report_lists_every_photo(tmp_path / "crackscan-demo" / "survey", 6)
