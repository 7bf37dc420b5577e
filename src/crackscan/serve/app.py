"""The HTTP API and web page over the same predictor and scan functions as the CLI: routes only.

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


import base64
import io
import logging
import os
import socket
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from .. import settings
from ..errors import Cancelled, CrackscanError, LimitExceeded, MissingDependencyError, WriteError
from ..images import ImageReadError, image_pixel_count, read_pixels
from ..model.registry import resolve
from ..photo.overlay import reduced_mask
from ..photo.options import ScanOptions
from ..photo.scan import scan
from ..runtime.predictor import Predictor, as_predictor
from ..version import __version__
from .budgets import (HEAVY_PIXELS, BodyBudget, HeavyWork, NormalWork, PixelBudget, header_timeout_protocol,
                      return_freed_memory_to_the_system, serve_limits, stop_when_client_leaves, warm)
from .guard import RequestGuard, hosts_answered, is_loopback, new_token, token_problem
from .site_loop import LabelBudgetExceeded, LoopBusy, SiteLoop, parse_labels, parse_marks

log = logging.getLogger("crackscan.server")

# HTTP status for each kind of unreadable upload (images.READ_ERROR_KINDS).
STATUS_FOR_READ_ERROR = {"not_image": 415, "unsupported": 415, "corrupt": 400, "too_many_pixels": 413,
                         "too_large": 413, "unreadable": 400}
CLIENT_CLOSED_REQUEST = 499  # nginx's code: nobody is left to read the answer


def refusal(error: CrackscanError) -> Any:
    """The HTTP error for a user error: by its kind, never by its wording."""
    from fastapi import HTTPException

    if isinstance(error, ImageReadError):
        return HTTPException(STATUS_FOR_READ_ERROR[error.kind], str(error))
    if isinstance(error, Cancelled):
        return HTTPException(CLIENT_CLOSED_REQUEST, str(error))
    if isinstance(error, WriteError):
        return HTTPException(507, str(error))  # Insufficient Storage: the disk's doing
    if isinstance(error, LabelBudgetExceeded):
        return HTTPException(413, str(error))
    if isinstance(error, LimitExceeded):
        return HTTPException(422, str(error))
    return HTTPException(400, str(error))


async def read_uploads(uploads: list[Any], limits: dict[str, Any]) -> tuple[list[tuple[str, bytes]], int]:
    """Each upload's bytes and the request's decoded pixels, judged before decoding."""
    from fastapi import HTTPException

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


def create_app(model: str | os.PathLike | Any, labels: str | os.PathLike | None = None, *,
               hosts: frozenset[str] | None = None, token: str | None = None, **limits: Any) -> Any:
    """The FastAPI app. With ``labels`` (a folder), the page's labelling loop is on: tiles
    flipped on the page (/v1/labels), or for a segmenter marks on its cracks (/v1/marks), are
    saved there, and /v1/adapt teaches the served model from them and serves the new run
    when the site's cross-validation says it is better. The server then writes nowhere but that
    folder and the new run folders beside it. ``hosts`` are the Host names it answers to
    (default: loopback names), ``token`` the access token every request must carry (guard).
    Answers name files by their name, never by the server's absolute paths.

    The routes are closures over one app's state (the model, the labelling loop, the
    budgets), so this function is long while each route is a few lines; what routes share
    (refusals, reading uploads, the budgets) lives in module functions and serve.budgets."""
    try:
        from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
        from fastapi.responses import HTMLResponse, JSONResponse
    except ImportError:
        raise MissingDependencyError("fastapi", "crackscan serve", extra="serve") from None
    from starlette.concurrency import run_in_threadpool

    limits = serve_limits(**limits)
    heavy = HeavyWork()
    max_body = int(limits["max_upload_mb"] * 1024 * 1024)
    predictor = as_predictor(model)
    warm(predictor)  # on this thread, at normal priority, before any heavy thread exists
    normal = NormalWork()
    # The run a served model belongs to (its folder, or the run of the file or predictor given):
    # what the labelling loop adapts.
    served_as = predictor.path if isinstance(model, Predictor) else model
    served = resolve(served_as) if served_as is not None else None
    # A run adapts from its folder, a built-in model by its name (adapt makes its float parent).
    origin = None if served is None else served.run or (served.builtin.name if served.builtin else None)
    loop = SiteLoop(labels, origin, predictor,
                    limits["max_label_mb"], limits["max_labels_folder_mb"], load_on=normal,
                    adapt_steps=limits["adapt_steps"])
    page = resources.files("crackscan.serve.web").joinpath("index.html").read_text()
    app = FastAPI(title="crackscan", version=__version__,
                  description="Crack / no-crack classification of concrete images and whole-photo crack maps.")
    app.add_middleware(BodyBudget, max_bytes=max_body, seconds=limits["request_timeout"])
    # Added last, so it runs first: a foreign Host or origin is refused before any body is read.
    app.add_middleware(RequestGuard, hosts=hosts_answered("127.0.0.1") if hosts is None else hosts, token=token)
    busy = PixelBudget(limits["max_busy_pixels"])
    private = Redactor([Path.cwd(), Path.home(), loop.folder, predictor.path])

    def refused(error: CrackscanError, status: int | None = None) -> HTTPException:
        """The HTTP error for a user error, without the server's absolute paths."""
        answer = refusal(error)
        return HTTPException(status or answer.status_code, private(str(error)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Any:
        log.exception("error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(error).__name__}"}, status_code=500)

    def decode(name: str, content: bytes) -> Any:
        return read_pixels(content, limits["max_pixels"], name)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, Any]:
        predictor = loop.predictor
        info = predictor.info
        return {"status": "ok", "model": _name(predictor.path), "format": predictor.format, "task": info.task,
                "classes": list(info.class_names), "positive_class": info.positive_class,
                "input_size": info.input_size, "patch_size": info.patch_size, "version": __version__,
                "run": _name(resolve(predictor.path).run) if predictor.path else None,
                "labels": _name(loop.folder), "can_adapt": loop.can_adapt, "why_not_adapt": loop.why_not(),
                "teaches_by": "marks" if loop.per_pixel else "tiles",
                "adapted_runs": [run.name for run in loop.made], "kept_aside": sorted(loop.kept_aside),
                "limits": limits}

    @app.post("/v1/classify")
    async def classify(files: list[UploadFile] = File(..., description="one or more images")) -> dict[str, Any]:
        """Label and crack probability of each uploaded image (a patch, or a whole photo squeezed to one)."""
        contents, pixels = await read_uploads(files, limits)
        predictor = loop.predictor

        def work() -> list[Any]:
            return predictor.predict([decode(name, content) for name, content in contents])

        async with busy.hold(pixels):
            try:
                predictions = await (heavy.run(work) if pixels > HEAVY_PIXELS else run_in_threadpool(work))
            except CrackscanError as error:
                raise refused(error) from None
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
            scan_options = ScanOptions.from_settings({**options, "max_pixels": limits["max_pixels"]})
        except CrackscanError as error:
            raise refused(error, 422) from None
        [(name, content)], pixels = await read_uploads([file], limits)
        stop = threading.Event()
        predictor = loop.predictor

        def work() -> tuple[Any, str | None]:
            if stop.is_set():  # left while waiting for its turn: decode nothing
                raise Cancelled("the client left before the scan started")
            result = scan(predictor, decode(name, content), scan_options.tile, scan_options.stride,
                          scan_options.threshold, scan_options.max_pixels, max_tiles=limits["max_tiles"],
                          should_stop=stop.is_set, measuring=scan_options.measuring)
            return result, _png_base64(result.overlay()) if options["overlay"] else None

        async with stop_when_client_leaves(request, stop), busy.hold(pixels):
            try:
                result, overlay_png = await heavy.run(work)
            except CrackscanError as error:
                raise refused(error) from None
        result.summary.photo, result.summary.model = name, _name(predictor.path)
        info = predictor.info
        answer: dict[str, Any] = {
            "summary": result.summary.to_dict(), "tiles": [t.to_dict() for t in result.tiles],
            "positive_class": info.positive_class,
            "negative_class": info.negative_class}
        if overlay_png is not None:
            answer["overlay_png_base64"] = overlay_png
        if result.cracks is not None:
            answer["cracks"] = [crack.to_dict() for crack in result.cracks]
        if result.mask is not None:  # a segmenter's: the page re-thresholds it as the slider moves
            reduced = reduced_mask(result.mask)
            answer["mask_png_base64"] = _png_base64(Image.fromarray(reduced))
            answer["mask_size"] = [int(reduced.shape[1]), int(reduced.shape[0])]
        return answer

    @app.post("/v1/labels")
    async def save_labels(file: UploadFile = File(..., description="the photo the tiles are in"),
                          labels: str = Form(..., description='JSON: [{"x", "y", "width", "height", "label"}]')
                          ) -> dict[str, Any]:
        """Stores labelled tiles of a photo (crops at the photo's pixels) in the labels folder."""
        if loop.folder is None:
            raise HTTPException(409, "this server keeps no labels: start it with --labels DIR")
        if loop.per_pixel:
            raise HTTPException(409, "this server serves a segmenter: it learns from marks on its cracks (/v1/marks), "
                                     "not from tiles")
        [(name, content)], pixels = await read_uploads([file], limits)
        async with busy.hold(pixels):
            try:
                photo = await heavy.run(lambda: decode(name, content))
                entries = parse_labels(labels, photo.shape[1], photo.shape[0], loop.predictor.info,
                                       limits["max_label_side"])
                # Saving writes crops: on the low-priority threads, as the heavy work is.
                saved = await heavy.run(lambda: loop.save(photo, content, name, entries))
            except CrackscanError as error:
                raise refused(error, None if isinstance(error, (ImageReadError, WriteError, LabelBudgetExceeded))
                              else 422) from None
        return saved

    @app.post("/v1/marks")
    async def save_marks(file: UploadFile = File(..., description="the photo the marks are on"),
                         marks: str = Form(..., description='JSON: {"not_cracks": [{"points": [[x, y], ...], "width": '
                                                            'w}], "strokes": [{"points": [[x, y], ...]}]}')
                         ) -> dict[str, Any]:
        """Stores a photo and the mask its marks make (the served model's crack map at the page's
        threshold, its false cracks made clear and strokes along missed cracks snapped onto
        them) in the labels folder: a segmenter's labels."""
        if loop.folder is None:
            raise HTTPException(409, "this server keeps no labels: start it with --labels DIR")
        if not loop.per_pixel:
            raise HTTPException(409, "this server serves a tile classifier: it learns from labelled tiles (/v1/labels), "
                                     "not marks")
        [(name, content)], pixels = await read_uploads([file], limits)
        async with busy.hold(pixels):
            try:
                photo = await heavy.run(lambda: decode(name, content))
                not_cracks, strokes, threshold = parse_marks(marks, photo.shape[1], photo.shape[0])
                saved = await heavy.run(lambda: loop.save_marks(photo, content, name, not_cracks, strokes, threshold))
            except CrackscanError as error:
                raise refused(error, None if isinstance(error, (ImageReadError, WriteError, LabelBudgetExceeded))
                              else 422) from None
        return saved

    @app.post("/v1/adapt")
    async def adapt_to_labels() -> dict[str, Any]:
        """Refits the served run's head on the saved labels and serves the new run."""
        if not loop.can_adapt:
            raise HTTPException(409, loop.why_not())
        try:
            return await heavy.run(loop.adapt)
        except CrackscanError as error:
            raise refused(error, 409 if isinstance(error, LoopBusy) else 507 if isinstance(error, WriteError)
                          else 422) from None

    @app.post("/v1/adapt/use")
    async def use_adapted(run: str = Form(..., description="the name of an adapted run kept aside")) -> dict[str, Any]:
        """Serves an adapted run that was kept aside because the labels said it was worse."""
        try:
            return await heavy.run(lambda: loop.use(run))
        except CrackscanError as error:
            raise refused(error, 409 if isinstance(error, LoopBusy) else 422) from None

    return app


