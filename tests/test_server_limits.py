"""The server's budgets, against the real server (uvicorn on loopback) with hostile clients:
huge tile counts, many-pixel requests, chunked bodies, half-sent requests, clients that
leave mid-scan. Every request loop here is bounded in count and time."""

from __future__ import annotations

import io
import os
import socket
import time
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("uvicorn")
import crackscan  # noqa: E402
from crackscan.runtime.predictor import Predictor  # noqa: E402
httpx = pytest.importorskip("httpx")



from .conftest import png_declaring, running_server  # noqa: E402

LIMITS = dict(max_upload_mb=1.0, max_pixels=4_000_000, max_request_pixels=5_000_000, max_busy_pixels=6_000_000,
              max_tiles=500, request_timeout=1.5, header_timeout=1.0)


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


class CountingRunner:
    """The real model's runner, slowed down and counting its batches, so that a test can
    see whether a scan goes on after its client has gone."""

    def __init__(self, runner, delay: float):
        self.runner, self.delay, self.calls = runner, delay, 0
        self.batch_size = getattr(runner, "batch_size", 32)

    def __call__(self, images):
        self.calls += 1
        time.sleep(self.delay)
        return self.runner(images)


@pytest.fixture(scope="module")
def counting(tiny_run):
    real = crackscan.load(tiny_run.path)
    return CountingRunner(real.runner, delay=0.1), real


@pytest.fixture(scope="module")
def server(counting):
    runner, real = counting
    with running_server(Predictor(runner, real.info, real.path), **LIMITS) as url:
        yield url


def address(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname, parsed.port


def test_health_shows_the_limits(server):
    limits = httpx.get(server + "health").json()["limits"]
    assert limits["max_tiles"] == 500 and limits["max_request_pixels"] == 5_000_000
    assert limits["header_timeout"] == 1.0 and "max_busy_pixels" in limits


def test_a_scan_over_the_tile_cap_is_refused_saying_the_cap(server, counting):
    before = counting[0].calls
    answer = httpx.post(server + "v1/scan?tile=16&stride=1", files={"file": ("p.png", png(227, 227))}, timeout=30)
    assert answer.status_code == 422 and "44,944 tiles, over the limit of 500" in answer.json()["detail"]
    assert counting[0].calls == before  # refused before any tile was classified


def test_bad_query_values_are_422_with_the_setting_named(server):
    answer = httpx.post(server + "v1/scan?stride=0", files={"file": ("p.png", png(64, 64))}, timeout=30)
    assert answer.status_code == 422 and "stride must be" in answer.json()["detail"]


def test_decoded_pixels_per_request_are_capped_before_decoding(server):
    bombs = [("files", (f"{i}.png", png_declaring(1900, 1900), "image/png")) for i in range(2)]  # 2 x 3.6 MP
    answer = httpx.post(server + "v1/classify", files=bombs, timeout=30)
    assert answer.status_code == 413 and "over the limit of 5,000,000 per request" in answer.json()["detail"]
    single = httpx.post(server + "v1/classify", files={"files": ("big.png", png_declaring(3000, 3000))}, timeout=30)
    assert single.status_code == 413 and "pixel limit" in single.json()["detail"]


def test_a_chunked_body_is_cut_off_at_the_limit(server):
    sent = 0

    def chunks():
        nonlocal sent
        boundary_head = b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n\r\n'
        yield boundary_head
        for _ in range(300):  # 300 x 64 KB = 19 MB if the server read it all
            sent += 65536
            yield b"\0" * 65536

    try:
        answer = httpx.post(server + "v1/classify", content=chunks(), timeout=30,
                            headers={"content-type": "multipart/form-data; boundary=b"})
    except httpx.HTTPError:  # the server may close the connection as it answers
        answer = None
    if answer is not None:
        assert answer.status_code == 413 and "larger than the limit of 1 MB" in answer.json()["detail"]
    assert sent < 19 * 1024 * 1024


def read_reply(client: socket.socket) -> bytes:
    """A whole HTTP reply, however the network splits it: the headers, then as many body bytes
    as they declare (one recv may return part of either on a busy machine)."""
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = client.recv(4096)
        if not chunk:
            return reply
        reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    while length is not None and len(body) < length:
        chunk = client.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_half_sent_body_times_out(server):
    with socket.create_connection(address(server), timeout=10) as client:
        client.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                       b"Content-Length: 5000\r\n\r\n--b\r\n")
        started = time.monotonic()
        reply = read_reply(client)
        assert b" 408 " in reply.split(b"\r\n")[0] and b"not received within 1.5 s" in reply
        assert time.monotonic() - started < 8


def test_half_sent_headers_are_dropped(server):
    with socket.create_connection(address(server), timeout=10) as client:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finishes its headers
        started = time.monotonic()
        assert client.recv(4096) == b""  # closed by the server
        assert time.monotonic() - started < 8
    assert httpx.get(server + "health").status_code == 200


def test_a_scan_stops_when_its_client_leaves(server, counting):
    runner = counting[0]
    photo = png(800, 800)
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="p.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + photo + b"\r\n--b--\r\n")
    request = (b"POST /v1/scan?tile=40&stride=40&overlay=false HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: " + str(len(body)).encode()
               + b"\r\n\r\n" + body)
    before = runner.calls
    with socket.create_connection(address(server), timeout=10) as client:
        client.sendall(request)  # 400 tiles: 13 batches of 32 at 0.1 s each
        deadline = time.monotonic() + 10
        while runner.calls < before + 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    time.sleep(1.0)
    after_leaving = runner.calls
    time.sleep(1.0)
    assert runner.calls == after_leaving, "the scan went on after its client had gone"
    assert after_leaving - before < 13


def test_well_formed_requests_still_work_after_the_hostile_ones(server, tiny_dataset):
    patch = (tiny_dataset / "Positive" / "00001.jpg").read_bytes()
    answer = httpx.post(server + "v1/classify", files={"files": ("a.jpg", patch, "image/jpeg")}, timeout=30)
    assert answer.status_code == 200 and answer.json()["results"][0]["label"] in ("Positive", "Negative")


def test_a_taken_port_is_a_one_line_error(capsys, tiny_model):
    from crackscan.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code = main(["serve", str(tiny_model), "--port", str(taken.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 2 and "cannot listen on 127.0.0.1" in err and len(err.strip().splitlines()) == 1


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
