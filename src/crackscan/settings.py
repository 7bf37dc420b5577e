"""Every command's settings: defined once, range-checked once, with readable errors.

A ``Setting`` says a value's type, range or choices, default and help. The CLI's flags
(``add_arguments``) and the server's query parameters (``query_parameters``) are made from
the same definitions, and ``check`` is the one place a value is judged, so a bad value
gets the same one-line message wherever it comes from: a flag, a config.json, a query
string or a Python keyword.

Training settings are the ``TrainConfig`` dataclass, saved into every run. The network and
split are the project's origin (MobileNetV2 alpha 1.0 at 160 px, a 70:24:6 split, no
augmentation); the head trains until it converges (Adam at 1e-3, batch 64, early stopping
on validation loss, at most 100 epochs), which the origin's 10 epochs at 1e-4 did not.
``ORIGIN_HEAD_SETTINGS`` reproduce the origin's head training exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import CrackscanError
from .files import write_text

MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
EMBEDDING_BACKENDS = ("auto", "litert", "keras")
DEFAULT_MAX_PIXELS = 150_000_000  # a 50-megapixel survey photo must pass; a decompression bomb must not


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    kind: type  # int, float, str or bool
    default: Any
    help: str
    low: float | None = None  # inclusive bounds unless the *_open flag says exclusive
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    optional: bool = False  # None is a valid value (it means "the default for this model")
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """The value, converted where lossless (7 -> 7.0 for a float); else a one-line error."""
        if value is None and self.optional:
            return None
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.kind is bool:
            if not isinstance(value, bool):
                raise CrackscanError(f"{self.name} must be true or false, got {value!r}")
            return value
        if not isinstance(value, self.kind) or isinstance(value, bool):
            raise CrackscanError(f"{self.name} must be {self._describe()}, got {value!r}")
        if self.kind is float and not math.isfinite(value):
            raise CrackscanError(f"{self.name} must be a finite number, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise CrackscanError(f"{self.name} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            raise CrackscanError(f"{self.name} must be {self._describe()}, got {value!r}")
        return value

    def _describe(self) -> str:
        noun = {int: "a whole number", float: "a number", str: "text", bool: "true or false (1/0, yes/no)"}[self.kind]
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{noun} in {left}{_number(self.low)}, {_number(self.high)}{right}"
        if self.low is not None:
            return f"{noun} {'above' if self.low_open else 'of at least'} {_number(self.low)}"
        return noun


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def check_all(settings: Sequence[Setting], values: Mapping[str, Any]) -> dict[str, Any]:
    known = {s.name: s for s in settings}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise CrackscanError(f"unknown setting(s): {', '.join(unknown)}")
    return {name: known[name].check(value) for name, value in values.items()}


def defaults(settings: Sequence[Setting]) -> dict[str, Any]:
    return {s.name: s.default for s in settings}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _parser_type(setting: Setting) -> Any:
    return {bool: _parse_bool, int: int, float: float, str: str}[setting.kind]


def add_arguments(parser: argparse.ArgumentParser | Any, settings: Iterable[Setting]) -> None:
    """Flags for ``settings``; each defaults to None so that only what was given is checked
    and passed on (``given``), and the help shows the real default."""
    for setting in settings:
        shown = "" if "default" in setting.help else f" (default: {setting.default})"
        if setting.kind is bool and setting.default is False:
            parser.add_argument(setting.flag, action="store_true", default=None, help=setting.help)
            continue
        extra = {"choices": setting.choices} if setting.choices and setting.kind is str else {}
        parser.add_argument(setting.flag, type=_parser_type(setting), default=None, metavar=setting.metavar,
                            help=f"{setting.help}{shown}", **extra)


def given(args: argparse.Namespace, settings: Iterable[Setting]) -> dict[str, Any]:
    """The settings given on the command line, checked."""
    return {s.name: s.check(getattr(args, s.name)) for s in settings if getattr(args, s.name, None) is not None}


def resolved(args: argparse.Namespace, settings: Sequence[Setting]) -> dict[str, Any]:
    """Every setting: given ones checked, the rest at their defaults."""
    return {**defaults(settings), **given(args, settings)}


def query_parameters(settings: Iterable[Setting]) -> list[dict[str, Any]]:
    """OpenAPI descriptions of ``settings`` as query parameters, for the server's docs."""
    described = []
    for setting in settings:
        schema: dict[str, Any] = {"type": {int: "integer", float: "number", str: "string", bool: "boolean"}[setting.kind]}
        if setting.low is not None:
            schema["exclusiveMinimum" if setting.low_open else "minimum"] = setting.low
        if setting.high is not None:
            schema["exclusiveMaximum" if setting.high_open else "maximum"] = setting.high
        if setting.default is not None:
            schema["default"] = setting.default
        described.append({"name": setting.name, "in": "query", "required": False, "schema": schema,
                          "description": setting.help})
    return described


