"""HTTP API and web page over the same predictor and scan functions as the CLI.

No `from __future__ import annotations` here: FastAPI reads the endpoint annotations,
which name types imported inside create_app.

The model is loaded once; requests share it (runners serialise their own inference, so
decoding of concurrent uploads still overlaps). Uploads are judged by content, never by
name, and every refusal is a 4xx JSON answer with one-line ``detail``.

One client must not be able to tie the server up, so every request works within budgets
(settings.SERVE_SETTINGS, shown in /health): bytes in the body, counted as they stream in,
chunked or not; seconds to send headers and body; decoded pixels per image and per
request, read from the headers before anything is decoded; decoded pixels held by all
requests at once (later requests wait their turn instead of taking the memory); tiles per
scan; and a scan stops between batches once its client has gone.
"""


import asyncio
import base64
import contextlib
import ctypes
import io
import json
import logging
import os
import socket
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from . import runs, settings
from .adapt import adapt
from .data import ImageReadError, image_pixel_count, read_pixels
from .errors import Cancelled, CrackscanError, LimitExceeded, MissingDependencyError
from .labels import LabelSet
from .predict import Predictor, load, load_head_on_backbone
from .scan import scan
from .version import __version__

log = logging.getLogger("crackscan.server")

# HTTP status for each kind of unreadable upload (data.READ_ERROR_KINDS).
STATUS_FOR_READ_ERROR = {"not_image": 415, "unsupported": 415, "corrupt": 400, "too_many_pixels": 413,
                         "too_large": 413, "unreadable": 400}
CLIENT_CLOSED_REQUEST = 499  # nginx's code: nobody is left to read the answer
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


