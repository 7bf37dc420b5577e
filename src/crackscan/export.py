"""Exporting the Keras model to LiteRT and ONNX, with its metadata inside the file.

LiteRT: the metadata is a small zip archive appended to the flatbuffer, the same place
the TFLite metadata tools put associated files; the interpreter ignores trailing bytes.
ONNX: the metadata is a model property (``metadata_props``), which ONNX has for this.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from . import _tf, runs
from .datasets import Sample, find_dataset_for_model, read_labelled, split_samples
from .errors import CrackscanError, MissingDependencyError
from .files import atomic_path, check_writable, refuse_overwrite, write_bytes
from .images import list_image_files
from .model.info import ModelInfo
from .model.keras_archive import load_keras_model
from .model.registry import resolve
from .model.formats import EXPORT_FORMATS, FORMAT_TABLE, Format
from .model.tasks import task_of
from .progress import Progress, as_progress
from .runtime.formats import attach_litert_metadata, attach_onnx_metadata, keras_to_litert, quiet_stdout
from .runtime.int8_backbone import sample_rows
from .runtime.parity import FLOAT_TOLERANCE, failure_message, parity_report
from .runtime.runners import KerasRunner, LiteRTRunner, OnnxRunner, Runner
from .site.labels import labelled_samples, unlabelled_site_tiles

def keras_to_onnx(model: Any, path: Path) -> Path:
    """Keras' own ONNX export (tf2onnx underneath)."""
    _require_packages(FORMAT_TABLE["onnx"])

    size = model.input_shape[1:]
    model(np.zeros((1, *size), np.float32))  # Keras exports only models that have been called
    with quiet_stdout(), _tf.muted_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf2onnx's NumPy 2 deprecation notices
        model.export(str(path), format="onnx", verbose=False)
    return path


