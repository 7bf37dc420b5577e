"""The run folder: every file name in it, how it is created and finished, and typed readers
of its records (``Run``, the split, the cached features, the exports).

A training run writes its files one by one, each atomically, and ``run.json`` last: a
folder is a run only once that manifest is in place, so an interrupted run is never taken
for a finished one, and re-running replaces its leftovers without --force. The manifest
also records the data folder, so export and evaluate can find the run's images again.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import json
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import CrackscanError, first_line, write_error
from .model.formats import run_order
from .files import TEXT_ENCODING, atomic_open, atomic_path, check_writable, remove_partials, write_text
from .settings import TrainConfig
from .version import __version__

MANIFEST = "run.json"
MANIFEST_FORMAT = "crackscan-run"
MODEL_FILE = "model.keras"
SPLIT_FILE = "split.csv"
FEATURES_FILE = "features.npz"
# The frozen backbone as float LiteRT, kept when training converted it: site adaptation
# embeds its tiles with it in a fraction of Keras' time, and without loading TensorFlow.
BACKBONE_FILE = "backbone.tflite"
INT8_BACKBONE_FILE = "backbone.int8.tflite"  # made and checked as a run is written (runtime.int8_backbone)
SITE_HEAD_FILE = "site_head.npz"  # an adapted run's head in NumPy form (model.heads.SiteHead)
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
SKIPPED_FILE = "skipped.csv"
TRAINING_CURVES_PLOT = "training_curves.png"
PREDICTION_GRID_PLOT = "prediction_grid.png"
CONFUSION_MATRIX_PLOT = "confusion_matrix.png"
SITE_CONFUSION_PLOT = "site_confusion_matrix.png"  # adapted runs: the site labels, cross-validated
EVALUATIONS_FOLDER = "evaluations"
# A segmenter's run (train --task segment): its photos by split, with their masks, and a grid
# of validation windows (photo, true mask, predicted mask).
SEGMENT_SPLIT_FILE = "split.json"
SEGMENT_GRID_PLOT = "segment_grid.png"
# Everything `train` writes, the manifest last.
RUN_FILES = (MODEL_FILE, CONFIG_FILE, METRICS_FILE, HISTORY_FILE, SPLIT_FILE, SKIPPED_FILE, FEATURES_FILE,
             TRAINING_CURVES_PLOT, PREDICTION_GRID_PLOT, CONFUSION_MATRIX_PLOT, MANIFEST)
# What `train --task segment` writes instead (its split lists photos with their masks).
SEGMENT_RUN_FILES = (MODEL_FILE, CONFIG_FILE, METRICS_FILE, HISTORY_FILE, SEGMENT_SPLIT_FILE, TRAINING_CURVES_PLOT,
                     SEGMENT_GRID_PLOT, MANIFEST)
# A run's exports, fastest first, as measured by benchmarks/inference_speed.py (int8 ~5x
# Keras, float ~2.7x); export writes them under these names.
EXPORTS_BY_SPEED = run_order()  # the format table's order: int8 before float, LiteRT before ONNX
# Files derived from a run's model (exports) belong to it: --force clears them with it.
_DERIVED_PATTERNS = ("model*.tflite", "model*.onnx", BACKBONE_FILE, INT8_BACKBONE_FILE, SITE_HEAD_FILE, SITE_CONFUSION_PLOT)
SPLIT_FIELDS = ("path", "class", "split", "sha256")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_run(folder: str | os.PathLike) -> bool:
    """A finished run: its manifest is in place (or, for runs made before manifests, its
    metrics name the data and model and split are there)."""
    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        return True
    return _legacy_data_root(folder) is not None and (folder / MODEL_FILE).is_file() and (folder / SPLIT_FILE).is_file()


LOCK_FILE = ".crackscan.lock"


@contextlib.contextmanager
def locked(out: str | os.PathLike, wait: bool = False, what: str = "run") -> Iterator[Path]:
    """Holds the folder ``out`` for one writer: a second train or adapt into the same folder
    at the same time is refused (or, with ``wait``, waits its turn), so two writers cannot
    both report a run of which only one survives. The lock is the OS's (flock), so it dies
    with its process and never needs clearing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CrackscanError(f"{what} folder {out} exists and is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / LOCK_FILE, "a+")
    except OSError as error:
        raise write_error(out, error) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CrackscanError(f"another crackscan is writing a {what} into {out} right now: wait for it to finish, "
                                 "or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"written by crackscan process {os.getpid()}\n")  # for whoever finds the file
        handle.flush()
        yield out
    finally:
        handle.close()  # closing releases the lock


@contextlib.contextmanager
def writing(out: str | os.PathLike, force: bool) -> Iterator[Path]:
    """``out`` locked and prepared for a new run, for the time the run is written into it
    (its files, then ``finish``)."""
    with locked(out):
        yield prepare(out, force)


def prepare(out: str | os.PathLike, force: bool) -> Path:
    """Makes ``out`` ready for a new run. A finished run is replaced only with ``force``; an
    interrupted run's leftovers are cleared."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CrackscanError(f"run folder {out} exists and is a file")
    if out.is_dir():
        if is_run(out):
            if not force:
                raise CrackscanError(f"{out} already holds a run: choose another --out or pass --force to replace it")
            clear(out)
        elif any((out / name).exists() for name in {*RUN_FILES, *SEGMENT_RUN_FILES}):
            clear(out)  # an interrupted run: its files were never a run
        remove_partials(out)
    return check_writable(out)  # a read-only or full folder is said now, not after minutes of embedding


def clear(folder: Path) -> None:
    """Removes a run's files, the manifest first, so a half-cleared folder is no run."""
    for name in (MANIFEST, *RUN_FILES[::-1], *SEGMENT_RUN_FILES):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    for pattern in _DERIVED_PATTERNS:
        for path in folder.glob(pattern):
            path.unlink()


def finish(out: Path, data_root: Path, extra: dict[str, Any] | None = None) -> Path:
    """Writes the manifest: the step that makes ``out`` a run."""
    manifest = {"format": MANIFEST_FORMAT, "crackscan_version": __version__, "model": MODEL_FILE,
                "data": str(Path(data_root).resolve()), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **(extra or {})}
    return write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def data_root(run: Path) -> Path:
    """The data folder the run was trained on, as recorded when it was made."""
    try:
        return Path(json.loads((run / MANIFEST).read_text())["data"])
    except (OSError, ValueError, KeyError, TypeError):
        legacy = _legacy_data_root(run)
        if legacy is None:
            raise CrackscanError(f"{run} does not record its data folder: pass the data explicitly") from None
        return legacy


def write_split(path: Path, rows: Iterable[tuple[str, str, str, str]]) -> None:
    """split.csv: one row (path relative to the data folder, class, split, sha256) per image."""
    with atomic_open(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(SPLIT_FIELDS)
        writer.writerows(rows)


def split_rows(run: Path) -> list[dict[str, str]]:
    """The run's split, checked: a damaged split.csv is refused, never silently shortened."""
    path = run / SPLIT_FILE
    try:
        with open(path, newline="", **TEXT_ENCODING) as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != SPLIT_FIELDS:
                raise CrackscanError(f"{path} is damaged (its header is not {','.join(SPLIT_FIELDS)})")
            rows = list(reader)
    except OSError as error:
        raise CrackscanError(f"cannot read split file {path}: {error.strerror or error}") from None
    except csv.Error as error:
        raise CrackscanError(f"{path} is damaged ({error})") from None
    for number, row in enumerate(rows, start=2):
        if row["split"] not in ("train", "val", "test") or not _SHA256.fullmatch(row["sha256"] or ""):
            raise CrackscanError(f"{path} is damaged at line {number}: train it again")
    expected = _recorded_image_count(run)
    if expected is not None and expected != len(rows):
        raise CrackscanError(f"{path} lists {len(rows)} images but the run read {expected}: it is damaged")
    return rows


def split_hashes(run: Path) -> dict[str, set[str]]:
    hashes: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    for row in split_rows(run):
        hashes[row["split"]].add(row["sha256"])
    return hashes


def save_features(run: Path, features: np.ndarray, labels: np.ndarray, splits: np.ndarray) -> Path:
    """The frozen backbone's pooled features of every training image, in split.csv's row
    order: with them a new head (site adaptation, other settings) is seconds of work, not
    a pass of the backbone over the whole dataset. float16 halves the size; the head's
    answers change by far less than int8 inference changes them."""
    with atomic_path(run / FEATURES_FILE) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, features=features.astype(np.float16), labels=labels.astype(np.int16),
                     splits=np.asarray(splits, dtype="U5"))
    return run / FEATURES_FILE


def load_features(run: Path) -> dict[str, np.ndarray] | None:
    """The cached features, labels and splits, checked against each other and split.csv;
    None for a run made without them. A damaged file is refused with its name."""
    path = run / FEATURES_FILE
    if not path.exists():
        return None

    def damaged(why: str) -> CrackscanError:
        return CrackscanError(f"{path} is damaged ({why}): delete it, and adapt embeds the run's images again")

    try:
        with np.load(path, allow_pickle=False) as cached:
            loaded = {name: cached[name] for name in ("features", "labels", "splits")}
    except KeyError as error:
        raise damaged(f"no {error}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise damaged(first_line(error)) from None
    features, labels, splits = loaded["features"], loaded["labels"], loaded["splits"]
    if features.ndim != 2 or labels.ndim != 1 or splits.ndim != 1 or not len(features) == len(labels) == len(splits):
        raise damaged(f"features {features.shape}, labels {labels.shape} and splits {splits.shape} do not match")
    if not set(np.unique(splits)) <= {"train", "val", "test"}:
        raise damaged("unknown split names")
    if (run / SPLIT_FILE).is_file() and len(split_rows(run)) != len(features):
        raise damaged(f"{len(features)} rows, but {SPLIT_FILE} lists {len(split_rows(run))} images")
    loaded["features"] = features.astype(np.float32)
    if not np.all(np.isfinite(loaded["features"])):
        raise damaged("non-finite features")
    return loaded


def write_metrics(run: Path, metrics: dict[str, Any]) -> Path:
    return write_text(run / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")


def read_json(run: Path, name: str) -> dict[str, Any]:
    """One of the run's JSON files (metrics.json, config.json), or {} when it cannot be read."""
    try:
        values = json.loads((run / name).read_text())
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def site_labels(run: Path) -> Path | None:
    """For a run made by adapt, the labels folder it learned its site from (None for any
    other run): what an int8 export of it must be calibrated and checked on as well."""
    if not (run / SITE_HEAD_FILE).is_file():
        return None
    labels = read_json(run, METRICS_FILE).get("labels")
    if not isinstance(labels, str) or not Path(labels).is_dir():
        raise CrackscanError(f"{run} was adapted on the site labels in {labels}, which are gone: pass --calibration "
                             "with photos' tiles of the site and --check with labelled ones")
    return Path(labels)


def recorded_underfit(run: Path) -> bool:
    """Whether training said its head ended still improving. Runs made before it said so
    trained without early stopping, where that is the best epoch being the last."""
    metrics = read_json(run, METRICS_FILE)
    if "underfit" in metrics:
        return bool(metrics["underfit"])
    epochs = read_json(run, CONFIG_FILE).get("epochs")
    return isinstance(epochs, int) and isinstance(metrics.get("best_epoch"), int) and metrics["best_epoch"] >= epochs


def summary(run: Path) -> dict[str, Any]:
    """What `crackscan info` shows of a run: its data, figures and exports."""
    metrics = read_json(run, METRICS_FILE)
    shown: dict[str, Any] = {"folder": str(run), "data": str(data_root(run))}
    for part in ("test", "val"):
        figures = metrics.get(part) or {}
        if figures.get("count"):
            shown[f"{part}_accuracy"] = f"{100 * figures['accuracy']:.2f}% of {figures['count']} images"
    if "best_epoch" in metrics:
        shown["kept_epoch"] = f"{metrics['best_epoch']} of {metrics.get('epochs_run', '?')} run"
    shown["exports"] = ", ".join(name for name in EXPORTS_BY_SPEED if (run / name).is_file()) or "none"
    return shown


def _recorded_image_count(run: Path) -> int | None:
    images = read_json(run, METRICS_FILE).get("images")
    readable = images.get("readable") if isinstance(images, dict) else None
    return readable if isinstance(readable, int) else None


def _legacy_data_root(folder: Path) -> Path | None:
    data = read_json(folder, METRICS_FILE).get("data")
    return Path(data) if isinstance(data, str) else None


@dataclasses.dataclass
class Run:
    """A finished run and its records: settings, metrics and the training history."""

    path: Path
    config: TrainConfig
    metrics: dict[str, Any]
    history: list[dict[str, float]]

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Run":
        path = Path(path)
        if not is_run(path):
            raise CrackscanError(f"{path} is not a finished crackscan run")
        try:
            metrics = json.loads((path / METRICS_FILE).read_text())
            history = read_history(path)
        except (OSError, ValueError) as error:
            raise CrackscanError(f"{path} is not a finished crackscan run: {error}") from None
        return cls(path, TrainConfig.load(path / CONFIG_FILE), metrics, history)


def write_history(run: Path, history: list[dict[str, float]]) -> None:
    with atomic_open(run / HISTORY_FILE) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def read_history(run: Path) -> list[dict[str, float]]:
    with open(run / HISTORY_FILE, newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