def from_query(settings: Sequence[Setting], query: Mapping[str, str]) -> dict[str, Any]:
    """Every setting from a query string: given ones converted and checked, the rest defaults."""
    known = {s.name: s for s in settings}
    values = defaults(settings)
    for name, text in query.items():
        if name not in known:
            raise CrackscanError(f"unknown query parameter {name!r} (known: {', '.join(known)})")
        setting = known[name]
        try:
            value = _parser_type(setting)(text)
        except ValueError:
            raise CrackscanError(f"{name} must be {setting._describe()}, got {text!r}") from None
        values[name] = setting.check(value)
    return values


# ---- scanning photos (CLI scan, server /v1/scan) ------------------------------------------
TILE = Setting("tile", int, None, "tile side in photo px (default: the model's training patch size)",
               low=16, high=8192, optional=True)
STRIDE = Setting("stride", int, None, "step between tiles in px (default: the tile side, no overlap)",
                 low=1, high=8192, optional=True)
THRESHOLD = Setting("threshold", float, 0.5, "crack probability from which a tile is cracked",
                    low=0.0, high=1.0, low_open=True, high_open=True)
MAX_PIXELS = Setting("max_pixels", int, DEFAULT_MAX_PIXELS, "refuse photos with more pixels than this, before decoding",
                     low=1, high=2_000_000_000)
SCAN_SETTINGS = (TILE, STRIDE, THRESHOLD)
# ---- measuring a segmenter's cracks (CLI scan, server /v1/scan, surveys) --------------------
MM_PER_PIXEL = Setting("mm_per_pixel", float, None, "the photos' scale in mm per pixel, if you know it", low=0.0,
                       high=1000.0, low_open=True, optional=True)
DISTANCE_M = Setting("distance_m", float, None, "camera to surface in metres: the scale from the lens in each photo's "
                     "EXIF (focal length and its 35 mm equivalent)", low=0.0, high=100_000.0, low_open=True,
                     optional=True)
DISTANCE_FROM_DRONE = Setting("distance_from_drone", bool, False, "the camera's distance is the drone's height in each "
                              "photo's XMP (photos taken facing the surface)")
WIDTH_CLASSES = Setting("width_classes", str, None, "classes by max width in mm, e.g. hairline:0.1,fine:0.3,medium:1,"
                        "wide (default: hairline <0.1, fine <0.3, medium <0.41, wide; ACI 224R-01 Table 4.1)",
                        optional=True)
LIMIT_MM = Setting("limit_mm", str, None, "flag cracks wider than this: a width in mm, or an exposure's limit: "
                   "aci-dry-air, aci-humid, aci-deicing, aci-seawater, aci-water-retaining, ec2-x0-xc1, ec2-xc2-xs3",
                   optional=True)
MEASURE_SETTINGS = (MM_PER_PIXEL, DISTANCE_M, DISTANCE_FROM_DRONE, WIDTH_CLASSES, LIMIT_MM)
# ---- surveys: which engine runs them (CLI scan) ---------------------------------------------
ENGINE = Setting("engine", str, "local", "local: this process; ray: a Ray Data pipeline, on this machine or the cluster "
                 "at --address (pip install 'crackscan[ray]')", choices=("local", "ray"))
ADDRESS = Setting("address", str, None, "with --engine ray, the Ray cluster to join (e.g. ray://head:10001 or "
                  "head:6379); default: start Ray on this machine", optional=True)