def quantize_onnx_int8(float_path: Path, int8_path: Path, batches: Callable[[], Iterable[np.ndarray]]) -> Path:
    """Static (full-integer) QDQ quantization calibrated on real images: activations u8,
    weights s8 per channel, the form ONNX Runtime runs with VNNI integer kernels."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnxruntime

    input_name = onnxruntime.InferenceSession(str(float_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches())

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: np.asarray(batch, np.float32)}

    prepared = int8_path.with_suffix(".prep.onnx")
    try:
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(int8_path), Reader(),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )
    finally:
        prepared.unlink(missing_ok=True)
    return int8_path


FORMATS = EXPORT_FORMATS  # the format table's rows that export writes
# A segmenter's int8 export may lose this much pixel F1 (2 px tolerance) against the masks of
# its run's validation photos, and must draw the float model's mask to this F1.
SEGMENT_INT8_MAX_F1_DROP = 0.02
SEGMENT_INT8_MIN_AGREEMENT_F1 = 0.9


@dataclasses.dataclass
class ExportResult:
    path: Path
    format: str
    int8: bool
    size_bytes: int
    check: dict[str, Any]
    seconds: float


def export(
    model: str | os.PathLike,
    format: str = "litert",
    int8: bool = False,
    calibration: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    check: str | os.PathLike | None = None,
    calibration_images: int = 256,
    check_images: int = 1000,
    seed: int = 0,
    force: bool = False,
    progress: Progress | bool = False,
) -> ExportResult:
    """Exports a run or .keras model to LiteRT or ONNX, float or int8, and checks it.

    The export is compared with the Keras model on real labelled images (the run's held-out
    val/test split, or ``check``) before it is written: a float export must agree within
    1e-4 in crack probability; an int8 export may lose at most runtime.parity.INT8_MAX_ACCURACY_DROP points
    of accuracy and change at most INT8_MAX_DISAGREEMENT of the labels. An existing
    file is replaced only with ``force``. ``progress`` hears a step as each stage starts.
    """
    step = as_progress(progress).step
    started = time.perf_counter()
    if format not in FORMATS:
        raise CrackscanError(f"export format must be one of {', '.join(FORMATS)}, got {format!r}")
    row = FORMAT_TABLE[format]
    resolved = resolve(model)
    keras_path, run_dir = resolved.file, resolved.run
    if keras_path.suffix != ".keras":
        raise CrackscanError(f"export starts from a run folder or a .keras model, not {keras_path.suffix}")
    if out is not None and Path(out).suffix.lower() != row.suffix:
        raise CrackscanError(f"a {format} model file must end in {row.suffix}, not {Path(out).name}")
    destination = Path(out) if out else keras_path.with_name(
        f"{keras_path.stem}{'.int8' if int8 else ''}{row.suffix}")
    refuse_overwrite(destination, force, "model file")
    check_writable(destination.parent, create=False)  # a read-only folder is said now, not after the conversion
    _require_packages(row)
    keras_model, info = load_keras_model(keras_path)
    convert_and_check = task_of(info).implementation("export")
    return convert_and_check(keras_model, info, format=format, int8=int8, run_dir=run_dir, destination=destination,
                             calibration=calibration, check=check, calibration_images=calibration_images,
                             check_images=check_images, seed=seed, step=step, started=started)


def export_classifier(keras_model: Any, info: ModelInfo, *, format: str, int8: bool, run_dir: Path | None,
                      destination: Path, calibration: str | os.PathLike | None, check: str | os.PathLike | None,
                      calibration_images: int, check_images: int, seed: int, step: Callable[[str], None],
                      started: float) -> ExportResult:
    """A classifier's export, checked against the Keras model on labelled images."""
    # An adapted run answers its site's tiles with a head the parent's images never reach
    # (the gate keeps them on the parent's): int8 must be calibrated and checked on both. A
    # run adapted from a built-in model has no parent images (the built-in ships features),
    # so its site's tiles are all it is calibrated and checked on.
    site = runs.site_labels(run_dir) if run_dir is not None and check is None and calibration is None else None
    parent_images = run_dir is None or (run_dir / runs.SPLIT_FILE).is_file() or check is not None
    if site is None or not (int8 or not parent_images):
        site = None
    site_check = read_labelled(labelled_samples(site, info.class_names, info.positive_class),
                               info.input_size) if site is not None else None
    step(f"reading up to {check_images} labelled images to check the export on")
    check_set = _check_images(run_dir, check, info, check_images, seed) if parent_images else site_check
    batches = _calibration_batches(run_dir if parent_images else None, calibration, site, site_check, info,
                                   calibration_images, seed, step) if int8 else None

    with tempfile.TemporaryDirectory(prefix="crackscan-export-") as scratch:
        candidate, runner = _convert(keras_model, info, format, batches, Path(scratch), step)
        step(f"checking the export against the Keras model on {len(check_set[1])} images")
        report = parity_report(KerasRunner(keras_model), runner, check_set, info, int8)
        if not report["passed"]:
            raise CrackscanError(failure_message(report, int8, run_dir is not None and runs.recorded_underfit(run_dir)))
        if site_check is not None:
            step(f"and on the {len(site_check[1])} labelled tiles of the site")
            report["site"] = parity_report(KerasRunner(keras_model), runner, site_check, info, int8)
            if not report["site"]["passed"]:
                raise CrackscanError("on the site's labelled tiles: " + failure_message(report["site"], int8))
        with atomic_path(destination) as temporary:
            shutil.move(str(candidate), temporary)
    return ExportResult(destination, format, int8, destination.stat().st_size, report, time.perf_counter() - started)


def _calibration_batches(run_dir: Path | None, calibration: Any, site: Path | None,
                         site_check: tuple[np.ndarray, np.ndarray] | None, info: ModelInfo, count: int, seed: int,
                         step: Callable[[str], None]) -> Callable[[], Iterable[np.ndarray]]:
    """int8 calibration images in batches: ``calibration``, or the run's training split; for
    an adapted run, half of them the site's tiles."""
    if calibration is not None:
        calibration_files = list_image_files([calibration])
    elif run_dir is not None:
        calibration_files = [s.path for s in _run_split_images(run_dir, info, ("train",))]
    elif site is not None:
        calibration_files = []  # a run adapted from a built-in: its site's tiles only
    else:
        raise CrackscanError("int8 calibration needs real images: pass --calibration DATA")
    site_share = 0 if site is None else count if not calibration_files else count // 2
    calibration_files = _sample(calibration_files, count - site_share, seed)
    if not calibration_files and site is None:
        raise CrackscanError("no calibration images found")
    pixels = np.zeros((0, info.input_size, info.input_size, 3), np.uint8)
    if calibration_files:
        step(f"reading {len(calibration_files)} calibration images")
        pixels, _ = read_labelled([Sample(path, -1) for path in calibration_files], info.input_size)
    if site is not None and site_check is not None:
        site_pixels = np.concatenate([site_check[0], unlabelled_site_tiles(site, info.input_size, count).pixels])
        site_pixels = np.stack(_sample(list(site_pixels), site_share, seed))
        step(f"and {len(site_pixels)} tiles of the site it was adapted to ({site})")
        pixels = np.concatenate([pixels, site_pixels])

    def batches() -> Iterable[np.ndarray]:
        for start in range(0, len(pixels), 32):
            yield pixels[start : start + 32]

    return batches


def _convert(keras_model: Any, info: ModelInfo, format: str, batches: Callable[[], Iterable[np.ndarray]] | None,
             scratch: Path, step: Callable[[str], None]) -> tuple[Path, Runner]:
    """The converted file in ``scratch``, metadata inside, and a runner of it: the format's row's converter."""
    return FORMAT_TABLE[format].implementation("converter")(keras_model, info, batches, scratch, step)


def convert_litert(keras_model: Any, info: ModelInfo, batches: Callable[[], Iterable[np.ndarray]] | None,
                   scratch: Path, step: Callable[[str], None]) -> tuple[Path, Runner]:
    step(f"converting to LiteRT {'int8, calibrating' if batches is not None else 'float'} (the slow step: ~15-60 s)")
    content = attach_litert_metadata(keras_to_litert(keras_model, batches), info)
    return write_bytes(scratch / "model.tflite", content), LiteRTRunner(content)


def convert_onnx(keras_model: Any, info: ModelInfo, batches: Callable[[], Iterable[np.ndarray]] | None,
                 scratch: Path, step: Callable[[str], None]) -> tuple[Path, Runner]:
    step(f"converting to ONNX{' and quantizing to int8' if batches is not None else ''} (the slow step: ~15-60 s)")
    candidate = keras_to_onnx(keras_model, scratch / "float.onnx")
    if batches is not None:
        candidate = quantize_onnx_int8(candidate, scratch / "int8.onnx", batches)
    attach_onnx_metadata(candidate, info)
    return candidate, OnnxRunner(candidate)


def _require_packages(row: Format) -> None:
    for package in row.packages:
        try:
            __import__(package)
        except ImportError:
            raise MissingDependencyError(package, f"{row.title} export", extra="export") from None


def _check_images(run_dir: Path | None, check: Any, info: ModelInfo, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if check is not None:
        labelled = find_dataset_for_model(check, info.class_names, info.positive_class)[1]
    elif run_dir is not None:
        labelled = _run_split_images(run_dir, info, ("test", "val"))
    else:
        raise CrackscanError("checking the export needs real labelled images: pass --check DATA")
    pixels, labels = read_labelled(_sample(labelled, limit, seed), info.input_size)
    if len(labels) == 0:
        raise CrackscanError("no readable check images")
    return pixels, labels


def _run_split_images(run_dir: Path, info: ModelInfo, parts: tuple[str, ...]) -> list[Sample]:
    rows = [r for r in runs.split_rows(run_dir) if r["split"] in parts]
    found = [s for s in split_samples(run_dir, info.class_names, rows) if s.path.is_file()]
    if not found:
        raise CrackscanError(f"the images of {run_dir}'s split are not at {runs.data_root(run_dir)}: pass "
                             "--check/--calibration DATA")
    return found


def _sample(items: list, limit: int, seed: int) -> list:
    return [items[i] for i in sample_rows(len(items), limit, seed)]


def _in_views(pixels: np.ndarray, masks: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows in their flips and rotations where the photos gave fewer than ``wanted`` (a run
    adapted from eight small site photos has eight): int8 ranges calibrated on eight windows,
    and a check on eight, said more about those windows than about the model."""
    if len(pixels) >= wanted:
        return pixels, masks
    from .site.fit import dihedral

    return dihedral(pixels)[:wanted], dihedral(masks)[:wanted]


def export_segmenter(keras_model: Any, info: ModelInfo, *, format: str, int8: bool, run_dir: Path | None,
                     destination: Path, calibration: str | os.PathLike | None, check: str | os.PathLike | None,
                     calibration_images: int, check_images: int, seed: int, step: Callable[[str], None],
                     started: float) -> ExportResult:
    """A segmenter's export, checked on windows of its run's validation photos against their
    masks and the Keras model's maps: pixel F1 (2 px tolerance) and probability error. Its
    windows come from the run (``calibration`` and ``check`` folders are a classifier's)."""
    from .segment.masksets import run_photos, sample_windows
    from .segment.pixels import pixel_counts, PixelCounts

    if run_dir is None or not (run_dir / runs.SEGMENT_SPLIT_FILE).is_file():
        raise CrackscanError("a segmenter is exported from its run folder (its validation photos check the export)")
    # A run adapted to a site holds only the site's photos, all taught on: they check it.
    checked = ("val",) if run_photos(run_dir, ("val",)) else ("train",)
    step(f"reading windows of the run's {'validation' if checked == ('val',) else 'site'} photos to check the export on")
    check_pixels, truth = _in_views(*sample_windows(run_dir, checked, info.input_size, min(check_images, 200), seed),
                                    min(check_images, 200))
    batches = None
    if int8:
        step("reading windows of the run's training photos to calibrate on")
        calibration, _ = _in_views(*sample_windows(run_dir, ("train",), info.input_size, min(calibration_images, 512),
                                                   seed), min(calibration_images, 512))

        def batches() -> Iterable[np.ndarray]:
            for start in range(0, len(calibration), 8):
                yield calibration[start:start + 8]

    with tempfile.TemporaryDirectory(prefix="crackscan-export-") as scratch:
        candidate, runner = _convert(keras_model, info, format, batches, Path(scratch), step)
        step(f"checking the export against the Keras model on {len(check_pixels)} windows")
        reference = np.concatenate([KerasRunner(keras_model)(check_pixels[i:i + 8]) for i in range(0, len(check_pixels), 8)])
        exported = np.concatenate([runner(check_pixels[i:i + 8]) for i in range(0, len(check_pixels), 8)])
        reference, exported = reference.reshape(truth.shape), exported.reshape(truth.shape)
        keras_f1, export_f1, agreement = PixelCounts(), PixelCounts(), PixelCounts()
        for r, e, t in zip(reference >= 0.5, exported >= 0.5, truth):
            keras_f1 += pixel_counts(r, t)
            export_f1 += pixel_counts(e, t)
            agreement += pixel_counts(e, r)
        difference = np.abs(reference - exported)
        report = {"windows": int(len(truth)), "keras_pixel_f1": round(keras_f1.f1, 4),
                  "export_pixel_f1": round(export_f1.f1, 4), "agreement_pixel_f1": round(agreement.f1, 4),
                  "max_probability_difference": float(difference.max()),
                  "mean_probability_difference": float(difference.mean())}
        if int8:
            report["passed"] = bool(keras_f1.f1 - export_f1.f1 <= SEGMENT_INT8_MAX_F1_DROP
                                    and agreement.f1 >= SEGMENT_INT8_MIN_AGREEMENT_F1)
            report["criterion"] = (f"pixel F1 drop <= {SEGMENT_INT8_MAX_F1_DROP} and the Keras mask drawn to F1 >= "
                                   f"{SEGMENT_INT8_MIN_AGREEMENT_F1}")
        else:
            report["passed"] = bool(report["max_probability_difference"] <= 10 * FLOAT_TOLERANCE)
            report["criterion"] = f"crack probability within {10 * FLOAT_TOLERANCE:g} of the Keras model's"
        if not report["passed"]:
            raise CrackscanError(f"the {'int8 ' if int8 else ''}export draws other masks than the Keras model (pixel F1 "
                                 f"{report['keras_pixel_f1']:.3f} -> {report['export_pixel_f1']:.3f}, agreement "
                                 f"{report['agreement_pixel_f1']:.3f}, probability off by up to "
                                 f"{report['max_probability_difference']:.2g}; allowed: {report['criterion']}): "
                                 "not written")
        with atomic_path(destination) as temporary:
            shutil.move(str(candidate), temporary)
    return ExportResult(destination, format, int8, destination.stat().st_size, report, time.perf_counter() - started)