def _name(path: Path | None) -> str | None:
    return None if path is None else Path(path).name


class Redactor:
    """Strips the server's own absolute folders from a message: a client is told which file,
    by its name, never where the server keeps it."""

    def __init__(self, places: list[Path | None]):
        folders = {str(Path(place).resolve().parent if Path(place).suffix else Path(place).resolve())
                   for place in places if place is not None}
        self.prefixes = sorted((f for f in folders if f not in ("/", "")), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for prefix in self.prefixes:
            text = text.replace(prefix + os.sep, "").replace(prefix, ".")
        return text


def _png_base64(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def build_server(model: str | os.PathLike | Any, host: str = "127.0.0.1", port: int = 8000,
                 labels: str | os.PathLike | None = None, allow_host: str = "", token: str | None = None,
                 **limits: Any) -> Any:
    """The uvicorn server ``serve`` runs: the app, the header timeout and the connection cap.
    Bound beyond loopback, it refuses to start without an access token."""
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("uvicorn", "crackscan serve", extra="serve") from None
    settings.check_all(settings.SERVE_SETTINGS, {"host": host, "port": port, "allow_host": allow_host, "token": token})
    if token is None and not is_loopback(host):
        raise CrackscanError(f"--host {host} lets other machines reach the server: it needs an access token (--token, "
                             "or let crackscan serve make one)")
    problem = token_problem(token, not is_loopback(host))
    if problem:
        raise CrackscanError(problem)
    allowed = [name.strip() for name in allow_host.split(",") if name.strip()]
    if "*" in allowed and is_loopback(host):
        raise CrackscanError("--allow-host '*' on a loopback server would let any web page reach it through DNS "
                             "rebinding: name the host names it is reached by instead")
    limits = serve_limits(**limits)
    hosts = hosts_answered(host, allowed)
    app = create_app(model, labels, hosts=hosts, token=token, **limits)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            http=header_timeout_protocol(limits["header_timeout"]),
                            limit_concurrency=limits["max_connections"], timeout_keep_alive=5)
    return uvicorn.Server(config)


def serve(model: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, announce: Any = None,
          labels: str | os.PathLike | None = None, allow_host: str = "", token: str | None = None,
          **limits: Any) -> None:
    """Loads the model, then serves; ``announce(url)`` is called once the model is loaded,
    with the access token in the URL when there is one (made here for a server bound beyond
    loopback that was given none, as notebook servers do)."""
    return_freed_memory_to_the_system()
    if token is None and not is_loopback(host):
        token = new_token()
    server = build_server(model, host, port, labels, allow_host, token, **limits)
    listening = _bind(host, port)
    if announce is not None:
        shown = f"[{host}]" if ":" in host else host
        announce(f"http://{shown}:{port}/" + (f"?token={token}" if token else ""))
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