WORKERS = Setting("workers", int, None, "with --engine ray, how many workers scan photos (one CPU each; default: "
                  "every CPU Ray has)", low=1, high=100_000, optional=True)
SURVEY_SETTINGS = (ENGINE, ADDRESS, WORKERS)
SCAN_QUERY = SCAN_SETTINGS + MEASURE_SETTINGS + (Setting("overlay", bool, True, "include the overlay PNG as base64"),)

# ---- predict, evaluate, export ---------------------------------------------------------------
BATCH_SIZE = Setting("batch_size", int, 32, "images per inference batch", low=1, high=4096)
PREDICT_SETTINGS = (BATCH_SIZE,)
EXPORT_SETTINGS = (
    Setting("calibration_images", int, 256, "how many calibration images for int8", low=1, high=100_000),
    Setting("check_images", int, 1000, "how many labelled images to check the export on", low=1, high=100_000),
)

# ---- site labels and adaptation ----------------------------------------------------------------
IGNORE_VALUE = Setting("ignore_value", int, None, "mask value of pixels that count neither way (e.g. 128 for "
                       "\"don't care\"); default: the masks folder's masks.json, else none", low=1, high=255,
                       optional=True, metavar="V")
LABEL_SETTINGS = (
    Setting("per_class", int, 25, "crack tiles and clear tiles to label, each", low=1, high=100_000),
    Setting("seed", int, 0, "seed of the random draw of tiles", low=0, high=2**32 - 1),
    dataclasses.replace(TILE, default=227, optional=False,
                        help="tile side in photo px (default: 227, the built-in models' patch scale)"),
    IGNORE_VALUE,
)

# A run is written with an int8 backbone, checked, so it scans at the built-in's speed.
INT8_BACKBONE = Setting("int8_backbone", bool, True, "make and check an int8 backbone as the run is written, "
                        "so it scans at int8 speed with no export (no: float only, ~10-40 s sooner)")
ADAPT_SETTINGS = (
    INT8_BACKBONE,
    Setting("max_parent_drop", float, 0.5, "most points of the parent's test accuracy adapting may cost, measured on "
            "its images (a built-in's check is a worst case: reported, never a refusal)", low=0.0, high=100.0),
)

# The segmenter's adaptation: from photos with crack masks (segment.adapt).
ADAPT_STEPS = Setting("steps", int, 42, "fine-tuning steps of 8 windows, for the cross-validation's folds and the "
                      "final fit alike (more: slower, and rarely better on a few photos)", low=1, high=100_000)
SEGMENT_ADAPT_SETTINGS = (
    IGNORE_VALUE,
    ADAPT_STEPS,
    Setting("crack_label", str, "crack", "in a Label Studio, CVAT or colour mask export: the label (or labels, "
            "comma-separated) of crack regions; every other region and unlabelled pixel is background",
            metavar="NAME"),
)

