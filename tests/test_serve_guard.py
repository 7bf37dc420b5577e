"""Who may talk to the server: other origins and hosts, tokens (and tokens that are no lock),
'*' hosts, Host and Origin look-alikes, the token's cookie behind TLS, idle sockets at the cap,
label requests that would fill the disk, deep JSON and odd booleans."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from crackscan import synth
from crackscan.errors import CrackscanError
from crackscan.serve.guard import host_name, hosts_answered, interface_addresses, token_problem
from crackscan.site.labels import LABELS_FILE

from .conftest import running_server
from .helpers import LOCAL, jpeg

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from crackscan.serve.app import build_server, create_app  # noqa: E402

MODEL = "crackscan-nano"  # a built-in: no training needed, and its output is not the point here
GOOD_TOKEN = "k2l3j4h5g6f7d8s9a0q1w2e3"


@pytest.mark.parametrize("token", ["", "   ", "a", "short-token", " padded-token-long-enough ", "tab\there-long-enough"])
def test_a_server_other_machines_reach_refuses_an_empty_blank_or_short_token(token):
    with pytest.raises(CrackscanError, match="--token"):
        build_server(MODEL, "0.0.0.0", 8000, token=token)
    assert token_problem(GOOD_TOKEN, True) is None


def test_an_empty_token_is_refused_on_loopback_too_and_an_empty_cookie_never_passes():
    with pytest.raises(CrackscanError, match="empty or blank"):
        build_server(MODEL, "127.0.0.1", 8000, token="")
    with TestClient(create_app(MODEL, token=GOOD_TOKEN), base_url="http://127.0.0.1") as site:
        assert site.get("/health", headers={"Cookie": "crackscan_token="}).status_code == 401
        assert site.get("/health", headers={"Authorization": "Bearer "}).status_code == 401


def test_any_host_is_refused_on_loopback():
    with pytest.raises(CrackscanError, match="DNS rebinding"):
        build_server(MODEL, "127.0.0.1", 8000, allow_host="*")
    build_server(MODEL, "0.0.0.0", 8000, allow_host="*", token=GOOD_TOKEN)  # with a token, it is the user's call


@pytest.mark.parametrize("header, name", [("[::1]:8000", "::1"), ("[::1]", "::1"), ("127.0.0.1:80", "127.0.0.1"),
                                          ("localhost", "localhost")])
def test_host_names_are_read_whole(header, name):
    assert host_name(header) == name


@pytest.mark.parametrize("header", ["[::1].evil.example:8000", "[::1]x", "127.0.0.1:80x", "localhost:abc"])
def test_look_alike_hosts_are_refused(header):
    with TestClient(create_app(MODEL), base_url="http://127.0.0.1") as site:
        assert site.get("/health", headers={"Host": header}).status_code == 403


def test_an_origin_of_another_scheme_may_not_change_the_server():
    with TestClient(create_app(MODEL), base_url="http://127.0.0.1") as site:
        refused = site.post("/v1/classify", headers={"Origin": "https://127.0.0.1"}, files={"files": ("a.jpg", b"x")})
        assert refused.status_code == 403
        same = site.post("/v1/classify", headers={"Origin": "http://127.0.0.1"}, files={"files": ("a.jpg", b"x")})
        assert same.status_code != 403


def test_the_token_cookie_is_secure_behind_tls_and_leaves_the_address_bar():
    with TestClient(create_app(MODEL, token=GOOD_TOKEN), base_url="http://127.0.0.1") as site:
        answer = site.get(f"/?token={GOOD_TOKEN}&lang=en", headers={"X-Forwarded-Proto": "https"},
                          follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/?lang=en"
        assert "; Secure" in answer.headers["set-cookie"]


def test_bound_to_every_interface_it_answers_its_own_addresses():
    answered = hosts_answered("0.0.0.0")
    assert interface_addresses() <= answered
    assert {"127.0.0.1", "localhost"} <= answered


def test_idle_sockets_cannot_shut_others_out():
    """More idle connections than the cap (never a byte sent): a poll still gets its answer,
    as the longest-idle connections are closed to make room."""
    with running_server(MODEL, max_connections=8) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        idle = []
        try:
            for _ in range(20):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            time.sleep(0.2)
            answers = []
            for _ in range(5):
                with httpx.Client(timeout=30) as client:
                    answers.append(client.get(url + "health").status_code)
            assert answers == [200] * 5, answers
        finally:
            for connection in idle:
                with contextlib.suppress(OSError):
                    connection.close()


@pytest.fixture(scope="module")
def photo_bytes() -> bytes:
    return jpeg(synth.make_photo(np.random.default_rng(3), 400, 300, cracks=1))


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


def test_deep_json_and_odd_booleans_are_4xx(tiny_model, tiny_run, tmp_path, photo_bytes):
    with TestClient(create_app(tiny_run.path, labels=tmp_path / "labels"), base_url=LOCAL,
                    raise_server_exceptions=False) as site:
        upload = {"file": ("wall.jpg", photo_bytes, "image/jpeg")}
        answer = site.post("/v1/labels", files=upload, data={"labels": "[" * 100_000 + "]" * 100_000})
        assert answer.status_code == 422
        for value in ("2", "", "maybe"):
            answer = site.post(f"/v1/scan?overlay={value}", files=upload)
            assert answer.status_code == 422 and "true or false" in answer.json()["detail"], answer.text