def create_app(model: str | os.PathLike | Any, labels: str | os.PathLike | None = None, **limits: Any) -> Any:
    """The FastAPI app. With ``labels`` (a folder), the page's labelling loop is on: tiles
    flipped on the page are saved there (/v1/labels), and /v1/adapt refits the served run's
    head on them and serves the new run at once. The server then writes nowhere but that
    folder and the new run folders beside it."""
    try:
        from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
        from fastapi.responses import HTMLResponse, JSONResponse
    except ImportError:
        raise MissingDependencyError("fastapi", "crackscan serve", extra="serve") from None
    from starlette.concurrency import run_in_threadpool

    limits = serve_limits(**limits)
    heavy = HeavyWork()
    max_body = int(limits["max_upload_mb"] * 1024 * 1024)
    predictor = model if isinstance(model, Predictor) else load(model)
    loop = SiteLoop(labels, None if isinstance(model, Predictor) else runs.folder_of(model), predictor)
    page = resources.files("crackscan.web").joinpath("index.html").read_text()
    app = FastAPI(title="crackscan", version=__version__,
                  description="Crack / no-crack classification of concrete images and whole-photo crack maps.")
    app.add_middleware(BodyBudget, max_bytes=max_body, seconds=limits["request_timeout"])
    busy = PixelBudget(limits["max_busy_pixels"])

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Any:
        log.exception("error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(error).__name__}"}, status_code=500)

    def refusal(error: CrackscanError) -> HTTPException:
        if isinstance(error, ImageReadError):
            return HTTPException(STATUS_FOR_READ_ERROR[error.kind], str(error))
        if isinstance(error, Cancelled):
            return HTTPException(CLIENT_CLOSED_REQUEST, str(error))
        if isinstance(error, LimitExceeded):
            return HTTPException(422, str(error))
        return HTTPException(400, str(error))

    async def read_uploads(uploads: list[Any]) -> tuple[list[tuple[str, bytes]], int]:
        """Each upload's bytes and the request's decoded pixels, judged before decoding."""
        contents, pixels = [], 0
        for upload in uploads:
            name = upload.filename or "upload"
            content = await upload.read()
            if not content:
                raise HTTPException(400, f"{name}: empty file")
            try:
                pixels += image_pixel_count(content, name, limits["max_pixels"])
            except ImageReadError as error:
                raise refusal(error) from None
            contents.append((name, content))
        if pixels > limits["max_request_pixels"]:
            raise HTTPException(413, f"the images of this request decode to {pixels:,} pixels, over the limit of "
                                     f"{limits['max_request_pixels']:,} per request")
        return contents, pixels

    def decode(name: str, content: bytes) -> Any:
        return read_pixels(content, limits["max_pixels"], name)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, Any]:
        predictor = loop.predictor
        info = predictor.info
        return {"status": "ok", "model": str(predictor.path), "format": predictor.format,
                "classes": list(info.class_names), "positive_class": info.positive_class,
                "input_size": info.input_size, "patch_size": info.patch_size, "version": __version__,
                "labels": str(loop.folder) if loop.folder else None, "can_adapt": loop.can_adapt,
                "adapted_runs": [str(run) for run in loop.made], "limits": limits}

    @app.post("/v1/classify")
    async def classify(files: list[UploadFile] = File(..., description="one or more images")) -> dict[str, Any]:
        """Label and crack probability of each uploaded image (a patch, or a whole photo squeezed to one)."""
        contents, pixels = await read_uploads(files)
        predictor = loop.predictor

        def work() -> list[Any]:
            return predictor.predict([decode(name, content) for name, content in contents])

        async with busy.hold(pixels):
            try:
                predictions = await (heavy.run(work) if pixels > HEAVY_PIXELS else run_in_threadpool(work))
            except CrackscanError as error:
                raise refusal(error) from None
        return {"results": [
            {"filename": name, "label": p.label, "crack_probability": p.crack_probability,
             "probabilities": p.probabilities}
            for (name, _), p in zip(contents, predictions)
        ]}

    @app.post("/v1/scan", openapi_extra={"parameters": settings.query_parameters(settings.SCAN_QUERY)})
    async def scan_photo(request: Request, file: UploadFile = File(..., description="one photo")) -> dict[str, Any]:
        """Tiles a photo at the training patch scale: tile grid, summary and crack-map overlay."""
        try:
            options = settings.from_query(settings.SCAN_QUERY, request.query_params)
        except CrackscanError as error:
            raise HTTPException(422, str(error)) from None
        [(name, content)], pixels = await read_uploads([file])
        stop = threading.Event()
        predictor = loop.predictor

        def work() -> tuple[Any, str | None]:
            if stop.is_set():  # left while waiting for its turn: decode nothing
                raise Cancelled("the client left before the scan started")
            result = scan(predictor, decode(name, content), options["tile"], options["stride"], options["threshold"],
                          limits["max_pixels"], max_tiles=limits["max_tiles"], should_stop=stop.is_set)
            return result, _png_base64(result.overlay()) if options["overlay"] else None

        async with _stop_when_client_leaves(request, stop), busy.hold(pixels):
            try:
                result, overlay_png = await heavy.run(work)
            except CrackscanError as error:
                raise refusal(error) from None
        result.summary["photo"] = name
        info = predictor.info
        answer: dict[str, Any] = {
            "summary": result.summary, "tiles": [t.__dict__ for t in result.tiles],
            "positive_class": info.positive_class,
            "negative_class": info.negative_class}
        if overlay_png is not None:
            answer["overlay_png_base64"] = overlay_png
        return answer

    @app.post("/v1/labels")
    async def save_labels(file: UploadFile = File(..., description="the photo the tiles are in"),
                          labels: str = Form(..., description='JSON: [{"x", "y", "width", "height", "label"}]')
                          ) -> dict[str, Any]:
        """Stores labelled tiles of a photo (crops at the photo's pixels) in the labels folder."""
        if loop.folder is None:
            raise HTTPException(409, "this server keeps no labels: start it with --labels DIR")
        [(name, content)], pixels = await read_uploads([file])
        async with busy.hold(pixels):
            try:
                photo = await run_in_threadpool(decode, name, content)
                entries = parse_labels(labels, photo.shape[1], photo.shape[0], loop.predictor.info)
                saved = await run_in_threadpool(loop.save, photo, content, name, entries)
            except CrackscanError as error:
                raise (HTTPException(422, str(error)) if not isinstance(error, ImageReadError)
                       else refusal(error)) from None
        return saved

    @app.post("/v1/adapt")
    async def adapt_to_labels() -> dict[str, Any]:
        """Refits the served run's head on the saved labels and serves the new run."""
        if not loop.can_adapt:
            raise HTTPException(409, loop.why_not())
        try:
            return await heavy.run(loop.adapt)
        except CrackscanError as error:
            raise HTTPException(409 if isinstance(error, LoopBusy) else 422, str(error)) from None

    return app


MAX_LABELS_PER_REQUEST = 4096


class LoopBusy(CrackscanError):
    pass


def parse_labels(text: str, width: int, height: int, info: Any) -> list[tuple[tuple[int, int, int, int], bool]]:
    """The page's labels for one photo, checked: boxes inside the photo, known class names."""
    try:
        entries = json.loads(text)
    except ValueError:
        raise CrackscanError("labels must be JSON: a list of {x, y, width, height, label}") from None
    if not isinstance(entries, list) or not entries:
        raise CrackscanError("labels must be a non-empty list of {x, y, width, height, label}")
    if len(entries) > MAX_LABELS_PER_REQUEST:
        raise CrackscanError(f"at most {MAX_LABELS_PER_REQUEST} labels per request, got {len(entries)}")
    checked = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise CrackscanError(f"each label must be an object, got {entry!r:.60}")
        box = tuple(entry.get(key) for key in ("x", "y", "width", "height"))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in box):
            raise CrackscanError(f"x, y, width and height must be whole numbers, got {box!r:.80}")
        x, y, w, h = box
        if w < 8 or h < 8 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise CrackscanError(f"tile {box} is not inside the {width}x{height} photo (or is under 8 px)")
        if entry.get("label") not in info.class_names:
            raise CrackscanError(f"label must be one of {', '.join(info.class_names)}, got {entry.get('label')!r:.40}")
        checked.append(((x, y, w, h), entry["label"] == info.positive_class))
    return checked


