"""The budgets every request works within, so one client cannot tie the server up.

Bytes in the body, counted as they stream in, chunked or not (BodyBudget); seconds to send
headers (header_timeout_protocol) and body; decoded pixels held by all requests at once
(PixelBudget: later requests wait their turn instead of taking the memory); heavy work on a
few low-priority threads (HeavyWork), so that a flood of it cannot starve quick requests;
and work that stops once its client has gone.
"""

import asyncio
import contextlib
import ctypes
import os
import threading
from typing import Any

from .. import settings
from ..errors import CrackscanError

# Requests decoding more pixels than this (every scan, big classify uploads) run in a small
# pool of threads at lower CPU priority, so that a flood of heavy work cannot starve the
# quick requests: a patch classified in milliseconds should not wait behind 90 MP decodes.
HEAVY_PIXELS = 4_000_000
HEAVY_WORKERS = 2
HEAVY_NICENESS = 19


def serve_limits(**given: Any) -> dict[str, Any]:
    """The server's budgets: the defaults of settings.SERVE_SETTINGS, with ``given`` checked."""
    defaults = settings.defaults(settings.SERVE_SETTINGS)
    limits = {name: defaults[name] for name in settings.SERVE_LIMIT_NAMES}
    limits.update(settings.check_all(settings.SERVE_SETTINGS, given))
    if limits["max_request_pixels"] > limits["max_busy_pixels"]:
        raise CrackscanError("max_request_pixels cannot be above max_busy_pixels: such a request could never run")
    return limits


class HeavyWork:
    """A few worker threads at lower CPU priority (Linux lets a thread lower its own)."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(HEAVY_WORKERS, thread_name_prefix="crackscan-heavy",
                                        initializer=_lower_this_threads_priority)

    async def run(self, work: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)


class NormalWork:
    """One worker thread at the server's own priority, made now, on the thread that makes the
    app: Linux threads take the priority of the thread that starts them, so work begun on a
    low-priority thread (a model loaded after adapt) is handed here to run, and to start the
    model's own threads, at normal priority."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="crackscan-normal")
        self._pool.submit(lambda: None).result()  # start the thread here, not on first use

    def __call__(self, work: Any, *args: Any) -> Any:
        return self._pool.submit(work, *args).result()


def warm(predictor: Any) -> None:
    """Runs the model once on a lone image and once on a full batch, on the calling thread:
    the runtimes make their threads (TensorFlow's pools, LiteRT's interpreters) on first use,
    and they must not be made on a low-priority thread; the first request is quicker too."""
    import numpy as np

    size = predictor.input_size
    for count in (1, predictor.batch_size):
        predictor.outputs(np.zeros((count, size, size, 3), np.uint8))


def _lower_this_threads_priority() -> None:
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: keep the default
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HEAVY_NICENESS)


def return_freed_memory_to_the_system() -> None:
    """glibc gives each thread its own malloc arena and raises its mmap threshold as large
    blocks are freed, so a server whose threads decode photos keeps hundreds of MB of freed
    memory per arena. Two arenas and a fixed 1 MB threshold (large buffers are mapped and
    unmapped) keep its memory near what it holds."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    m_mmap_threshold, m_arena_max = -3, -8
    libc.mallopt(m_arena_max, 2)
    libc.mallopt(m_mmap_threshold, 1 << 20)


class PixelBudget:
    """Decoded pixels all requests may hold at once; a request waits until its share is free.

    Memory follows decoded pixels (a 100 MP photo is 300 MB as RGB, more while it is
    resized), so this bounds the server's memory however many uploads arrive together.
    """

    def __init__(self, total: int):
        self.free = total
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int) -> Any:
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= pixels)
            self.free -= pixels
        try:
            yield
        finally:
            async with self._changed:
                self.free += pixels
                self._changed.notify_all()


@contextlib.asynccontextmanager
async def stop_when_client_leaves(request: Any, stop: threading.Event) -> Any:
    """Sets ``stop`` if the client disconnects while the block runs, so the work thread,
    which asks between batches, ends instead of computing an answer nobody reads."""

    async def watch() -> None:
        while not stop.is_set():
            if await request.is_disconnected():
                stop.set()
                return
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


class BodyBudget:
    """ASGI middleware: the request body may be at most ``max_bytes``, counted as it
    streams in (a chunked body has no Content-Length to check), and must arrive within
    ``seconds``. A declared length over the limit is refused before anything is read."""

    def __init__(self, app: Any, max_bytes: int, seconds: float):
        self.app, self.max_bytes, self.seconds = app, max_bytes, seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from fastapi import HTTPException
        from starlette.responses import JSONResponse

        too_large = f"request body larger than the limit of {self.max_bytes / 1024 / 1024:g} MB"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": too_large}, status_code=413)(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        received = 0
        body_done = False

        async def budgeted_receive() -> Any:
            nonlocal received, body_done
            if body_done:  # after the body, receive only waits for a disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"request body not received within {self.seconds:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, too_large)
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, budgeted_receive, send)


def header_timeout_protocol(seconds: float) -> type:
    """uvicorn's HTTP/1.1 protocol, closing connections that do not finish sending a request's
    headers within ``seconds`` (uvicorn itself waits forever: a slow-loris client could hold
    every connection with a few bytes a minute). At the connection cap, a new connection
    closes the longest-idle ones (no request under way: never sent one, or kept alive after
    one) rather than being answered 503: idle sockets, however many, cannot shut others out."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _idle_since: float = 0.0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._idle_since = self.loop.time()
            self._arm()
            self._make_room()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._idle_since = self.loop.time()

        def _is_idle(self) -> bool:
            return (self.conn.their_state == h11.IDLE and self.conn.our_state == h11.IDLE
                    and self.transport is not None and not self.transport.is_closing())

        def _make_room(self) -> None:
            """Closes the longest-idle other connections until this one fits under the cap."""
            if self.limit_concurrency is None:
                return
            excess = len(self.connections) - self.limit_concurrency + 1
            if excess <= 0:
                return
            idle = sorted((c for c in self.connections if c is not self and isinstance(c, HeaderTimeoutProtocol)
                           and c._is_idle()), key=lambda c: c._idle_since)
            for victim in idle[:excess]:
                self.connections.discard(victim)  # counted out now: its connection_lost comes later
                victim.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state == h11.IDLE:  # still waiting for (the rest of) the headers
                if self._header_timer is None:
                    self._arm()
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(seconds, self._timed_out)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _timed_out(self) -> None:
            self._header_timer = None
            if self.conn.their_state == h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol
