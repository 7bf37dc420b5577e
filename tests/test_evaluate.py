"""crackscan evaluate: where its figures are written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import crackscan
from crackscan.cli import main
from crackscan.evaluate import evaluate_photos

from .conftest import SHARED
from .helpers import run_cli


def test_evaluate_into_a_run_folder_writes_beside_its_files(capsys, tiny_run, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    metrics_before = (run / "metrics.json").read_bytes()
    code, _, err = run_cli(capsys, "evaluate", run, tiny_dataset, "--split", "test", "--out", run)
    assert code == 0, err
    assert (run / "metrics.json").read_bytes() == metrics_before
    written = run / "evaluations" / f"{tiny_dataset.name}-test" / "metrics.json"
    assert json.loads(written.read_text())["split"] == "test"
    code, _, err = run_cli(capsys, "evaluate", run, tiny_dataset, "--split", "test", "--out", run)
    assert code == 2 and "already exists" in err
    assert run_cli(capsys, "evaluate", run, tiny_dataset, "--split", "test", "--out", run, "--force")[0] == 0


def test_evaluate_names_the_photos_a_segmenter_does_worst_on(tmp_path, capsys):
    """A photo graded against another photo's mask is the worst one, and says so by name."""
    if SHARED is None or not (SHARED / "data" / "real-photos" / "deepcrack-train").is_dir():
        pytest.skip("needs ../shared's deepcrack-train")
    source = SHARED / "data" / "real-photos" / "deepcrack-train"
    names = sorted(p.name for p in (source / "images").iterdir())[:4]
    for name in names:
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        (tmp_path / "images" / name).symlink_to(source / "images" / name)
    for name in names[:3]:
        (tmp_path / "masks" / Path(name).with_suffix(".png").name).symlink_to(
            source / "masks" / Path(name).with_suffix(".png").name)
    wrong = tmp_path / "masks" / Path(names[3]).with_suffix(".png").name
    # Another photo's mask, turned half a turn: its cracks lie where this photo has none.
    other = np.asarray(Image.open(source / "masks" / Path(names[0]).with_suffix(".png").name).convert("L"))
    Image.fromarray(np.rot90(other, 2).copy()).save(wrong)
    result = evaluate_photos(crackscan.load("crackscan-seg"), tmp_path / "images", tmp_path / "masks")
    worst = result.metrics["worst_photos"]
    assert Path(worst[0]["photo"]).name == names[3]
    assert worst[0]["pixel_f1_2px"] < 0.3 < min(row["pixel_f1_2px"] for row in result.photos
                                                 if Path(row["photo"]).name != names[3])
    assert [w["pixel_f1_2px"] for w in worst] == sorted(w["pixel_f1_2px"] for w in worst) and len(worst) == 4
    code = main(["evaluate", "crackscan-seg", str(tmp_path / "images"), "--masks", str(tmp_path / "masks")])
    out = capsys.readouterr().out
    assert code == 0 and f"worst photos (pixel F1 within 2 px; see their overlays with --out): {names[3]}" in out