class SiteLoop:
    """The labelling loop behind the page: one labels folder, the run being served, the runs
    adapt made from it; one adaptation at a time."""

    def __init__(self, folder: str | os.PathLike | None, run: Any, predictor: Predictor):
        self.folder = Path(folder) if folder is not None else None
        self.origin = run
        self.predictor = predictor
        self.made: list[Path] = []
        self._lock = threading.Lock()
        if self.folder is not None:
            if self.folder.exists() and not self.folder.is_dir():
                raise CrackscanError(f"--labels {self.folder} is a file, not a folder")
            self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def can_adapt(self) -> bool:
        return self.folder is not None and self.origin is not None

    def why_not(self) -> str:
        if self.folder is None:
            return "this server keeps no labels: start it with --labels DIR"
        return "the served model is not a run folder (adapt refits a run's head): serve a run with --labels DIR"

    def save(self, photo: Any, content: bytes, name: str, entries: list) -> dict[str, Any]:
        # A name is recorded, never used as a path: keep it printable.
        shown = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in name)[:200] or "upload"
        info = self.predictor.info
        with self._lock:
            labels = LabelSet(self.folder, (info.negative_class, info.positive_class))
            kept = labels.keep_photo(content, shown)
            for (x, y, w, h), crack in entries:
                labels.add(photo[y : y + h, x : x + w], kept, (x, y, w, h), crack, f"page:{shown}")
            labels.save()
        return {"saved": len(entries), "labels": str(self.folder), "counts": labels.counts()}

    def adapt(self) -> dict[str, Any]:
        if not self._lock.acquire(blocking=False):
            raise LoopBusy("an adaptation is already running: try again when it is done")
        try:
            out = next(self.folder.parent / f"{self.folder.name}-adapted-{n:02d}" for n in range(1, 10_000)
                       if not (self.folder.parent / f"{self.folder.name}-adapted-{n:02d}").exists())
            made = adapt(self.origin, self.folder, out, keep_backbone_in_parent=False)
            self.predictor = load_head_on_backbone(made.path)
            self.made.append(made.path)
        finally:
            self._lock.release()
        m = made.metrics
        return {"run": str(made.path), "model": str(self.predictor.path), "site_tiles": m["site_tiles"],
                "site_cross_validated": m["site_cross_validated"], "parent_test": m["parent_test"],
                "seconds": m["seconds"]}


class HeavyWork:
    """A few worker threads at lower CPU priority (Linux lets a thread lower its own)."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(HEAVY_WORKERS, thread_name_prefix="crackscan-heavy",
                                        initializer=_lower_this_threads_priority)

    async def run(self, work: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)


def _lower_this_threads_priority() -> None:
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: keep the default
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HEAVY_NICENESS)


def _return_freed_memory_to_the_system() -> None:
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
async def _stop_when_client_leaves(request: Any, stop: threading.Event) -> Any:
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


def _png_base64(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def header_timeout_protocol(seconds: float) -> type:
    """uvicorn's HTTP/1.1 protocol, closing connections that do not finish sending a request's
    headers within ``seconds`` (uvicorn itself waits forever: a slow-loris client could hold
    every connection with a few bytes a minute)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

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


def build_server(model: str | os.PathLike | Any, host: str = "127.0.0.1", port: int = 8000,
                 labels: str | os.PathLike | None = None, **limits: Any) -> Any:
    """The uvicorn server ``serve`` runs: the app, the header timeout and the connection cap."""
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("uvicorn", "crackscan serve", extra="serve") from None
    settings.check_all(settings.SERVE_SETTINGS, {"host": host, "port": port})
    limits = serve_limits(**limits)
    config = uvicorn.Config(create_app(model, labels, **limits), host=host, port=port, log_level="warning",
                            http=header_timeout_protocol(limits["header_timeout"]),
                            limit_concurrency=limits["max_connections"], timeout_keep_alive=5)
    return uvicorn.Server(config)


def serve(model: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, announce: Any = None,
          labels: str | os.PathLike | None = None, **limits: Any) -> None:
    """Loads the model, then serves; ``announce(url)`` is called once the model is loaded."""
    _return_freed_memory_to_the_system()
    server = build_server(model, host, port, labels, **limits)
    listening = _bind(host, port)
    if announce is not None:
        announce(f"http://{host}:{port}/")
    server.run(sockets=[listening])


def _bind(host: str, port: int) -> Any:
    """The listening socket, bound here so that a taken port is a one-line error (uvicorn
    would log it and exit)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
    except OSError as error:
        raise CrackscanError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return listening