# ---- serve: where it listens and the budgets that keep one client from tying it up ------
SERVE_SETTINGS = (
    Setting("host", str, "127.0.0.1", "address to listen on (127.0.0.1: this machine only)"),
    Setting("port", int, 8000, "port to listen on", low=1, high=65535),
    Setting("max_upload_mb", float, 25.0, "largest request body in MB (also for chunked uploads)",
            low=0.0, high=10_000.0, low_open=True),
    # Memory follows decoded pixels (about 7 bytes each while a photo is decoded and resized),
    # so a server's defaults are below the CLI's: a 50 MP photo passes, 1.5 GB is never reached.
    dataclasses.replace(MAX_PIXELS, default=100_000_000),
    Setting("max_request_pixels", int, 100_000_000, "most decoded pixels in one request, all its files together",
            low=1, high=2_000_000_000),
    Setting("max_busy_pixels", int, 120_000_000,
            "most decoded pixels held by all requests at once; later ones wait their turn", low=1,
            high=20_000_000_000),
    Setting("max_tiles", int, 4096, "most tiles one scan request may classify", low=1, high=1_000_000),
    Setting("request_timeout", float, 60.0, "seconds a client may take to send a request body", low=0.0,
            high=3600.0, low_open=True),
    Setting("header_timeout", float, 10.0, "seconds a client may take to send a request's headers", low=0.0,
            high=600.0, low_open=True),
    Setting("max_connections", int, 256, "most open connections; more get 503", low=1, high=100_000),
    # The labelling loop writes crops of uploads to disk: what one request and the whole
    # folder may take is bounded, so no request can fill the disk.
    Setting("max_label_side", int, 1024, "longest side of a labelled box in px (a few tiles)", low=8, high=8192),
    Setting("max_label_mb", float, 32.0, "most MB one /v1/labels request may write (its crops and photo, "
            "uncompressed)", low=0.0, high=100_000.0, low_open=True),
    Setting("max_labels_folder_mb", float, 2048.0, "most MB the --labels folder may hold", low=0.0,
            high=10_000_000.0, low_open=True),
    # A segmenter's Adapt on the page runs five fine-tunings of this many steps (four folds
    # and the final fit), ~0.2 s a step on 2 cores: its time, bounded as the rest.
    dataclasses.replace(ADAPT_STEPS, name="adapt_steps", help="fine-tuning steps of a segmenter's Adapt on the page "
                        "(as crackscan adapt --steps)", high=10_000),
    Setting("allow_host", str, "", "more host names the server answers to, comma-separated (e.g. the name a "
            "TLS proxy forwards; * for any); loopback names and the bound address always work", metavar="NAMES"),
    Setting("token", str, None, "the access token every request must carry; default: none on loopback, "
            "generated and printed when --host is beyond this machine", optional=True),
)
# What /health shows: the budgets, never the access settings.
SERVE_LIMIT_NAMES = tuple(s.name for s in SERVE_SETTINGS if s.name not in ("host", "port", "allow_host", "token"))


# ---- training --------------------------------------------------------------------------------
TRAIN_SETTINGS = (
    Setting("image_size", int, 160, "model input side in px", low=32, high=1024),
    Setting("alpha", float, 1.0, "MobileNetV2 width", choices=MOBILENET_V2_ALPHAS),
    Setting("weights", str, "imagenet", "backbone weights: imagenet (Keras downloads them once), none, or a .h5 file"),
    Setting("dropout", float, 0.0, "dropout before the head", low=0.0, high=1.0, high_open=True),
    Setting("split", str, "70:24:6", "train:val:test proportions, adding up to 100 (or 1)"),
    Setting("seed", int, 42, "seed of the split and the head's initialisation", low=0, high=2**32 - 1),
    Setting("epochs", int, 100, "most passes over the cached features (training stops earlier once validation "
            "loss stops improving)", low=1, high=1000),
    Setting("patience", int, 5, "stop after this many epochs without a validation-loss gain of min_delta "
            "(0: run every epoch, as the origin)", low=0, high=1000),
    Setting("min_delta", float, 1e-3, "smallest validation-loss gain that counts as improving", low=0.0, high=1.0),
    Setting("learning_rate", float, 1e-3, "Adam's learning rate", low=0.0, high=1.0, low_open=True),
    Setting("batch_size", int, 64, "head training batch size", low=1, high=4096),
    Setting("positive_class", str, None, "the class folder holding cracks (default: Positive, crack or cracked)",
            optional=True),
    Setting("embed_batch_size", int, 32, "images per batch of the one backbone pass", low=1, high=4096),
    Setting("embedding_backend", str, "auto", "runtime of the one backbone pass (auto: LiteRT if installed)",
            choices=EMBEDDING_BACKENDS),
    INT8_BACKBONE,
)
_TRAIN = {s.name: s for s in TRAIN_SETTINGS}
# A segmenter's defaults where they differ from a classifier's (train --task segment): windows
# of 256 px at the photo's own scale, the decoder's Adam at 2e-3 in batches of 8 windows, and a
# test fifth of each mask set held out by photo.
SEGMENT_TRAIN = {"image_size": 256, "epochs": 10, "learning_rate": 2e-3, "batch_size": 8, "patience": 3,
                 "split": "70:10:20", "windows_per_photo": 4, "empty_share": 0.3}
ORIGIN_HEAD_SETTINGS = {"epochs": 10, "learning_rate": 1e-4, "batch_size": 16, "patience": 0}


def _default(name: str) -> Any:
    return _TRAIN[name].default


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A run's settings, saved into it as config.json. Every default is TRAIN_SETTINGS', the
    CLI's flags' (one definition); ``split`` is held as three fractions.

    Converged by default: Adam at 1e-3, batch 64, stopping once validation loss stops
    improving (benchmarks/head_training.py: 18-51 epochs, 4-10 s on 600-3,000 images, where
    the origin's 10 epochs always end still improving). The origin's method is
    ORIGIN_HEAD_SETTINGS. ``embedding_backend`` is the runtime of the one pass of the frozen
    backbone over the images; LiteRT and Keras give the same features to float precision,
    LiteRT several times faster on a CPU."""

    image_size: int = _default("image_size")
    alpha: float = _default("alpha")
    # "imagenet" (Keras' download and cache), "none" (random init) or a path to a .h5 file.
    weights: str = _default("weights")
    dropout: float = _default("dropout")
    split: tuple[float, float, float] = dataclasses.field(default_factory=lambda: parse_split(_default("split")))
    seed: int = _default("seed")
    epochs: int = _default("epochs")
    patience: int = _default("patience")
    min_delta: float = _default("min_delta")
    learning_rate: float = _default("learning_rate")
    batch_size: int = _default("batch_size")
    positive_class: str | None = _default("positive_class")
    embed_batch_size: int = _default("embed_batch_size")
    embedding_backend: str = _default("embedding_backend")
    int8_backbone: bool = _default("int8_backbone")

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            checked = parse_split(value) if field.name == "split" else _TRAIN[field.name].check(value)
            object.__setattr__(self, field.name, checked)
        if not self.weights:
            raise CrackscanError("weights must be 'imagenet', 'none' or the path of a weights file")

    def replace(self, **changes: Any) -> "TrainConfig":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise CrackscanError(f"unknown setting(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Any) -> "TrainConfig":
        if not isinstance(values, dict):
            raise CrackscanError(f"settings must be a JSON object of name: value, got {type(values).__name__}")
        return cls().replace(**values)

    def save(self, path: Path) -> None:
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise CrackscanError(f"cannot read settings from {path}: {error}") from None
        try:
            return cls.from_dict(values)
        except CrackscanError as error:
            raise CrackscanError(f"settings in {path}: {error}") from None


def parse_split(value: Any) -> tuple[float, float, float]:
    """Accepts "70:24:6", (0.7, 0.24, 0.06) or (70, 24, 6): three proportions that add up to
    100 or to 1. Anything else is refused, not renormalised: 70:40:6 is a typo, not a plan."""
    if isinstance(value, str):
        parts: list[Any] = value.split(":")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise CrackscanError(f"split must be three numbers like 70:24:6, got {value!r}")
    try:
        numbers = [float(part) for part in parts]
    except (TypeError, ValueError):
        raise CrackscanError(f"split must be three numbers like 70:24:6, got {value!r}") from None
    if len(numbers) != 3 or not all(math.isfinite(n) and n >= 0 for n in numbers):
        raise CrackscanError(f"split must be three non-negative numbers like 70:24:6, got {value!r}")
    total = sum(numbers)
    if not (math.isclose(total, 100, abs_tol=1e-6) or math.isclose(total, 1, abs_tol=1e-6)):
        raise CrackscanError(f"split proportions must add up to 100 (or 1), got {value!r} (adds up to {total:g})")
    if numbers[0] == 0 or numbers[1] == 0:
        raise CrackscanError("split needs a training and a validation part (the first two numbers)")
    return tuple(round(n / total, 6) for n in numbers)  # type: ignore[return-value]


def cache_folder() -> Path:
    """Where crackscan keeps what it makes once and reuses (the built-in models' parent runs
    for adapt): $CRACKSCAN_CACHE, else $XDG_CACHE_HOME/crackscan, else ~/.cache/crackscan."""
    chosen = os.environ.get("CRACKSCAN_CACHE")
    if chosen:
        return Path(chosen)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "crackscan"
