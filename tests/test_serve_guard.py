"""Who may talk to the server, second pass (issue 29): tokens that are no lock, '*' hosts,
Host and Origin look-alikes, the token's cookie behind TLS, idle sockets at the cap."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from crackscan.errors import CrackscanError
from crackscan.serve.guard import host_name, hosts_answered, interface_addresses, token_problem

from .conftest import running_server

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
