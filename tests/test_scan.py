"""Scanning whole photos: mosaics of labelled real patches, EXIF, small photos, limits, surveys."""

import csv
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import crackscan
from crackscan import CrackscanError, runs, synth
from crackscan.cli import main
from crackscan.errors import Cancelled, LimitExceeded
from crackscan.images import ImageReadError
from crackscan.photo.tiling import owned_boxes, tile_grid, tile_origins
from crackscan.serve.app import create_app

from .conftest import png_declaring, write_image
from .helpers import LOCAL, damaged_png, photo, run_cli

PATCH = 227


def build_mosaic(run, data_root, columns, rows, seed):
    """A photo made of the run's held-out patches, with the label of every tile."""
    held_out = [r for r in runs.split_rows(run.path) if r["split"] in ("test", "val")]
    rng = np.random.default_rng(seed)
    chosen = [held_out[i] for i in rng.permutation(len(held_out))[: columns * rows]]
    photo = np.zeros((rows * PATCH, columns * PATCH, 3), np.uint8)
    labels = {}
    for index, row in enumerate(chosen):
        y, x = divmod(index, columns)
        patch = np.asarray(Image.open(data_root / row["path"]).convert("RGB").resize((PATCH, PATCH)))
        photo[y * PATCH : (y + 1) * PATCH, x * PATCH : (x + 1) * PATCH] = patch
        labels[x * PATCH, y * PATCH] = row["class"]
    return photo, labels


@pytest.mark.slow
def test_mosaics_of_real_patches_are_mapped_tile_by_tile(real_run, real_int8, real_subset, tmp_path):
    correct = total = 0
    for seed in (1, 2):
        photo, labels = build_mosaic(real_run, real_subset, 12, 9, seed)  # 2724 x 2043 px
        path = tmp_path / f"mosaic{seed}.jpg"
        Image.fromarray(photo).save(path, quality=95)
        result = crackscan.scan(real_int8.path, path)
        assert (result.width, result.height) == (2724, 2043) and len(result.tiles) == 108
        for t in result.tiles:
            correct += t.label == labels[t.x, t.y]
            total += 1
    assert correct / total >= 0.99, f"{correct}/{total}"


def test_default_tile_is_the_training_patch_size(tiny_model):
    result = crackscan.scan(tiny_model, np.full((200, 200, 3), 128, np.uint8))
    assert result.summary.tile == crackscan.load(tiny_model).info.patch_size == 96


def test_tiles_cover_every_border(tiny_model):
    assert tile_origins(1000, 227, 227) == [0, 227, 454, 681, 773]
    assert tile_origins(681, 227, 227) == [0, 227, 454]
    assert tile_origins(100, 227, 227) == [0]
    assert tile_origins(500, 227, 100) == [0, 100, 200, 273]
    photo = np.full((300, 500, 3), 128, np.uint8)
    result = crackscan.scan(tiny_model, photo, tile=227)
    covered = np.zeros((300, 500), bool)
    for t in result.tiles:
        covered[t.y : t.y + t.height, t.x : t.x + t.width] = True
    assert covered.all() and len(result.tiles) == 6


def test_photo_smaller_than_one_tile_is_one_tile(tiny_model):
    result = crackscan.scan(tiny_model, np.full((100, 150, 3), 128, np.uint8), tile=227)
    assert [(t.x, t.y, t.width, t.height) for t in result.tiles] == [(0, 0, 150, 100)]
    assert result.summary.tiles == 1


def test_exif_rotated_photo_is_scanned_upright(tiny_model, tmp_path):
    stored = np.full((227, 454, 3), 128, np.uint8)  # 2x1 tiles as stored, 1x2 upright
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif)
    result = crackscan.scan(tiny_model, path, tile=227)
    assert (result.width, result.height) == (227, 454)
    assert [(t.x, t.y) for t in result.tiles] == [(0, 0), (0, 227)]


