"""HTTP API and web page over the same predictor and scan functions as the CLI.

No `from __future__ import annotations` here: FastAPI reads the endpoint annotations,
which name types imported inside create_app.

The model is loaded once; requests share it (runners serialise their own inference, so
decoding of concurrent uploads still overlaps). Uploads are judged by content, never by
name, and every refusal is a 4xx JSON answer with one-line ``detail``.
"""


import base64
import io
import logging
import os
from importlib import resources
from typing import Any

from .data import DEFAULT_MAX_PIXELS, ImageReadError, read_pixels
from .errors import CrackscanError, MissingDependencyError

DEFAULT_MAX_UPLOAD_MB = 25
log = logging.getLogger("crackscan.server")


def create_app(
    model: str | os.PathLike | Any,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Any:
    try:
        from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
        from fastapi.responses import HTMLResponse, JSONResponse
    except ImportError:
        raise MissingDependencyError("fastapi", "crackscan serve", extra="serve") from None
    from starlette.concurrency import run_in_threadpool

    from . import __version__
    from .predict import Predictor, load
    from .scan import scan

    predictor = model if isinstance(model, Predictor) else load(model)
    page = resources.files("crackscan.web").joinpath("index.html").read_text()
    app = FastAPI(title="crackscan", version=__version__,
                  description="Crack / no-crack classification of concrete images and whole-photo crack maps.")

    @app.middleware("http")
    async def refuse_oversized_bodies(request: Request, call_next: Any) -> Any:
        # Refuse on the declared length before the body is read, let alone spooled to disk.
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_upload_bytes + 64 * 1024:
            return JSONResponse({"detail": _too_large(max_upload_bytes)}, status_code=413)
        return await call_next(request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Any:
        log.exception("error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(error).__name__}"}, status_code=500)

    async def read_image(upload: UploadFile) -> tuple[str, Any]:
        content = await upload.read(max_upload_bytes + 1)
        name = upload.filename or "upload"
        if len(content) > max_upload_bytes:
            raise HTTPException(413, f"{name}: {_too_large(max_upload_bytes)}")
        if not content:
            raise HTTPException(400, f"{name}: empty file")
        try:
            return name, await run_in_threadpool(read_pixels, content, max_pixels)
        except ImageReadError as error:
            raise HTTPException(_status_for(error.reason), f"{name}: {error.reason}") from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, Any]:
        info = predictor.info
        return {"status": "ok", "model": str(predictor.path), "format": predictor.format,
                "classes": list(info.class_names), "positive_class": info.positive_class,
                "input_size": info.input_size, "patch_size": info.patch_size, "version": __version__}

    @app.post("/v1/classify")
    async def classify(files: list[UploadFile] = File(..., description="one or more images")) -> dict[str, Any]:
        """Label and crack probability of each uploaded image (a patch, or a whole photo squeezed to one)."""
        images = [await read_image(upload) for upload in files]
        predictions = await run_in_threadpool(predictor.predict, [image for _, image in images])
        return {"results": [
            {"filename": name, "label": p.label, "crack_probability": p.crack_probability,
             "probabilities": p.probabilities}
            for (name, _), p in zip(images, predictions)
        ]}

    @app.post("/v1/scan")
    async def scan_photo(
        file: UploadFile = File(..., description="one photo"),
        tile: int | None = Query(None, ge=16, le=4096, description="tile side in px (default: the model's patch size)"),
        stride: int | None = Query(None, ge=1, le=4096, description="step between tiles (default: tile)"),
        threshold: float = Query(0.5, gt=0, lt=1),
        overlay: bool = Query(True, description="include the overlay PNG as base64"),
    ) -> dict[str, Any]:
        """Tiles a photo at the training patch scale: tile grid, summary and crack-map overlay."""
        name, image = await read_image(file)
        try:
            result = await run_in_threadpool(scan, predictor, image, tile, stride, threshold, max_pixels)
        except CrackscanError as error:
            raise HTTPException(400, str(error)) from None
        result.summary["photo"] = name
        answer: dict[str, Any] = {"summary": result.summary, "tiles": [t.__dict__ for t in result.tiles]}
        if overlay:
            answer["overlay_png_base64"] = await run_in_threadpool(_png_base64, result.overlay())
        return answer

    return app


def _png_base64(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _too_large(limit: int) -> str:
    return f"upload larger than the limit of {limit / 1024 / 1024:g} MB"


def _status_for(reason: str) -> int:
    if "pixel limit" in reason:
        return 413
    if reason.startswith("not an image"):
        return 415
    return 400


def serve(model: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, announce: Any = None,
          **limits: Any) -> None:
    """Loads the model, then serves; ``announce(url)`` is called once the model is loaded."""
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("uvicorn", "crackscan serve", extra="serve") from None
    app = create_app(model, **limits)
    if announce is not None:
        announce(f"http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="warning")

