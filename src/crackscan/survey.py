"""Surveys: many photos scanned into one folder, resumable, on this machine or on Ray Data.

A survey folder holds one folder per photo (overlay.jpg, tiles.csv, summary.json, written
by scan.ScanResult.write, summary.json last), ``summary.csv`` over all photos (most cracked
first; photos that could not be scanned at the end, with the reason) and ``survey.json``
(the model and settings). Planning is the same for every engine: which photos, where each
one's results go, and which are already done (a complete result made from the same photo
file with the same model and settings), so an interrupted survey resumes where it stopped.

Engines:

- ``local`` (the default): one process, photo after photo, the model's threads on every core.
- ``ray``: a Ray Data pipeline (pip install 'crackscan[ray]'), on this machine or a cluster.
  The photos to scan are a dataset of jobs; an actor pool, one actor per CPU, each loading
  the model once (LiteRT or ONNX, one thread), reads, tiles, classifies and writes each
  photo's results; the driver streams the outcomes as they come (progress, summary.csv).
  Each photo is one job: its tiles never leave the worker that decoded it, which on two
  cores is cheaper than shipping 19 MB of tiles per 12 MP photo between processes. An actor
  that dies is restarted and its photos retried by Ray; every write is atomic, so a retried
  photo's results simply replace the lost attempt's. It also writes every tile of the survey
  as one Parquet dataset, ``tiles.parquet/`` (a part file per photo), for DuckDB or pandas.
  Photos may be local paths or URIs of any file system pyarrow reads (s3://, gs://, ...).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import settings
from .data import IMAGE_SUFFIXES, ImageReadError, list_image_files
from .errors import CrackscanError, LimitExceeded, MissingDependencyError
from .files import atomic_open, atomic_path, file_sha256, write_text
from .predict import Predictor, load
from .progress import progress_bar
from .runtime import cpu_threads
from .scan import OVERLAY_FILE, scan, scan_geometry
from .version import __version__

SURVEY_MANIFEST = "survey.json"
RESULT_FILES = ("tiles.csv", OVERLAY_FILE, "summary.json")
TILES_DATASET = "tiles.parquet"  # a folder of Parquet part files, one per photo (Ray engine)
# What a photo's result must have been made with to be kept when a survey resumes.
RESUME_KEYS = ("photo_path", "model_sha256", "tile", "stride", "threshold", "photo_bytes", "photo_mtime_ns")
ENGINES = ("local", "ray")


@dataclasses.dataclass
class SurveyOutcome:
    scanned: list[dict[str, Any]]
    resumed: list[dict[str, Any]]
    failed: list[tuple[str, str]]
    summary_csv: Path | None
    engine: str = "local"
    seconds: float = 0.0
    tiles_dataset: Path | None = None


@dataclasses.dataclass(frozen=True)
class SurveyJob:
    """One photo to scan: where it is (a path or a URI), where its results go, and what its
    result must record to be kept next time."""

    photo: str
    folder: str
    expected: dict[str, Any]


def is_uri(text: str | os.PathLike) -> bool:
    return "://" in str(text)


def survey_root(photos: Sequence[Path], earlier: str | None = None) -> Path:
    """The folder photos' outputs are named from: the photos' common folder, or the survey's
    earlier root when every photo is under it (so scanning a part of a survey again lands
    in the same folders)."""
    absolute = [os.path.abspath(p) for p in photos]
    if earlier and all(os.path.commonpath([p, earlier]) == earlier for p in absolute):
        return Path(earlier)
    return Path(os.path.commonpath([os.path.dirname(p) for p in absolute])) if absolute else Path(os.getcwd())


def _folders_for(out: Path, relative_parts: Sequence[Sequence[str]]) -> list[Path]:
    """One folder per photo, never shared: the photo's path below the survey's root, file
    suffix kept (wall.jpg and wall.png differ), mirrored as folders under ``out``. Where two
    would still meet (names differing only in case, on a file system that folds case), the
    later one gets a short hash of its path."""
    folders, taken = [], set()
    for parts in relative_parts:
        folder = out.joinpath(*parts)
        if str(folder).casefold() in taken:
            digest = hashlib.sha256("/".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:8]
            folder = folder.with_name(f"{folder.name}-{digest}")
        taken.add(str(folder).casefold())
        folders.append(folder)
    return folders


def survey_photos(inputs: Sequence[str | os.PathLike], out: Path) -> list[Path]:
    """The photos named (files, folders, globs), once each, never any under ``out``: a survey
    folder inside the photo folder must not have its own overlays scanned on the next run."""
    out_absolute = os.path.abspath(out)
    photos, seen = [], set()
    for photo in list_image_files(inputs):
        absolute = os.path.abspath(photo)
        if absolute in seen or os.path.commonpath([absolute, out_absolute]) == out_absolute:
            continue
        seen.add(absolute)
        photos.append(photo)
    return photos


def scan_many(
    model: Any,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    tile: int | None = None,
    stride: int | None = None,
    threshold: float = 0.5,
    max_pixels: int | None = settings.DEFAULT_MAX_PIXELS,
    force: bool = False,
    progress: bool = False,
    on_failure: Any = None,
    on_line: Callable[[str], None] | None = None,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
) -> SurveyOutcome:
    """Scans photos and folders of photos into ``out``; resumes an interrupted survey.

    A photo is skipped when its folder holds a complete result made with the same model,
    tile, stride and threshold from the same photo file; anything else is scanned again,
    with a line through ``on_line`` saying why (``force`` redoes all). An unreadable photo
    is reported through ``on_failure(path, reason)`` and in summary.csv, and skipped; the
    rest go on. ``engine="ray"`` runs the survey on Ray Data: a local Ray on this machine,
    or the cluster at ``address``, with ``workers`` actors (default: one per CPU).
    """
    started = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CrackscanError(f"--out {out} is a file: name a folder for the survey")
    settings.ENGINE.check(engine)
    settings.THRESHOLD.check(threshold)
    if workers is not None:
        settings.WORKERS.check(workers)
    if engine == "local" and (address is not None or workers is not None):
        raise CrackscanError("--address and --workers are for --engine ray")
    predictor = model if isinstance(model, Predictor) else load(model)
    tile, stride = scan_geometry(predictor, tile, stride)
    say = on_line or (lambda line: None)
    if engine == "ray":
        if address:
            _send_ray_token()
        ray_module = _import_ray()  # before any work: a missing extra is one line, not a traceback
    made_with = {"model": str(predictor.path) if predictor.path else None,
                 "model_sha256": file_sha256(predictor.path) if predictor.path else None,
                 "tile": tile, "stride": stride, "threshold": threshold}
    manifest = _read_manifest(out)
    located, root = _locate_photos(inputs, out, manifest.get("root"))
    _write_manifest(out, manifest, {**made_with, "root": root, "engine": engine}, say)
    jobs, resumed = [], []
    folders = _folders_for(out, [_relative_parts(identity["photo_path"], root) for _, identity in located])
    for (photo, identity), folder in zip(located, folders):
        expected = {**made_with, **identity}
        kept, why = (None, "") if force else _completed_result(folder, expected)
        if kept is not None and engine == "ray":
            _ensure_tiles_part(out, folder, kept)
        if kept is not None:
            resumed.append(kept)
            continue
        if why:
            say(f"scanning {photo} again: {why}")
        jobs.append(SurveyJob(photo, str(folder), expected))
    scan_settings = {"tile": tile, "stride": stride, "threshold": threshold, "max_pixels": max_pixels}
    if engine == "ray":
        scanned, failed = _scan_on_ray(ray_module, predictor, jobs, out, scan_settings, address, workers, progress,
                                       say, on_failure)
    else:
        scanned, failed = _scan_here(predictor, jobs, scan_settings, progress, say, on_failure)
    summary_csv = write_survey_summary(out / "summary.csv", scanned + resumed, failed) if (scanned or resumed or failed) \
        else None
    dataset = out / TILES_DATASET if engine == "ray" and (out / TILES_DATASET).is_dir() else None
    return SurveyOutcome(scanned, resumed, failed, summary_csv, engine, time.perf_counter() - started, dataset)


def scan_job(predictor: Predictor, job: SurveyJob, tile: int, stride: int, threshold: float, max_pixels: int | None,
             tiles_dataset: Path | None = None) -> dict[str, Any]:
    """Scans one photo of a survey and writes its results; the same for every engine.
    Returns {"summary": ...} or, for a photo that cannot be scanned, {"failed": reason}."""
    try:
        source: Any = _read_uri(job.photo) if is_uri(job.photo) else job.photo
        result = scan(predictor, source, tile, stride, threshold, max_pixels)
    except (ImageReadError, LimitExceeded) as error:
        return {"photo": job.photo, "failed": error.reason if isinstance(error, ImageReadError) else str(error)}
    except OSError as error:  # a remote file that went away, a permission refused
        return {"photo": job.photo, "failed": f"cannot read it ({error.strerror or error})"}
    result.summary.update(photo=job.photo, outputs=job.folder, **job.expected)
    if tiles_dataset is not None:  # before summary.json, which marks the result complete
        _write_tiles_part(tiles_dataset, Path(job.folder), job.photo,
                          [(t.x, t.y, t.width, t.height, t.crack_probability, t.label) for t in result.tiles])
    result.write(job.folder)
    return {"photo": job.photo, "summary": result.summary}


def _scan_here(predictor: Predictor, jobs: list[SurveyJob], scan_settings: dict[str, Any], progress: bool,
               say: Callable[[str], None], on_failure: Any) -> tuple[list, list]:
    scanned, failed = [], []
    bar = progress_bar(total=len(jobs), desc="photos", unit="photo", enabled=progress)
    counter = _Counter(len(jobs))
    for job in jobs:
        outcome = scan_job(predictor, job, **scan_settings)
        bar.clear()
        counter.report(outcome, scanned, failed, say, on_failure)
        bar.update(1)
    bar.close()
    return scanned, failed


class _Counter:
    """Outcomes as they arrive: collected, and a line each with photos done of total and the
    rate so far."""

    def __init__(self, total: int):
        self.total, self.done, self.started = total, 0, time.perf_counter()

    def report(self, outcome: dict[str, Any], scanned: list, failed: list, say: Callable[[str], None],
               on_failure: Any) -> None:
        self.done += 1
        rate = self.done / max(1e-9, time.perf_counter() - self.started)
        where = f"[{self.done}/{self.total}, {rate:.2f} photos/s]"
        if "failed" in outcome:
            failed.append((outcome["photo"], outcome["failed"]))
            if on_failure is not None:
                on_failure(outcome["photo"], outcome["failed"])
            return
        scanned.append(outcome["summary"])
        say(f"{where} {_photo_line(outcome['summary'])}")


# ---- where the photos are ---------------------------------------------------------------------

def _locate_photos(inputs: Sequence[str | os.PathLike], out: Path, earlier_root: str | None
                   ) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """Every photo named, with what identifies its file (path, size, modification time), and
    the root its output folders are named below."""
    uris = [str(i) for i in inputs if is_uri(i)]
    if uris and len(uris) != len(inputs):
        raise CrackscanError("name photos either all as local paths or all as URIs (s3://..., file://...)")
    if uris:
        return _locate_uris(uris, earlier_root)
    photos = survey_photos(inputs, out)
    root = survey_root(photos, earlier_root)
    located = []
    for photo in photos:
        facts = photo.stat()
        located.append((str(photo), {"photo_path": os.path.abspath(photo), "photo_bytes": facts.st_size,
                                     "photo_mtime_ns": facts.st_mtime_ns}))
    return located, str(root)


def _relative_parts(path: str, root: str) -> tuple[str, ...]:
    if is_uri(path):
        return PurePosixPath(path.split("://", 1)[1]).relative_to(root.split("://", 1)[1]).parts
    return Path(path).relative_to(root).parts


def _locate_uris(uris: list[str], earlier_root: str | None) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    fs_module = _import_pyarrow_fs()
    located, scheme = [], None
    for uri in uris:
        try:
            filesystem, path = fs_module.FileSystem.from_uri(uri)
            info = filesystem.get_file_info(path)
        except (OSError, ValueError) as error:
            raise CrackscanError(f"cannot list {uri}: {error}") from None
        this_scheme = uri.split("://", 1)[0]
        if scheme not in (None, this_scheme):
            raise CrackscanError("name photos on one file system at a time")
        scheme = this_scheme
        if info.type == fs_module.FileType.Directory:
            found = filesystem.get_file_info(fs_module.FileSelector(path, recursive=True))
        elif info.type == fs_module.FileType.File:
            found = [info]
        else:
            raise CrackscanError(f"no such file or folder: {uri}")
        for entry in sorted(found, key=lambda e: e.path):
            if entry.type == fs_module.FileType.File and PurePosixPath(entry.path).suffix.lower() in IMAGE_SUFFIXES:
                full = f"{scheme}://{entry.path}"
                located.append((full, {"photo_path": full, "photo_bytes": entry.size,
                                       "photo_mtime_ns": entry.mtime_ns}))
    unique = list(dict((photo, (photo, identity)) for photo, identity in located).values())
    if not unique:
        raise CrackscanError(f"no photos found in {' '.join(uris)}")
    paths = [photo.split("://", 1)[1] for photo, _ in unique]
    common = os.path.commonpath([str(PurePosixPath(p).parent) for p in paths]) if len(paths) > 1 \
        else str(PurePosixPath(paths[0]).parent)
    root = f"{scheme}://{common}"
    if earlier_root and is_uri(earlier_root) and all(photo.startswith(earlier_root.rstrip("/") + "/")
                                                     for photo, _ in unique):
        root = earlier_root
    return unique, root


def _read_uri(uri: str) -> bytes:
    filesystem, path = _import_pyarrow_fs().FileSystem.from_uri(uri)
    with filesystem.open_input_file(path) as handle:
        return handle.readall()


def _import_pyarrow_fs() -> Any:
    try:
        import pyarrow.fs
    except ImportError:
        raise MissingDependencyError("pyarrow", "reading photos from URIs", extra="ray") from None
    return pyarrow.fs


# ---- resuming --------------------------------------------------------------------------------

def _photo_line(s: dict[str, Any]) -> str:
    return (f"{s['photo']}: {s['cracked_tiles']} of {s['tiles']} tiles cracked "
            f"({100 * s['cracked_area_fraction']:.1f}% of area, highest p {s['max_crack_probability']:.2f}) "
            f"in {s['seconds']:.2f} s -> {s['outputs']}")


def _completed_result(folder: Path, expected: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The earlier result in ``folder`` if it is complete and made as ``expected``; else
    None and why not ("" when there is none at all)."""
    if not (folder / "summary.json").exists():
        return None, ""
    try:
        summary = json.loads((folder / "summary.json").read_text())
        if not isinstance(summary, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as error:
        return None, f"its summary.json is damaged ({error})"
    missing = [name for name in RESULT_FILES if not (folder / name).is_file()]
    if missing:
        return None, f"its result is incomplete (no {', '.join(missing)})"
    changed = [key for key in RESUME_KEYS if summary.get(key) != expected.get(key)]
    if changed:
        if "photo_path" in changed:
            return None, f"its folder held the result of another photo ({summary.get('photo_path')})"
        if "photo_bytes" in changed or "photo_mtime_ns" in changed:
            return None, "the photo changed since it was scanned"
        return None, "it was scanned with other settings (" + ", ".join(
            f"{key} {summary.get(key)!r} -> {expected.get(key)!r}" for key in changed if key != "model_sha256"
        ) + (", another model" if "model_sha256" in changed else "") + ")"
    if any(key not in summary for key in _SUMMARY_CSV_FIELDS if key != "problem"):
        return None, "its summary.json lacks figures"
    return summary, ""


def _read_manifest(out: Path) -> dict[str, Any]:
    try:
        earlier = json.loads((out / SURVEY_MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return earlier if isinstance(earlier, dict) else {}


def _write_manifest(out: Path, earlier: dict[str, Any], made_with: dict[str, Any], say: Callable[[str], None]) -> None:
    compared = ("model_sha256", "tile", "stride", "threshold")
    if earlier and any(earlier.get(k) != made_with[k] for k in compared):
        say(f"{out} was scanned before with other settings; photos scanned with those are done again")
    manifest = {"format": "crackscan-survey", "crackscan_version": __version__, **made_with}
    write_text(out / SURVEY_MANIFEST, json.dumps(manifest, indent=2) + "\n")


_SUMMARY_CSV_FIELDS = ["photo", "cracked_area_fraction", "cracked_tiles", "tiles", "max_crack_probability",
                       "width", "height", "seconds", "outputs", "problem"]


def write_survey_summary(path: Path, summaries: list[dict[str, Any]], failed: Sequence[tuple[str, str]] = ()) -> Path:
    """summary.csv: a row per scanned photo, most cracked first, then a row per photo that
    could not be scanned, with the reason in ``problem``. One row per photo, whatever the
    engine retried."""
    by_photo = {s["photo"]: s for s in summaries}
    ranked = sorted(by_photo.values(), key=lambda s: (-s["cracked_area_fraction"], -s["max_crack_probability"], s["photo"]))
    problems = {photo: reason for photo, reason in failed if photo not in by_photo}
    with atomic_open(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=_SUMMARY_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**s, "problem": ""} for s in ranked)
        writer.writerows({"photo": photo, "problem": reason} for photo, reason in sorted(problems.items()))
    return path


# ---- the Parquet dataset of tiles -------------------------------------------------------------

TILE_COLUMNS = ("photo", "x", "y", "width", "height", "probability", "label")


def _tiles_part_path(dataset: Path, folder: Path) -> Path:
    """The part file of a photo: named by its output folder, which no two photos share."""
    key = hashlib.sha256(str(folder.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return dataset / f"part-{key}.parquet"


def _write_tiles_part(dataset: Path, folder: Path, photo: str, rows: Sequence[tuple]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(zip(*rows)) if rows else [[] for _ in range(6)]
    table = pa.table({
        "photo": pa.array([photo] * len(rows), pa.string()),
        "x": pa.array(columns[0], pa.int32()), "y": pa.array(columns[1], pa.int32()),
        "width": pa.array(columns[2], pa.int32()), "height": pa.array(columns[3], pa.int32()),
        "probability": pa.array(columns[4], pa.float32()), "label": pa.array(columns[5], pa.string()),
    })
    path = _tiles_part_path(dataset, folder)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
    return path


def _ensure_tiles_part(out: Path, folder: Path, summary: dict[str, Any]) -> None:
    """A photo kept from an earlier run (perhaps by the local engine) gets its part file from
    its tiles.csv, so the dataset always holds every photo of the survey once."""
    if _tiles_part_path(out / TILES_DATASET, folder).is_file():
        return
    with open(folder / "tiles.csv", newline="") as handle:
        rows = [(int(r["x"]), int(r["y"]), int(r["width"]), int(r["height"]), float(r["crack_probability"]), r["label"])
                for r in csv.DictReader(handle)]
    _write_tiles_part(out / TILES_DATASET, folder, summary["photo"], rows)


# ---- the Ray Data engine ------------------------------------------------------------------------

def _send_ray_token() -> None:
    """A cluster started with Ray's token authentication (its default) admits only a driver
    that sends the token, and Ray 2.60 sends the one it has (~/.ray/auth_token, or
    RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH) only in token mode, which it reads when imported."""
    has_token = any(os.environ.get(name) for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")) \
        or (Path.home() / ".ray" / "auth_token").is_file()
    if has_token:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def _import_ray() -> Any:
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

    def __init__(self, model: list, suffix: str, scan_settings: dict[str, Any], tiles_dataset: str):
        import ray

        # The model travels as a reference to one copy in Ray's object store, held by the
        # driver for the whole survey, so an actor started again after a crash finds it.
        folder = Path(tempfile.mkdtemp(prefix="crackscan-worker-"))
        path = folder / f"model{suffix}"
        path.write_bytes(ray.get(model[0]))
        self.predictor = load(path, num_threads=1)
        self.scan_settings, self.tiles_dataset = scan_settings, Path(tiles_dataset)
        import cv2

        cv2.setNumThreads(1)  # one CPU per actor: OpenCV's resize would otherwise start a thread per core

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        outcomes = []
        for photo, folder, expected in zip(batch["photo"], batch["folder"], batch["expected"]):
            job = SurveyJob(str(photo), str(folder), json.loads(str(expected)))
            outcomes.append(json.dumps(scan_job(self.predictor, job, **self.scan_settings,
                                                tiles_dataset=self.tiles_dataset)))
        return {"outcome": outcomes}


def _scan_on_ray(ray: Any, predictor: Predictor, jobs: list[SurveyJob], out: Path, scan_settings: dict[str, Any],
                 address: str | None, workers: int | None, progress: bool, say: Callable[[str], None],
                 on_failure: Any) -> tuple[list, list]:
    model = predictor.path
    if model is None or model.suffix.lower() not in (".tflite", ".onnx"):
        raise CrackscanError(f"--engine ray runs LiteRT or ONNX models (one light load per worker), not {model}: "
                             "export it first, e.g. crackscan export RUN --format litert --int8")
    scanned: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    if not jobs:
        return scanned, failed
    (out / TILES_DATASET).mkdir(parents=True, exist_ok=True)
    with _ray_session(ray, address, workers), _quieter(logging.getLogger("ray.data")):
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        actors = min(len(jobs), workers or max(1, int(ray.cluster_resources().get("CPU", cpu_threads()))))
        items = [{"photo": job.photo, "folder": job.folder, "expected": json.dumps(job.expected)} for job in jobs]
        # Small blocks: the pool balances photos across actors, and a lost actor costs only
        # its block's photos again.
        blocks = min(len(items), max(4 * actors, math.ceil(len(items) / 10)))
        outcomes = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            SurveyWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
            fn_constructor_kwargs={"model": [ray.put(model.read_bytes())], "suffix": model.suffix,
                                   "scan_settings": scan_settings, "tiles_dataset": str((out / TILES_DATASET).resolve())})
        # An actor that dies is started again and its photos retried: Ray Data's defaults for
        # an actor pool (max_restarts and max_task_retries -1), which a test holds it to.
        bar = progress_bar(total=len(jobs), desc="photos", unit="photo", enabled=progress)
        counter = _Counter(len(jobs))
        seen: set[str] = set()
        for row in outcomes.iter_rows():
            outcome = json.loads(row["outcome"])
            if outcome["photo"] in seen:  # a retried block's photo that had come through already
                continue
            seen.add(outcome["photo"])
            bar.clear()
            counter.report(outcome, scanned, failed, say, on_failure)
            bar.update(1)
        bar.close()
    return scanned, failed


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
                             f"{str(error).strip().splitlines()[0]}") from None
    try:
        yield
    finally:
        ray.shutdown()