def test_decompression_bomb_is_refused_by_the_pixel_limit(tiny_model, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(60_000, 60_000))
    with pytest.raises(ImageReadError, match="pixel limit"):
        crackscan.scan(tiny_model, bomb)
    small = tmp_path / "wide.png"
    small.write_bytes(png_declaring(4000, 3000))
    with pytest.raises(ImageReadError, match="pixel limit"):
        crackscan.scan(tiny_model, small, max_pixels=10_000_000 // 10)


def test_bad_settings_are_user_errors(tiny_model):
    photo = np.zeros((300, 300, 3), np.uint8)
    with pytest.raises(CrackscanError, match="threshold"):
        crackscan.scan(tiny_model, photo, threshold=1.5)
    with pytest.raises(CrackscanError, match="tile"):
        crackscan.scan(tiny_model, photo, tile=4)


def test_survey_folder_resume_force_and_bad_files(capsys, tiny_model, tiny_dataset, tmp_path):
    from crackscan import synth

    survey = tmp_path / "survey"
    (survey / "north").mkdir(parents=True)
    rng = np.random.default_rng(4)
    Image.fromarray(synth.make_photo(rng, 700, 500, cracks=3)).save(survey / "north" / "wall.jpg")
    Image.fromarray(synth.make_photo(rng, 700, 500, cracks=0)).save(survey / "wall.jpg")  # same stem
    (survey / "broken.jpg").write_bytes(b"not a photo")
    out = tmp_path / "out"
    code = main(["scan", str(tiny_model), str(survey), "--out", str(out), "--tile", "227"])
    captured = capsys.readouterr()
    assert code == 1 and "skipped" in captured.err and "broken.jpg" in captured.err
    for folder in ("north/wall.jpg", "wall.jpg"):
        assert {p.name for p in (out / folder).iterdir()} == {"overlay.jpg", "tiles.csv", "summary.json"}
        summary = json.loads((out / folder / "summary.json").read_text())
        assert summary["tiles"] == 12 and summary["width"] == 700
        with open(out / folder / "tiles.csv") as handle:
            assert list(csv.DictReader(handle))[0].keys() == {"row", "col", "x", "y", "width", "height",
                                                              "crack_probability", "label", "verdict",
                                                              "crack_pixel_share"}
    with open(out / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    # Scanned photos most cracked first, then the photo that could not be scanned, with why.
    ranked, problems = rows[:2], rows[2:]
    fractions = [float(r["cracked_area_fraction"]) for r in ranked]
    assert fractions == sorted(fractions, reverse=True) and all(r["problem"] == "" for r in ranked)
    assert len(problems) == 1 and problems[0]["photo"].endswith("broken.jpg") and problems[0]["problem"]
    overlay = Image.open(out / "wall.jpg" / "overlay.jpg")
    assert overlay.width == 700 and 500 < overlay.height < 600  # the photo, and the legend strip below it

    stamp = (out / "wall.jpg" / "summary.json").stat().st_mtime_ns
    main(["scan", str(tiny_model), str(survey), "--out", str(out), "--tile", "227"])
    assert "2 photos already scanned" in capsys.readouterr().out
    assert (out / "wall.jpg" / "summary.json").stat().st_mtime_ns == stamp
    main(["scan", str(tiny_model), str(survey / "wall.jpg"), "--out", str(out), "--force", "--tile", "227"])
    assert (out / "wall.jpg" / "summary.json").stat().st_mtime_ns != stamp


def test_a_thin_photo_is_seen_whole(tiny_run):
    # 227 x 100: one tile, which must hold the whole strip, not a stretched part of it.
    class Recorder:
        batch_size = 32

        def __call__(self, images):
            self.seen = np.array(images)
            return np.tile([[0.5, 0.5]], (len(images), 1))

    recorder = Recorder()
    strip = np.full((100, 227, 3), 200, np.uint8)
    strip[60:] = 30  # a dark lower band
    crackscan.scan(crackscan.Predictor(recorder, crackscan.load(tiny_run.path).info), strip, tile=227)
    tile = recorder.seen[0]
    assert tile.shape == (96, 96, 3)
    assert tile[:40].mean() > 180 and tile[-30:].mean() < 50


def test_tiles_and_summaries_say_crack_or_clear(tiny_model, tmp_path):
    photo = synth.make_photo(np.random.default_rng(4), 400, 300, cracks=2)
    result = crackscan.scan(tiny_model, photo, tile=100, threshold=0.5)
    assert {t.verdict for t in result.tiles} <= {"crack", "clear"}
    assert all((t.verdict == "crack") == (t.crack_probability >= 0.5) for t in result.tiles)
    assert result.summary.verdict == ("crack" if result.summary.cracked_tiles else "clear")
    folder = result.write(tmp_path / "out")
    rows = list(csv.DictReader(open(folder / "tiles.csv")))
    assert rows[0].keys() >= {"label", "verdict"} and [r["verdict"] for r in rows] == [t.verdict for t in result.tiles]
    assert json.loads((folder / "summary.json").read_text())["verdict"] == result.summary.verdict


@pytest.mark.parametrize("width, height, tile, stride", [(512, 300, 227, 227), (500, 227, 227, 113),
                                                        (1000, 700, 96, 60), (150, 100, 227, 227)])
def test_drawn_tiles_own_every_pixel_once(width, height, tile, stride):
    _, boxes = tile_grid(width, height, tile, stride)
    owners = np.zeros((height, width), int)
    for x, y, w, h in owned_boxes(boxes):
        owners[y : y + h, x : x + w] += 1
    assert (owners == 1).all()


def test_a_run_without_exports_scans_on_its_litert_backbone(tiny_run, tmp_path, capsys):
    import shutil

    from crackscan import runs

    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run, ignore=shutil.ignore_patterns(runs.BACKBONE_FILE, runs.INT8_BACKBONE_FILE,
                                                                        "model*.tflite"))
    fast = crackscan.load(run, fastest=True)
    assert fast.format == "litert backbone + head" and (run / runs.BACKBONE_FILE).is_file()  # converted, kept
    photo = synth.make_photo(np.random.default_rng(2), 400, 300, cracks=1)
    keras_result = crackscan.scan(crackscan.load(run), photo)
    fast_result = crackscan.scan(fast, photo)
    assert np.abs(np.array([t.crack_probability for t in keras_result.tiles])
                  - np.array([t.crack_probability for t in fast_result.tiles])).max() < 1e-4
    write_image(tmp_path / "photos" / "p.jpg", photo)
    assert main(["scan", str(run), str(tmp_path / "photos"), "--out", str(tmp_path / "scans")]) == 0
    assert "using the run's float LiteRT backbone and NumPy head" in capsys.readouterr().err


def test_scan_skips_a_damaged_photo_and_scans_the_rest(capsys, tiny_model, tmp_path):
    photo(tmp_path / "photos" / "a.jpg", 1)
    damaged_png(tmp_path / "photos" / "b.png")
    code, out, err = run_cli(capsys, "scan", tiny_model, tmp_path / "photos", "--out", tmp_path / "scans")
    assert code == 1 and "b.png" in err and "corrupt" in err
    assert (tmp_path / "scans" / "a.jpg" / "summary.json").is_file()


def test_a_scan_over_its_tile_cap_is_refused_before_any_work(tiny_run):
    predictor = crackscan.load(tiny_run.path)
    pixels = np.zeros((227, 227, 3), np.uint8)
    with pytest.raises(LimitExceeded, match="44,944 tiles, over the limit of 4,096"):
        crackscan.scan(predictor, pixels, tile=16, stride=1, max_tiles=4096)


def test_a_scan_stops_between_batches_when_asked(tiny_run):
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(Cancelled, match="after 128 of"):
        crackscan.scan(crackscan.load(tiny_run.path), np.zeros((800, 800, 3), np.uint8), tile=32, batch_size=64, should_stop=stop)


def test_a_one_pixel_wide_photo_gets_an_overlay_and_a_legend_that_fits(tiny_model, tiny_run):
    strip = np.full((30_000, 1, 3), 128, np.uint8)
    overlay = crackscan.scan(tiny_model, strip).overlay()
    assert overlay.width >= 200  # the legend's width, not the photo's
    with TestClient(create_app(tiny_model), base_url=LOCAL, raise_server_exceptions=False) as site:
        answer = site.post("/v1/scan", files={"file": ("strip.png", _png(np.full((3000, 1, 3), 90, np.uint8)),
                                                        "image/png")})
        assert answer.status_code == 200, answer.text


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()
