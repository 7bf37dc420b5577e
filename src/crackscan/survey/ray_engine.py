"""The Ray Data engine (pip install 'crackscan[ray]'), on this machine or a cluster.

The photos to scan are a dataset of jobs; an actor pool, one actor per CPU, each loading the
model once (LiteRT or ONNX, one thread), reads, tiles, classifies and writes each photo's
results; the driver streams the outcomes as they come. Each photo is one job: its tiles
never leave the worker that decoded it, which on two cores is cheaper than shipping 19 MB of
tiles per 12 MP photo between processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import CrackscanError, MissingDependencyError, first_line
from ..model.formats import format_of
from ..photo.options import ScanOptions
from ..progress import Progress
from ..runtime.predictor import Predictor, load
from ..runtime.runners import cpu_threads
from .job import OutcomeLog, SurveyJob, scan_job
from .layout import SurveyFolder


def send_ray_token() -> None:
    """A cluster started with Ray's token authentication (its default) admits only a driver
    that sends the token, and Ray 2.60 sends the one it has (~/.ray/auth_token, or
    RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH) only in token mode, which it reads when imported."""
    has_token = any(os.environ.get(name) for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")) \
        or (Path.home() / ".ray" / "auth_token").is_file()
    if has_token:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise MissingDependencyError("ray[data]", "--engine ray", extra="ray") from None
    return ray


class SurveyWorker:
    """One actor of the pool: loads the model once (from its bytes, so a cluster's nodes
    need no copy of the file), then scans the photos it is given, one thread each."""

    def __init__(self, model: list, suffix: str, options: ScanOptions, tiles_dataset: str):
        import ray

        # The model travels as a reference to one copy in Ray's object store, held by the
        # driver for the whole survey, so an actor started again after a crash finds it.
        folder = Path(tempfile.mkdtemp(prefix="crackscan-worker-"))
        try:
            path = folder / f"model{suffix}"
            path.write_bytes(ray.get(model[0]))
            self.predictor = load(path, num_threads=1)
        finally:  # loaded (a LiteRT file stays mapped): every actor of every survey left a copy in /tmp
            shutil.rmtree(folder, ignore_errors=True)
        self.options, self.tiles_dataset = options, Path(tiles_dataset)
        import cv2

        cv2.setNumThreads(1)  # one CPU per actor: OpenCV's resize would otherwise start a thread per core

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        outcomes = []
        for photo, folder, expected, outputs in zip(batch["photo"], batch["folder"], batch["expected"],
                                                    batch["outputs"]):
            job = SurveyJob(_text(photo), _text(folder), json.loads(_text(expected)), _text(outputs))
            outcome = scan_job(self.predictor, job, self.options, tiles_dataset=self.tiles_dataset)
            if "summary" in outcome:
                outcome["summary"] = outcome["summary"].to_dict()
            outcomes.append(json.dumps(outcome))
        return {"outcome": outcomes}


def _bytes(text: str) -> bytes:
    """A name as the bytes it is on disk: Arrow's strings must be UTF-8, and a Linux file name
    need not be (Python holds its other bytes as surrogate escapes)."""
    return text.encode("utf-8", "surrogateescape")


def _text(value: Any) -> str:
    return bytes(value).decode("utf-8", "surrogateescape")


def scan_on_ray(ray: Any, predictor: Predictor, jobs: list[SurveyJob], survey: SurveyFolder,
                options: ScanOptions, address: str | None, workers: int | None, progress: Progress
                ) -> OutcomeLog:
    model = predictor.path
    row = format_of(model) if model is not None else None
    if row is None or not row.light:
        raise CrackscanError(f"--engine ray runs LiteRT or ONNX models (one light load per worker), not {model}: "
                             "export it first, e.g. crackscan export RUN --format litert --int8")
    log = OutcomeLog(len(jobs), progress, survey.path)
    if not jobs:
        return log
    survey.tiles_dataset.mkdir(parents=True, exist_ok=True)
    with _ray_session(ray, address, workers), _quieter(logging.getLogger("ray.data")):
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        actors = min(len(jobs), workers or max(1, int(ray.cluster_resources().get("CPU", cpu_threads()))))
        items = [{"photo": _bytes(job.photo), "folder": _bytes(job.folder), "expected": _bytes(json.dumps(job.expected)),
                  "outputs": _bytes(job.outputs)}
                 for job in jobs]
        # Small blocks: the pool balances photos across actors, and a lost actor costs only
        # its block's photos again.
        blocks = min(len(items), max(4 * actors, math.ceil(len(items) / 10)))
        outcomes = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            SurveyWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
            fn_constructor_kwargs={"model": [ray.put(model.read_bytes())], "suffix": model.suffix,
                                   "options": options, "tiles_dataset": str(survey.tiles_dataset.resolve())})
        # An actor that dies is started again and its photos retried: Ray Data's defaults for
        # an actor pool (max_restarts and max_task_retries -1), which a test holds it to.
        bar = progress.bar(total=len(jobs), desc="photos", unit="photo")
        seen: set[str] = set()
        for row in outcomes.iter_rows():
            outcome = json.loads(row["outcome"])
            if outcome["photo"] in seen:  # a retried block's photo that had come through already
                continue
            seen.add(outcome["photo"])
            bar.clear()
            log.add(outcome)
            bar.update(1)
        bar.close()
    return log


@contextlib.contextmanager
def _quieter(logger: logging.Logger) -> Iterator[None]:
    """Ray Data's notes on its own progress bars and plans are not for crackscan's users."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _ray_session(ray: Any, address: str | None, workers: int | None) -> Iterator[None]:
    """Ray as asked: the cluster at ``address``, else a local Ray on this machine's cores
    (started here and stopped after), or the one this process already runs."""
    if ray.is_initialized():
        yield
        return
    quiet = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(address="local", num_cpus=workers or cpu_threads(), **quiet)  # never a cluster by accident
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise CrackscanError(f"cannot start or join Ray{f' at {address}' if address else ''}: "
                             f"{first_line(error)}") from None
    try:
        yield
    except BaseException:
        # Interrupted (Ctrl-C) or failed: stop Ray without letting a second Ctrl-C, or Ray's
        # own errors while it stops, bury the reason under chained tracebacks.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if threading.current_thread() is threading.main_thread() \
            else None
        try:
            with contextlib.suppress(Exception):
                ray.shutdown()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        raise
    ray.shutdown()
