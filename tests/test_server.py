"""The HTTP API through FastAPI's test client: every endpoint and every bad input."""

import base64
import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import crackscan  # noqa: E402
from crackscan import runs

from .conftest import png_declaring  # noqa: E402
from .helpers import LOCAL

fastapi = pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from crackscan.serve.app import create_app  # noqa: E402
from crackscan.serve.site_loop import SiteLoop


@pytest.fixture(scope="module")
def client(tiny_run):
    app = create_app(tiny_run.path, max_upload_mb=0.3, max_pixels=5_000_000)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as test_client:
        yield test_client


def jpeg(array, **kw):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", **kw)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def patch_bytes(tiny_dataset):
    return (tiny_dataset / "Positive" / "00001.jpg").read_bytes()


@pytest.fixture(scope="module")
def photo_bytes():
    from crackscan import synth

    return jpeg(synth.make_photo(np.random.default_rng(2), 500, 400, cracks=2), quality=90)


def test_health_and_docs(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["classes"] == ["Negative", "Positive"] and health["format"] == "keras"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/classify", "/v1/scan", "/health"} <= set(paths)


def test_classify_one_and_many(client, patch_bytes, tiny_run, tiny_dataset):
    answer = client.post("/v1/classify", files=[("files", ("a.jpg", patch_bytes, "image/jpeg"))])
    assert answer.status_code == 200
    [result] = answer.json()["results"]
    expected = crackscan.load(tiny_run.path).predict(tiny_dataset / "Positive" / "00001.jpg")[0]
    assert result["filename"] == "a.jpg" and result["label"] == expected.label
    assert result["crack_probability"] == pytest.approx(expected.crack_probability, abs=1e-5)
    many = client.post("/v1/classify", files=[("files", (f"{i}.jpg", patch_bytes, "image/jpeg")) for i in range(3)])
    assert [r["filename"] for r in many.json()["results"]] == ["0.jpg", "1.jpg", "2.jpg"]


def test_scan_returns_grid_summary_and_overlay(client, photo_bytes):
    answer = client.post("/v1/scan?tile=227", files={"file": ("wall.jpg", photo_bytes, "image/jpeg")})
    assert answer.status_code == 200
    body = answer.json()
    summary = body["summary"]
    assert summary["photo"] == "wall.jpg" and summary["tiles"] == len(body["tiles"]) == 6
    assert set(body["tiles"][0]) == {"row", "col", "x", "y", "width", "height", "crack_probability", "label", "verdict",
                                     "crack_pixel_share"}
    assert (body["tiles"][-1]["row"], body["tiles"][-1]["col"]) == (summary["rows"] - 1, summary["cols"] - 1)
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"])))
    assert overlay.format == "PNG" and overlay.width == 500 and overlay.height > 400  # legend strip below


@pytest.mark.parametrize("endpoint, field", [("/v1/classify", "files"), ("/v1/scan", "file")])
@pytest.mark.parametrize("name, content, status, words", [
    ("notes.jpg", b"this is a text file, not a photo", 415, "not an image"),
    ("cut.jpg", None, 400, "truncated"),
    ("empty.jpg", b"", 400, "empty"),
    ("bomb.png", png_declaring(40_000, 40_000), 413, "pixel limit"),
    ("huge.jpg", b"\xff" * 400_000, 413, "larger than the limit"),
])
def test_bad_uploads_get_4xx_with_a_reason(client, photo_bytes, endpoint, field, name, content, status, words):
    if content is None:
        content = photo_bytes[: len(photo_bytes) // 3]
    answer = client.post(endpoint, files=[(field, (name, content, "image/jpeg"))])
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]
    assert client.get("/health").status_code == 200  # the server is still up


def test_missing_file_and_bad_parameters(client, photo_bytes):
    assert client.post("/v1/classify").status_code == 422
    assert client.post("/v1/scan?threshold=2", files={"file": ("a.jpg", photo_bytes, "image/jpeg")}).status_code == 422


def test_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text and "v1/scan" in page.text


def test_labels_and_adapt_refuse_bad_requests(client, tiny_run, tiny_model, photo_bytes, tmp_path):
    """Without --labels the loop is off (409); with it, malformed labels are a 422 that
    names the problem, and nothing is written for them."""
    upload = {"file": ("wall.jpg", photo_bytes, "image/jpeg")}
    good = '[{"x": 0, "y": 0, "width": 96, "height": 96, "label": "Positive"}]'
    assert client.post("/v1/labels", files=upload, data={"labels": good}).status_code == 409
    assert client.post("/v1/adapt").status_code == 409
    labels = tmp_path / "labels"
    with TestClient(create_app(tiny_run.path, labels=labels), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as site:
        assert site.get("/health").json()["labels"] == labels.name  # a name, never the server's path
        for text, problem in (("not json", "JSON"), ("[]", "non-empty"), ('[{"x": 0}]', "whole numbers"),
                              ('[{"x": 450, "y": 0, "width": 96, "height": 96, "label": "Positive"}]', "inside"),
                              ('[{"x": 0, "y": 0, "width": 96, "height": 96, "label": "rust"}]', "label must be"),
                              ('[' + ",".join([good[1:-1]] * 5000) + ']', "at most")):
            answer = site.post("/v1/labels", files=upload, data={"labels": text})
            assert answer.status_code == 422 and problem in answer.json()["detail"], (text[:40], answer.text)
        assert not (labels / "labels.csv").exists()
        bad_photo = {"file": ("wall.jpg", b"not a photo", "image/jpeg")}
        assert site.post("/v1/labels", files=bad_photo, data={"labels": good}).status_code == 415
        answer = site.post("/v1/labels", files={"file": ("../../evil\nname.jpg", photo_bytes, "image/jpeg")},
                           data={"labels": good})
        assert answer.status_code == 200 and answer.json()["counts"] == {"Positive": 1, "Negative": 0}
        rows = list(csv.DictReader((labels / "labels.csv").open()))
        # The upload's name is recorded, printable and never a path; the photo is kept under
        # its content's name, in the labels folder, for adapt to sample.
        assert len(rows) == 1 and rows[0]["source"].startswith("page:") and "evil" in rows[0]["source"]
        assert "/" not in rows[0]["source"] and "\n" not in rows[0]["source"]
        assert rows[0]["photo"].startswith(".photos/") and (labels / rows[0]["photo"]).read_bytes() == photo_bytes
        assert sorted(p.name for p in tmp_path.iterdir()) == ["labels"]
        # One class only: adapt explains instead of fitting nonsense.
        answer = site.post("/v1/adapt")
        assert answer.status_code == 422 and "one class" in answer.json()["detail"]
    with TestClient(create_app(tiny_model, labels=tmp_path / "other"), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as bare:
        answer = bare.post("/v1/adapt")
        assert answer.status_code == 409 and "not a run folder" in answer.json()["detail"]


def test_runs_adapted_from_the_page_go_beside_the_labels_folder(tiny_model, tmp_path, monkeypatch):
    labels = tmp_path / "labels"
    labels.mkdir()
    monkeypatch.chdir(labels)
    loop = SiteLoop(".", None, crackscan.load(tiny_model))
    assert loop.next_run_folder() == tmp_path / "labels-adapted-01"


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


def test_a_segmenter_s_marks_are_checked_kept_as_masks_and_a_refusal_is_shown(tiny_segmenter, tiny_run, photo_bytes,
                                                                             tmp_path, monkeypatch):
    """Marks teach a segmenter, tiles a classifier: each server refuses the other's; bad
    marks are a 422 that names the problem and writes nothing; good ones become the photo's
    mask in the labels folder (marking it again replaces it); an adaptation the site's photos
    call no better is answered with both figures, the photos by name, and nothing swapped."""
    from crackscan.segment.adapt import NotBetter
    from crackscan.segment.pixels import PixelCounts

    upload = {"file": ("wall.jpg", photo_bytes, "image/jpeg")}
    good = '{"not_cracks": [{"points": [[10, 10], [200, 40]], "width": 4}], "strokes": [{"points": [[20, 300], [400, 320]]}]}'
    with TestClient(create_app(tiny_run.path, labels=tmp_path / "tiles"), base_url=LOCAL) as tiles:
        answer = tiles.post("/v1/marks", files=upload, data={"marks": good})
        assert answer.status_code == 409 and "tile classifier" in answer.json()["detail"]
    labels = tmp_path / "labels"
    with TestClient(create_app(tiny_segmenter, labels=labels), base_url=LOCAL, raise_server_exceptions=False) as site:
        assert site.get("/health").json()["teaches_by"] == "marks"
        answer = site.post("/v1/labels", files=upload, data={"labels": "[]"})
        assert answer.status_code == 409 and "marks" in answer.json()["detail"]
        for text, problem in (("[1]", "an object"), ('{"strokes": []}', "no marks"), ('{"paint": [1]}', "an object"),
                              ('{"strokes": [{"points": [[1, 2, 3]]}]}', "[x, y]"),
                              ('{"strokes": [{"points": [[0, 0], [900, 10]]}]}', "outside the 500x400"),
                              ('{"not_cracks": [{"points": [[0, 0]]}]}', "its width"),
                              ('{"strokes": [{"points": [[0, NaN]]}]}', "[x, y]"),
                              ('{"strokes": [{"points": [[0, 0]]}], "threshold": 1.5}', "between 0 and 1")):
            answer = site.post("/v1/marks", files=upload, data={"marks": text})
            assert answer.status_code == 422 and problem in answer.json()["detail"], (text, answer.text)
        assert not labels.exists() or not any(labels.iterdir())
        for _ in range(2):
            answer = site.post("/v1/marks", files={"file": ("../site/wall 1.jpg", photo_bytes, "image/jpeg")},
                               data={"marks": good})
            assert answer.status_code == 200, answer.text
        assert answer.json()["marked_photos"] == 1 and answer.json()["crack_pixels"] > 0
        [photo] = (labels / "photos").iterdir()
        [mask] = (labels / "masks").glob("*.png")
        assert photo.read_bytes() == photo_bytes and photo.name.endswith("-wall_1.jpg") and mask.stem == photo.stem
        values = np.asarray(Image.open(mask))
        assert values.shape == (400, 500) and values[10:40, 100].max() == 0  # the false crack, clear
        assert (values[295:325, 100:380] == 255).any() and (values[295:325, 100:380] == 128).any()  # the stroke
        # Every other pixel is the crack map the user saw, at the page's threshold: what they accepted.
        from crackscan.images import read_pixels
        from crackscan.photo.segment import crack_probability_map

        seen = crack_probability_map(crackscan.load(tiny_segmenter), read_pixels(photo_bytes)) >= 0.5
        away = np.ones((400, 500), bool)
        away[:60, :], away[280:340, :] = False, False
        assert (values[away] == np.where(seen[away], 255, 0)).all()
        assert json.loads((labels / "masks" / "masks.json").read_text()) == {"ignore_value": 128}
        answer = site.post("/v1/adapt")
        assert answer.status_code == 422 and "at least 2" in answer.json()["detail"]

        def refused(*args, **kwargs):
            raise NotBetter("not better", PixelCounts(5, 10, 5, 10), PixelCounts(4, 10, 4, 10),
                            {"1f2e3d4c-wall_1.jpg": (PixelCounts(5, 10, 5, 10), PixelCounts(4, 10, 4, 10))})

        monkeypatch.setattr("crackscan.segment.adapt.adapt_segmenter", refused)
        answer = site.post("/v1/adapt")
        assert answer.status_code == 200 and answer.json()["swapped"] is False
        cv = answer.json()["site_cross_validated"]
        assert cv["figure"] == "pixel F1 within 2 px 0.500 -> 0.400" and cv["per_photo"][0]["photo"] == "1f2e3d4c-wall_1.jpg"
        assert site.get("/health").json()["adapted_runs"] == [] and sorted(p.name for p in tmp_path.iterdir()) == [
            "labels", "tiles"]
