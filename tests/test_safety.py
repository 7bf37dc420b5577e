"""Safe on a network and on any folder: each of issue 19's 22 problems, tried as it was found.

The server refuses other origins and unknown hosts and asks for a token beyond loopback;
label requests cannot fill the disk; folders of links, pipes, devices and huge files are
reported and skipped; masks are matched by path; a full or read-only disk is one line;
damaged files are named; two writers of a run cannot both succeed."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import crackscan
from crackscan import runs, synth
from crackscan.cli import main
from crackscan.errors import CrackscanError
from crackscan.evaluate import evaluate_photos
from crackscan.images import ImageReadError, read_image_file
from crackscan.model.info import ModelInfo
from crackscan.runtime.formats import attach_litert_metadata
from crackscan.runtime.runners import BackboneRunner
from crackscan.site.adapt import adapt
from crackscan.site.labels import LABELS_FILE, LabelSet, labelled_samples, labels_from_masks
from crackscan.masks import CRACK, read_mask, tile_truth

from .conftest import write_image

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from crackscan.serve.app import build_server, create_app  # noqa: E402
from crackscan.serve.site_loop import SiteLoop  # noqa: E402

LOCAL = "http://127.0.0.1"


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo_bytes() -> bytes:
    return jpeg(synth.make_photo(np.random.default_rng(3), 400, 300, cracks=1))


@pytest.fixture()
def labels_folder(tiny_dataset: Path, tmp_path: Path) -> Path:
    labels = tmp_path / "labels"
    for name in ("Positive", "Negative"):
        (labels / name).mkdir(parents=True)
        for path in sorted((tiny_dataset / name).glob("0000*.jpg"))[:6]:
            shutil.copy(path, labels / name / path.name)
    return labels


# ---- 1. other origins, other hosts, tokens, absolute paths -----------------------------------

def test_other_origins_and_hosts_cannot_change_or_read_the_server(tiny_run, tmp_path, photo_bytes):
    labels = tmp_path / "labels"
    with TestClient(create_app(tiny_run.path, labels=labels), base_url=LOCAL, raise_server_exceptions=False) as site:
        evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
        answer = site.post("/v1/adapt", headers=evil, content=b"x")
        assert answer.status_code == 403 and "another site" in answer.json()["detail"]
        good = '[{"x": 0, "y": 0, "width": 96, "height": 96, "label": "Positive"}]'
        upload = {"file": ("wall.jpg", photo_bytes, "image/jpeg")}
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
            assert site.post("/v1/labels", files=upload, data={"labels": good}, headers=headers).status_code == 403
        assert not labels.joinpath(LABELS_FILE).exists() and not list(tmp_path.glob("labels-adapted-*"))
        # DNS rebinding: the page's requests name its own host, and get nothing, not even /health.
        rebound = site.get("/health", headers={"Host": "evil.example:8000"})
        assert rebound.status_code == 403 and "does not answer to the host" in rebound.json()["detail"]
        # The server's own page, and tools that send no Origin, still work.
        same = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}
        saved = site.post("/v1/labels", files=upload, data={"labels": good}, headers=same)
        assert saved.status_code == 200, saved.text
        health = site.get("/health").json()
        assert "access-control-allow-origin" not in site.get("/health", headers={"Origin": "http://a.b"}).headers
    # Answers name files, never the server's folders.
    shown = json.dumps(health) + saved.text
    for private in (str(tmp_path), str(tiny_run.path), os.getcwd()):
        assert private not in shown
    assert health["labels"] == "labels" and health["model"] == "model.keras"


def test_a_token_guards_every_request_when_given(tiny_model):
    with TestClient(create_app(tiny_model, token="s3cret"), base_url=LOCAL, raise_server_exceptions=False) as site:
        assert site.get("/health").status_code == 401
        assert site.get("/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert site.get("/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        # The printed address: the token goes into a cookie and out of the address bar.
        page = site.get("/?token=s3cret", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/"
        assert "crackscan_token=s3cret" in page.headers["set-cookie"]
        assert "samesite=strict" in page.headers["set-cookie"].lower() and "secure" not in page.headers["set-cookie"].lower()
        assert site.get("/").status_code == 200 and site.get("/health").status_code == 200  # the cookie, from now on


def test_binding_beyond_loopback_needs_a_token_and_prints_one(tiny_model):
    with pytest.raises(CrackscanError, match="needs an access token"):
        build_server(tiny_model, "0.0.0.0", 8000)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "crackscan.cli", "serve", str(tiny_model), "--host", "0.0.0.0",
                               "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        note = server.stderr.readline()
        assert "?token=" in line and "every request needs the access token" in note, (line, note)
        token = line.split("?token=", 1)[1].split()[0]
        import httpx

        for _ in range(100):
            with contextlib.suppress(httpx.TransportError):
                assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 401
                break
            time.sleep(0.1)
        ok = httpx.get(f"http://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


# ---- 2. label budgets ----------------------------------------------------------------------------

def test_one_labels_request_cannot_fill_the_disk(tiny_run, tmp_path):
    big = jpeg(np.full((1080, 1920, 3), 120, np.uint8))
    upload = {"file": ("big.jpg", big, "image/jpeg")}
    labels = tmp_path / "labels"
    app = create_app(tiny_run.path, labels=labels, max_label_mb=1.0, max_labels_folder_mb=2.0)
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as site:
        whole = json.dumps([{"x": 0, "y": 0, "width": 1920, "height": 1080, "label": "Positive"}] * 2)
        answer = site.post("/v1/labels", files=upload, data={"labels": whole})
        assert answer.status_code == 422 and "larger than a label may be" in answer.json()["detail"]
        twice = json.dumps([{"x": 0, "y": 0, "width": 227, "height": 227, "label": "Positive"}] * 2)
        answer = site.post("/v1/labels", files=upload, data={"labels": twice})
        assert answer.status_code == 422 and "twice" in answer.json()["detail"]
        many = json.dumps([{"x": x, "y": y, "width": 227, "height": 227, "label": "Negative"}
                           for x in range(0, 1600, 227) for y in range(0, 800, 227)])
        answer = site.post("/v1/labels", files=upload, data={"labels": many})
        assert answer.status_code == 413 and "one request may write" in answer.json()["detail"]
        assert not (labels / LABELS_FILE).exists()
        few = json.dumps([{"x": x, "y": 0, "width": 227, "height": 227, "label": "Negative"} for x in (0, 227, 454)])
        for attempt in range(10):
            answer = site.post("/v1/labels", files=upload, data={"labels": few})
            if answer.status_code != 200:
                break
        assert answer.status_code == 413 and "labels folder holds" in answer.json()["detail"]
        limits = site.get("/health").json()["limits"]
        assert {"max_label_side", "max_label_mb", "max_labels_folder_mb"} <= set(limits)
        assert "token" not in limits and "allow_host" not in limits


# ---- 3, 21. a run folder's writers -----------------------------------------------------------

def test_adapt_into_its_own_parent_is_refused_before_anything_is_touched(tiny_run, labels_folder, tmp_path):
    parent = tmp_path / "self"
    shutil.copytree(tiny_run.path, parent)
    before = sorted((p.name, p.stat().st_size) for p in parent.iterdir())
    code = main(["adapt", str(parent), str(labels_folder), "--out", str(parent), "--force"])
    assert code == 2
    assert sorted((p.name, p.stat().st_size) for p in parent.iterdir()) == before


def test_two_writers_of_one_run_folder_cannot_both_succeed(tiny_run, tiny_dataset, labels_folder, tmp_path):
    out = tmp_path / "race"
    with runs.locked(out):
        with pytest.raises(CrackscanError, match="another crackscan is writing a run into"):
            adapt(tiny_run.path, labels_folder, out)
        with pytest.raises(CrackscanError, match="another crackscan is writing"):
            crackscan.train(tiny_dataset, out, image_size=96, alpha=0.35, epochs=1, weights="none")
    assert not runs.is_run(out)
    adapt(tiny_run.path, labels_folder, out)  # the lock is gone with its holder
    with pytest.raises(CrackscanError, match="--force"):
        adapt(tiny_run.path, labels_folder, out)


# ---- 5, 6. folders of anything ------------------------------------------------------------------

@pytest.fixture()
def odd_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "good.jpg", synth.make_photo(np.random.default_rng(1), 300, 240, cracks=1))
    (folder / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    with open(folder / "big.jpg", "wb") as handle:  # 3 GB, sparse: nothing to read but its size
        handle.truncate(3 * 2**30)
    (folder / "sub").mkdir()
    (folder / "sub" / "back").symlink_to(folder)  # a loop of folders
    return folder


def test_links_pipes_devices_and_huge_files_are_reported_and_skipped(tiny_model, odd_folder, tmp_path, capsys):
    started = time.monotonic()
    code = main(["predict", str(tiny_model), str(odd_folder)])
    out, err = capsys.readouterr()
    assert code == 1 and "good.jpg" in out
    for name, why in (("dangling.jpg", "dangling symlink"), ("loop.jpg", "symbolic links"), ("pipe.jpg", "FIFO"),
                      ("zero.jpg", "a device"), ("big.jpg", "more than an image")):
        assert any(name in line and why in line for line in err.splitlines()), (name, err)
    code = main(["scan", str(tiny_model), str(odd_folder), "--out", str(tmp_path / "scans")])
    assert code == 1
    rows = {Path(r["photo"]).name: r["problem"] for r in csv.DictReader(open(tmp_path / "scans" / "summary.csv"))}
    assert rows["good.jpg"] == "" and {"dangling.jpg", "loop.jpg", "pipe.jpg", "zero.jpg", "big.jpg"} <= set(rows)
    assert time.monotonic() - started < 120  # nothing hung, nothing read 3 GB


def test_a_file_is_judged_before_a_byte_is_read(tmp_path):
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:
        handle.truncate(2**30)
    with pytest.raises(ImageReadError) as refused:
        read_image_file(huge, max_bytes=2**20)
    assert refused.value.kind == "too_large"


# ---- 7, 22. masks ----------------------------------------------------------------------------------

def test_masks_are_matched_by_their_path_below_the_masks_folder(tiny_model, tmp_path):
    rng = np.random.default_rng(5)
    for side in ("north", "south"):
        write_image(tmp_path / "images" / side / "a.png", synth.make_photo(rng, 300, 200, cracks=1))
    mask = np.zeros((200, 300), np.uint8)
    write_image(tmp_path / "masks" / "north" / "a.png", mask)
    mask[:, 150] = 255  # south's crack runs down the middle
    write_image(tmp_path / "masks" / "south" / "a.png", mask)
    result = evaluate_photos(tiny_model, tmp_path / "images", tmp_path / "masks", tile=100, out=tmp_path / "eval")
    by_side = {Path(row["photo"]).parent.name: row for row in result.photos}
    assert by_side["north"]["crack_tiles"] == 0 and by_side["south"]["crack_tiles"] == 2
    assert sorted(p.relative_to(tmp_path / "eval" / "overlays").as_posix()
                  for p in (tmp_path / "eval" / "overlays").rglob("*.jpg")) == ["north/a.jpg", "south/a.jpg"]
    made = labels_from_masks(tmp_path / "images", tmp_path / "masks", tmp_path / "labels", per_class=2, tile=100)
    crack_sources = {label.source for label in made.labels.labels.values() if label.label == "Positive"}
    assert crack_sources == {f"mask:{tmp_path / 'masks' / 'south' / 'a.png'}"}
    # One flat mask for two photos of one name: which photo it belongs to cannot be told.
    flat = tmp_path / "flat"
    write_image(flat / "a.png", mask)
    with pytest.raises(CrackscanError, match="none of the 2 photos"):
        evaluate_photos(tiny_model, tmp_path / "images", flat, tile=100)


def test_a_transparent_mask_background_is_no_crack(tmp_path):
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[..., :3] = 255  # white, but transparent
    rgba[40:60, 50, 3] = 255  # an opaque crack line
    write_image(tmp_path / "mask.png", rgba)
    crack = read_mask(tmp_path / "mask.png", 100, 100)
    assert crack.sum() == 20
    assert tile_truth(crack, [(0, 0, 50, 100), (50, 0, 50, 100)]).tolist()[0] != CRACK


# ---- 8. a photo one pixel wide --------------------------------------------------------------

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


# ---- 9, 19. the disk: full, read-only, gone ----------------------------------------------------

@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 2 MB tmpfs (root only: mounting needs it)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_or_read_only_disk_is_one_line(tiny_model, tiny_dataset, tiny_run, labels_folder, small_disk, tmp_path,
                                              capsys, monkeypatch):
    photos = tmp_path / "photos"
    for i in range(4):
        write_image(photos / f"p{i}.png", np.random.default_rng(i).integers(0, 256, (700, 900, 3), np.uint8))
    code = main(["scan", str(tiny_model), str(photos), "--out", str(small_disk / "scans")])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    started = time.monotonic()
    code = main(["train", str(tiny_dataset), "--out", str(small_disk / "run"), "--weights", "none",
                 "--image-size", "96", "--alpha", "0.35"])
    err = capsys.readouterr().err
    assert code == 2 and "Read-only file system" in err and "Traceback" not in err
    assert time.monotonic() - started < 20  # said before any embedding
    code = main(["label", str(photos), "--masks", str(photos), "--out", str(small_disk / "labels")])
    assert code == 2 and "Read-only file system" in capsys.readouterr().err
    # adapt and export say so before any work: the work itself is not reached.
    import importlib

    export_module = importlib.import_module("crackscan.export")  # crackscan.export is also the function's name
    adapt_module = importlib.import_module("crackscan.site.adapt")

    def reached(*args, **kwargs):
        raise AssertionError("the work started before the read-only folder was said")

    monkeypatch.setattr(adapt_module, "run_backbone", reached)
    monkeypatch.setattr(export_module, "load_keras_model", reached)
    code = main(["adapt", str(tiny_run.path), str(labels_folder), "--out", str(small_disk / "adapted")])
    assert code == 2 and "Read-only file system" in capsys.readouterr().err
    code = main(["export", str(tiny_run.path), "--format", "litert", "--out", str(small_disk / "model.tflite")])
    assert code == 2 and "Read-only file system" in capsys.readouterr().err


def test_a_survey_whose_folder_vanishes_fails(tiny_model, tmp_path, monkeypatch, capsys):
    from crackscan.survey import local

    photos = tmp_path / "photos"
    for i in range(3):
        write_image(photos / f"p{i}.png", np.full((200, 300, 3), 40 * i, np.uint8))
    out = tmp_path / "scans"
    real = local.scan_job

    def and_then_the_folder_goes(predictor, job, *options, **more):
        outcome = real(predictor, job, *options, **more)
        shutil.rmtree(out, ignore_errors=True)
        return outcome

    monkeypatch.setattr(local, "scan_job", and_then_the_folder_goes)
    code = main(["scan", str(tiny_model), str(photos), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "vanished" in err
    assert not (out / "summary.csv").exists()


# ---- 10, 11. label folders: interrupted, damaged -------------------------------------------------

def test_an_interrupted_label_leaves_nothing_a_rerun_counts(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    for i in range(3):
        write_image(tmp_path / "images" / f"{i}.png", synth.make_photo(rng, 300, 300, cracks=1))
        mask = np.zeros((300, 300), np.uint8)
        mask[:, 40 + 50 * i] = 255
        write_image(tmp_path / "masks" / f"{i}.png", mask)
    out = tmp_path / "labels"

    def killed(self):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(LabelSet, "save", killed)
        with pytest.raises(KeyboardInterrupt):
            labels_from_masks(tmp_path / "images", tmp_path / "masks", out, per_class=3, tile=100, seed=0)
    assert list(out.rglob("*.png")) and not (out / LABELS_FILE).exists()  # crops written, no labels.csv
    # A crop a kill -9 left half-written, under its temporary name: the re-run clears it.
    leftover = out / "Positive" / ".0-x0-y0-100x100-0123456789.1a2b3c4d.partial.png"
    leftover.write_bytes(b"\x89PNG half")
    os.utime(leftover, (time.time() - 60, time.time() - 60))
    made = labels_from_masks(tmp_path / "images", tmp_path / "masks", out, per_class=2, tile=100, seed=1)
    on_disk = [p for name in ("Positive", "Negative") for p in (out / name).iterdir()]
    assert len(on_disk) == len(made.labels) == 4
    assert len(labelled_samples(out, ("Negative", "Positive"), "Positive")) == 4
    assert not leftover.exists()


@pytest.mark.parametrize("damage", ["huge field", "wrong header", "random bytes"])
def test_a_damaged_labels_csv_is_named(tiny_run, labels_folder, tmp_path, damage, capsys):
    LabelSet(labels_folder).save()
    path = labels_folder / LABELS_FILE
    if damage == "huge field":
        path.write_text(",".join(["file", "photo", "x", "y", "width", "height", "label", "source", "made"]) + "\n"
                        + '"' + "a" * 200_000 + '",p,0,0,1,1,Positive,s,m\n')
    elif damage == "wrong header":
        path.write_text("name,where\nPositive/a.png,p\n")
    else:
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    code = main(["adapt", str(tiny_run.path), str(labels_folder), "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and "damaged" in err and "Traceback" not in err
    with TestClient(create_app(tiny_run.path, labels=labels_folder), base_url=LOCAL,
                    raise_server_exceptions=False) as site:
        assert site.post("/v1/adapt").status_code == 422
        upload = {"file": ("w.jpg", jpeg(np.full((200, 200, 3), 99, np.uint8)), "image/jpeg")}
        good = '[{"x": 0, "y": 0, "width": 96, "height": 96, "label": "Positive"}]'
        assert site.post("/v1/labels", files=upload, data={"labels": good}).status_code == 422


# ---- 12, 13. a run's damaged records -----------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "100 columns", "50 rows"])
def test_damaged_features_are_named(tiny_run, labels_folder, tmp_path, damage):
    parent = tmp_path / "parent"
    shutil.copytree(tiny_run.path, parent)
    features = parent / runs.FEATURES_FILE
    cached = runs.load_features(parent)
    if damage == "truncated":
        features.write_bytes(features.read_bytes()[:300])
    else:
        rows = 50 if damage == "50 rows" else len(cached["features"])
        width = 100 if damage == "100 columns" else cached["features"].shape[1]
        with open(features, "wb") as handle:
            np.savez(handle, features=np.zeros((rows, width), np.float16), labels=cached["labels"][:rows],
                     splits=cached["splits"][:rows])
    with pytest.raises(CrackscanError, match=f"{runs.FEATURES_FILE}.*(damaged|features an image)"):
        adapt(parent, labels_folder, tmp_path / "adapted")


def test_a_damaged_split_is_named_not_taken_for_the_labels_fault(tiny_run, labels_folder, tmp_path):
    parent = tmp_path / "parent"
    shutil.copytree(tiny_run.path, parent)
    (parent / runs.FEATURES_FILE).unlink()  # so the split is read to embed the parent again
    split = parent / runs.SPLIT_FILE
    split.write_text(split.read_text()[: len(split.read_text()) // 2])
    with pytest.raises(CrackscanError, match="split.csv") as refused:
        adapt(parent, labels_folder, tmp_path / "adapted")
    assert "would cost" not in str(refused.value)


# ---- 14. an adapted run serves lone images without padding -------------------------------------

def test_a_lone_image_runs_on_its_own_interpreter(tiny_run):
    backbone = BackboneRunner((tiny_run.path / runs.BACKBONE_FILE).read_bytes() if
                              (tiny_run.path / runs.BACKBONE_FILE).is_file() else _backbone_of(tiny_run), 16)
    images = np.random.default_rng(0).integers(0, 256, (20, 96, 96, 3)).astype(np.uint8)
    pooled, site = backbone.features(images)
    assert backbone._single is not None  # the 4 left over went one by one
    lone_pooled, lone_site = backbone.features(images[:1])
    assert np.allclose(lone_pooled, pooled[:1], atol=1e-4) and np.allclose(lone_site, site[:1], atol=1e-4)


def _backbone_of(tiny_run) -> bytes:
    from crackscan.model.classifier import feature_extractor
    from crackscan.model.keras_archive import load_keras_model
    from crackscan.runtime.formats import keras_to_litert

    return keras_to_litert(feature_extractor(load_keras_model(tiny_run.model_path)[0]))


# ---- 15, 16, 17. the labelling loop's folder, nested JSON, bad booleans -----------------------------

def test_runs_adapted_from_the_page_go_beside_the_labels_folder(tiny_model, tmp_path, monkeypatch):
    labels = tmp_path / "labels"
    labels.mkdir()
    monkeypatch.chdir(labels)
    loop = SiteLoop(".", None, crackscan.load(tiny_model))
    assert loop.next_run_folder() == tmp_path / "labels-adapted-01"


def test_deep_json_and_odd_booleans_are_4xx(tiny_model, tiny_run, tmp_path, photo_bytes):
    with TestClient(create_app(tiny_run.path, labels=tmp_path / "labels"), base_url=LOCAL,
                    raise_server_exceptions=False) as site:
        upload = {"file": ("wall.jpg", photo_bytes, "image/jpeg")}
        answer = site.post("/v1/labels", files=upload, data={"labels": "[" * 100_000 + "]" * 100_000})
        assert answer.status_code == 422
        for value in ("2", "", "maybe"):
            answer = site.post(f"/v1/scan?overlay={value}", files=upload)
            assert answer.status_code == 422 and "true or false" in answer.json()["detail"], answer.text


# ---- 18. metadata that disagrees with its graph --------------------------------------------------

def test_metadata_that_disagrees_with_the_graph_is_refused_at_load(tiny_model, tmp_path):
    content = tiny_model.read_bytes()
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        start = content.rfind(b"PK\x03\x04")
        info = ModelInfo.from_json(archive.read("crackscan.json"))
    edited = tmp_path / "edited.tflite"
    edited.write_bytes(attach_litert_metadata(content[:start], ModelInfo(**{**info.__dict__, "input_size": 128})))
    with pytest.raises(CrackscanError, match="metadata says 128 px inputs but the model takes 96x96"):
        crackscan.load(edited)



def test_a_damaged_survey_manifest_is_named(tiny_model, tmp_path, capsys):
    photos = tmp_path / "photos"
    write_image(photos / "p.png", np.full((200, 300, 3), 90, np.uint8))
    out = tmp_path / "scans"
    assert main(["scan", str(tiny_model), str(photos), "--out", str(out)]) == 0
    (out / "survey.json").write_text('{"format": "crackscan-survey", "root": ')
    capsys.readouterr()
    code = main(["scan", str(tiny_model), str(photos), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "survey.json is damaged" in err and "Traceback" not in err


def test_work_handed_to_normal_work_runs_at_normal_priority_from_a_low_one():
    """A model loaded after a page Adapt must not run its threads at the heavy threads' nice 19
    (found under a busy machine: lone classifies starved behind other processes)."""
    import threading

    from crackscan.serve.budgets import HEAVY_NICENESS, HeavyWork, NormalWork

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    normal = NormalWork()
    seen = {}

    def on_a_heavy_thread() -> None:
        seen["heavy"] = niceness()
        seen["handed"] = normal(niceness)

    import asyncio

    asyncio.run(HeavyWork().run(on_a_heavy_thread))
    if seen["heavy"] != HEAVY_NICENESS:
        pytest.skip("this system does not let a thread lower its own priority")
    assert seen["handed"] == niceness() < HEAVY_NICENESS


def test_a_served_litert_model_makes_its_one_image_interpreter_when_loaded(tiny_model):
    predictor = crackscan.load(tiny_model)
    assert predictor.runner._single is not None


def test_an_adapted_run_the_labels_call_worse_is_kept_aside_until_chosen(tiny_run, labels_folder, tmp_path,
                                                                        monkeypatch):
    from crackscan.serve import site_loop

    real_adapt = site_loop.adapt

    def worse_on_the_labels(*args, **kwargs):
        made = real_adapt(*args, **kwargs)
        cv = made.metrics["site_cross_validated"]
        cv["before"]["f1"], cv["after"]["f1"] = 0.9, 0.8
        return made

    monkeypatch.setattr(site_loop, "adapt", worse_on_the_labels)
    shutil.copytree(labels_folder, tmp_path / "labels-copy")
    with TestClient(create_app(tiny_run.path, labels=tmp_path / "labels-copy"), base_url=LOCAL,
                    raise_server_exceptions=False) as site:
        before = site.get("/health").json()
        answer = site.post("/v1/adapt")
        assert answer.status_code == 200 and answer.json()["swapped"] is False, answer.text
        after = site.get("/health").json()
        assert after["model"] == before["model"] and after["kept_aside"] == ["labels-copy-adapted-01"]
        assert site.post("/v1/adapt/use", data={"run": "nonsense"}).status_code == 422
        chosen = site.post("/v1/adapt/use", data={"run": "labels-copy-adapted-01"})
        assert chosen.status_code == 200 and chosen.json()["swapped"]
        now = site.get("/health").json()
        # The page's adapt skips the int8 step (its user waits for the swap): the float backbone.
        assert not (tmp_path / "labels-copy-adapted-01" / runs.INT8_BACKBONE_FILE).exists()
        assert now["run"] == "labels-copy-adapted-01" and now["format"] == "litert backbone + head"
        assert now["kept_aside"] == [] and now["adapted_runs"] == ["labels-copy-adapted-01"]


def test_a_built_in_served_with_labels_can_adapt_and_a_bare_file_says_why(tiny_model, tmp_path):
    with TestClient(create_app("crackscan-nano", labels=tmp_path / "a"), base_url=LOCAL) as site:
        health = site.get("/health").json()
        assert health["can_adapt"] and health["why_not_adapt"] is None
    with TestClient(create_app(tiny_model, labels=tmp_path / "b"), base_url=LOCAL) as site:
        health = site.get("/health").json()
        assert not health["can_adapt"] and "a file, not a run folder or a built-in" in health["why_not_adapt"]
