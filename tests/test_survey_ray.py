"""Surveys on Ray Data: the same results as the local engine, a Parquet dataset of tiles,
bad photos reported, resuming, URIs, and a worker killed mid-survey.

One local Ray of 2 CPUs serves the whole module (starting Ray costs seconds); the engine
joins a Ray this process already runs, as it would a cluster."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crackscan import synth
from crackscan.cli import main
from crackscan.errors import CrackscanError
from crackscan.survey.driver import scan_many

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("survey") / "photos"
    (folder / "north").mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(5):
        where = folder / "north" if i % 2 else folder
        Image.fromarray(synth.make_photo(rng, 700, 500, cracks=i % 3)).save(where / f"wall-{i}.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"not a photo at all")
    return folder


@pytest.mark.slow  # starts a Ray head with `ray start` and joins it: an integration run of ~20 s
def test_the_cluster_recipe_joins_a_ray_started_with_ray_start(tiny_model, photos, tmp_path):
    """The README's recipe: `ray start --head` (token authentication on, Ray's default), then
    crackscan scan --engine ray --address. First in the module: `ray stop` ends every Ray on
    the machine, and the other tests' Ray starts after it."""
    ray_command = str(Path(sys.executable).parent / "ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([ray_command, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"],
                   check=True, capture_output=True, timeout=120)
    try:  # the command as a user runs it, in a process of its own
        done = subprocess.run([sys.executable, "-m", "crackscan.cli", "scan", str(tiny_model), str(photos), "--out",
                               str(tmp_path / "out"), "--tile", "227", "--engine", "ray", "--address",
                               f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run([ray_command, "stop", "--force"], capture_output=True, timeout=120)
    assert done.returncode == 1 and "broken.jpg" in done.stderr, done.stderr[-2000:]
    assert len(list((tmp_path / "out").glob("**/summary.json"))) == 5


def tiles_of(folder: Path) -> dict[str, list[float]]:
    found = {}
    for path in sorted(folder.rglob("tiles.csv")):
        with open(path) as handle:
            found[str(path.parent.relative_to(folder))] = [float(r["crack_probability"]) for r in csv.DictReader(handle)]
    return found


def test_ray_engine_gives_the_local_engine_results(local_ray, tiny_model, photos, tmp_path):
    import glob
    import tempfile

    local = scan_many(tiny_model, [photos], tmp_path / "local", tile=227)
    worker_copies = glob.glob(f"{tempfile.gettempdir()}/crackscan-worker-*")
    on_ray = scan_many(tiny_model, [photos], tmp_path / "ray", tile=227, engine="ray")
    # Each actor's copy of the model is gone once loaded: surveys leave nothing in /tmp.
    assert sorted(glob.glob(f"{tempfile.gettempdir()}/crackscan-worker-*")) == sorted(worker_copies)
    assert len(on_ray.scanned) == len(local.scanned) == 5 and on_ray.engine == "ray"
    expected, got = tiles_of(tmp_path / "local"), tiles_of(tmp_path / "ray")
    assert sorted(got) == sorted(expected) and len(got) == 5
    for folder, probabilities in expected.items():
        assert np.abs(np.array(got[folder]) - np.array(probabilities)).max() <= 1e-5, folder
    for name in ("overlay.jpg", "tiles.csv", "summary.json"):
        assert all((tmp_path / "ray" / folder / name).is_file() for folder in got)
    # The survey's summary lists every photo once, the one that failed with its reason.
    with open(tmp_path / "ray" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and len({r["photo"] for r in rows}) == 6
    assert [r for r in rows if r["problem"]][0]["photo"].endswith("broken.jpg")
    # Every tile of the survey, once, as one Parquet dataset pandas and DuckDB read directly.
    table = pq.read_table(tmp_path / "ray" / "tiles.parquet")
    assert table.column_names == ["photo", "x", "y", "width", "height", "probability", "label"]
    assert table.num_rows == sum(len(p) for p in expected.values())
    frame = table.to_pandas()
    north = frame[frame.photo.str.endswith("north/wall-1.jpg")].sort_values(["y", "x"])
    assert np.abs(north.probability.to_numpy() - np.array(expected["north/wall-1.jpg"])).max() <= 1e-5


def test_ray_survey_resumes_and_accepts_uris(local_ray, tiny_model, photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["scan", str(tiny_model), str(photos), "--out", str(out), "--tile", "227", "--engine", "ray"])
    printed = capsys.readouterr()
    assert code == 1 and "broken.jpg" in printed.err and "tiles.parquet" in printed.out
    assert "[5/6, " in printed.out or "[6/6, " in printed.out  # photos done of total, and the rate
    stamp = (out / "wall-0.jpg" / "summary.json").stat().st_mtime_ns
    # The photos named as URIs of a file system pyarrow reads (file:// here, s3:// alike).
    uri_out = tmp_path / "uri"
    from_uris = scan_many(tiny_model, [f"file://{photos}"], uri_out, tile=227, engine="ray")
    assert len(from_uris.scanned) == 5 and [p for p, _ in from_uris.failed][0].endswith("broken.jpg")
    assert tiles_of(uri_out) == tiles_of(out)
    assert len(scan_many(tiny_model, [photos], out, tile=227, engine="ray").resumed) == 5
    assert (out / "wall-0.jpg" / "summary.json").stat().st_mtime_ns == stamp  # resumed, not scanned again
    # A survey scanned by the local engine and resumed on Ray gets its Parquet parts too.
    mixed = tmp_path / "mixed"
    scan_many(tiny_model, [photos], mixed, tile=227)
    resumed = scan_many(tiny_model, [photos], mixed, tile=227, engine="ray")
    assert len(resumed.resumed) == 5 and pq.read_table(mixed / "tiles.parquet").num_rows == 5 * 12  # 4 x 3 tiles a photo


def test_a_worker_killed_mid_survey_costs_nothing(local_ray, tiny_model, tmp_path):
    """An actor process killed from outside while it scans: Ray starts it again and retries its
    photos; every photo ends with one result, none twice in summary.csv or the tiles."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(10):
        Image.fromarray(synth.make_photo(rng, 900, 700, cracks=i % 3)).save(folder / f"p{i:02d}.jpg", quality=90)
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_one_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if list(out.glob("*/summary.json")):  # mid-survey: some photos done, others not
                for pid in worker_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    # Small tiles with overlap: seconds a photo with the tiny model, so the kill lands mid-survey.
    outcome = scan_many(tiny_model, [folder], out, tile=48, stride=24, engine="ray")
    killer.join()
    assert killed, "no worker was running to kill"
    assert len(list(out.glob("*/summary.json"))) == 10
    with open(out / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(Path(r["photo"]).name for r in rows) == [f"p{i:02d}.jpg" for i in range(10)]
    assert len(outcome.scanned) == 10 and not outcome.failed
    table = pq.read_table(out / "tiles.parquet").to_pandas()
    assert table.groupby("photo").size().nunique() == 1 and table.photo.nunique() == 10


def worker_pids() -> list[int]:
    """The survey's actor processes, by the title Ray gives them."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "SurveyWorker" in title:
                found.append(int(entry.name))
    return found


def test_without_ray_the_engine_names_the_extra(tiny_model, photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(CrackscanError, match=r"crackscan\[ray\]"):
        scan_many(tiny_model, [photos], tmp_path / "out", engine="ray")
    code = main(["scan", str(tiny_model), str(photos), "--out", str(tmp_path / "out"), "--engine", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "crackscan[ray]" in err
    assert not (tmp_path / "out" / "summary.csv").exists()


def test_engine_settings_are_checked(tiny_model, photos, tmp_path, capsys):
    with pytest.raises(SystemExit) as parsed:  # argparse's own refusal of an unknown choice
        main(["scan", str(tiny_model), str(photos), "--out", str(tmp_path / "o"), "--engine", "spark"])
    assert parsed.value.code == 2
    assert main(["scan", str(tiny_model), str(photos), "--out", str(tmp_path / "o"), "--workers", "0",
                 "--engine", "ray"]) == 2
    with pytest.raises(CrackscanError, match="--engine ray"):
        scan_many(tiny_model, [photos], tmp_path / "o", address="head:6379")
    err = capsys.readouterr().err
    assert "engine" in err and "workers" in err


def test_ray_engine_wants_a_litert_or_onnx_model(local_ray, tiny_run, photos, tmp_path):
    with pytest.raises(CrackscanError, match="export it first"):
        scan_many(tiny_run.path / "model.keras", [photos], tmp_path / "out", engine="ray")


def test_summary_json_records_the_engine_settings(local_ray, tiny_model, photos, tmp_path):
    scan_many(tiny_model, [photos], tmp_path / "out", tile=227, engine="ray", workers=1)
    manifest = json.loads((tmp_path / "out" / "survey.json").read_text())
    assert manifest["engine"] == "ray" and manifest["tile"] == 227


def test_a_file_name_that_is_not_utf8_is_scanned_on_ray(local_ray, tiny_model, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    odd = os.fsdecode(b"wall-\xff\xfe.jpg")  # bytes no UTF-8 decoder accepts
    Image.fromarray(synth.make_photo(np.random.default_rng(1), 400, 300)).save(folder / odd, quality=90)
    Image.fromarray(synth.make_photo(np.random.default_rng(2), 400, 300)).save(folder / "plain.jpg", quality=90)
    outcome = scan_many(tiny_model, [folder], tmp_path / "out", engine="ray")
    assert len(outcome.scanned) == 2 and not outcome.failed
    assert (tmp_path / "out" / odd / "summary.json").is_file()
    names = set(pq.read_table(tmp_path / "out" / "tiles.parquet").to_pandas().photo)
    assert any(name.endswith("wall-\\xff\\xfe.jpg") for name in names), names


def test_ctrl_c_during_a_ray_survey_is_one_line(tiny_model, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(4)
    # Enough photos that the survey is still running when its first results land, on a busy
    # machine too (with 12, a loaded CI machine saw the whole survey finish between two polls).
    photo = synth.make_photo(rng, 900, 700)
    for i in range(48):
        Image.fromarray(np.roll(photo, 37 * i, axis=1)).save(folder / f"p{i:02d}.jpg", quality=90)
    out = tmp_path / "out"
    survey = subprocess.Popen([sys.executable, "-m", "crackscan.cli", "scan", str(tiny_model), str(folder), "--out",
                               str(out), "--engine", "ray", "--tile", "48", "--stride", "24"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              # A terminal's Ctrl-C: SIGINT at its default, whatever the test process
                              # inherited (an ignored SIGINT is inherited, and Python then keeps it ignored).
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while not list(out.glob("*/summary.json")) and time.monotonic() < deadline and survey.poll() is None:
        time.sleep(0.1)
    assert survey.poll() is None, "the survey ended before it could be interrupted"
    survey.send_signal(signal.SIGINT)
    _, err = survey.communicate(timeout=120)
    assert survey.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "crackscan: interrupted" in err, err[-2000:]
