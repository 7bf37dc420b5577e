"""The crackscan command: argument parsing and printing over the package's functions."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .config import EMBEDDING_BACKENDS, MOBILENET_V2_ALPHAS, TrainConfig
from .data import DEFAULT_MAX_PIXELS
from .errors import CrackscanError

EXIT_USER_ERROR = 2
EXIT_SOME_SKIPPED = 1


def _train_settings(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    group = parser.add_argument_group("settings (defaults: the project's origin)")
    group.add_argument("--config", type=Path, help="a config.json (e.g. from an earlier run) to start from")
    group.add_argument("--image-size", type=int, help=f"model input side in px (default {defaults.image_size})")
    group.add_argument("--alpha", type=float, choices=MOBILENET_V2_ALPHAS, help=f"MobileNetV2 width (default {defaults.alpha})")
    group.add_argument("--weights", help="backbone weights: imagenet (default; Keras downloads them once), none, or a .h5 file")
    group.add_argument("--dropout", type=float, help=f"dropout before the head (default {defaults.dropout})")
    group.add_argument("--split", help="train:val:test proportions (default 70:24:6)")
    group.add_argument("--seed", type=int, help=f"seed of the split and the head's initialisation (default {defaults.seed})")
    group.add_argument("--epochs", type=int, help=f"default {defaults.epochs}")
    group.add_argument("--learning-rate", type=float, help=f"Adam's learning rate (default {defaults.learning_rate})")
    group.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size}")
    group.add_argument("--positive-class", help="the class folder holding cracks (default: Positive, crack or cracked)")
    group.add_argument("--embedding-backend", choices=EMBEDDING_BACKENDS, help="runtime of the one backbone pass (default auto: LiteRT if installed)")


def _config_from(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    names = ("image_size", "alpha", "weights", "dropout", "split", "seed", "epochs", "learning_rate",
             "batch_size", "positive_class", "embedding_backend")
    return config.replace(**{n: getattr(args, n) for n in names if getattr(args, n) is not None})


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="crackscan", description="Find cracks in photos of concrete.")
    parser.add_argument("--version", action="version", version=f"crackscan {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a crack classifier on a folder of class folders")
    train.add_argument("data", type=Path, help="folder with one subfolder per class, e.g. Positive/ and Negative/")
    train.add_argument("--out", type=Path, help="run folder to write (default runs/YYYYmmdd-HHMMSS)")
    train.add_argument("--force", action="store_true", help="overwrite a run already in --out")
    _train_settings(train)

    evaluate = commands.add_parser("evaluate", help="measure a model on a labelled folder")
    evaluate.add_argument("model", type=Path, help="run folder or model file (.keras, .tflite, .onnx)")
    evaluate.add_argument("data", type=Path, help="folder with one subfolder per class")
    evaluate.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                          help="with a run folder: only the images of this part of its split (matched by content)")
    evaluate.add_argument("--out", type=Path, help="write metrics.json, confusion_matrix.png and skipped.csv here")
    evaluate.add_argument("--format", default="text", choices=("text", "json"))

    predict = commands.add_parser("predict", help="classify images: crack or not, with the crack probability")
    predict.add_argument("model", type=Path, help="run folder or model file (.keras, .tflite, .onnx)")
    predict.add_argument("paths", nargs="+", help="image files, folders or glob patterns")
    predict.add_argument("--format", default="table", choices=("table", "csv", "json"))
    predict.add_argument("--batch-size", type=int, default=32)

    export = commands.add_parser("export", help="export a model to LiteRT or ONNX, float or int8, checked against Keras")
    export.add_argument("model", type=Path, help="run folder or .keras model")
    export.add_argument("--format", required=True, choices=("litert", "onnx"))
    export.add_argument("--int8", action="store_true", help="static full-integer quantization, calibrated on real images")
    export.add_argument("--calibration", type=Path, help="images for int8 calibration (default: the run's training split)")
    export.add_argument("--calibration-images", type=int, default=256, help="how many calibration images (default 256)")
    export.add_argument("--check", type=Path, help="labelled images to check the export on (default: the run's val/test split)")
    export.add_argument("--check-images", type=int, default=1000, help="how many check images (default 1000)")
    export.add_argument("--out", type=Path, help="output file (default: beside the model, e.g. model.int8.tflite)")

    scan = commands.add_parser("scan", help="scan whole photos: crack map overlay, tile grid and summary per photo")
    scan.add_argument("model", type=Path, help="run folder or model file (.keras, .tflite, .onnx)")
    scan.add_argument("photos", nargs="+", help="photo files, folders or glob patterns")
    scan.add_argument("--out", type=Path, required=True, help="folder for the results (one subfolder per photo)")
    scan.add_argument("--tile", type=int, help="tile side in photo px (default: the model's training patch size, 227)")
    scan.add_argument("--stride", type=int, help="step between tiles in px (default: the tile side, no overlap)")
    scan.add_argument("--threshold", type=float, default=0.5, help="crack probability from which a tile is cracked")
    scan.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                      help=f"refuse photos with more pixels than this (default {DEFAULT_MAX_PIXELS:,})")
    scan.add_argument("--force", action="store_true", help="scan again photos whose results exist")

    serve = commands.add_parser("serve", help="HTTP API and web page for crack checks")
    serve.add_argument("model", type=Path, help="run folder or model file (.keras, .tflite, .onnx)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-upload-mb", type=float, default=25.0, help="largest accepted upload (default 25 MB)")
    serve.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest accepted image in pixels")

    demo = commands.add_parser("demo", help="make a synthetic dataset, train on it, evaluate, plot")
    demo.add_argument("--out", type=Path, default=Path("crackscan-demo"), help="folder for the data and the run")
    demo.add_argument("--per-class", type=int, default=400, help="synthetic images per class (default 400)")
    demo.add_argument("--force", action="store_true", help="overwrite an earlier demo in --out")
    demo.add_argument("--weights", default="imagenet", help="backbone weights (default imagenet)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CrackscanError as error:
        print(f"crackscan: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("crackscan: interrupted", file=sys.stderr)
        return 130


def _report_skipped(path: str, reason: str) -> None:
    """One line per unreadable input; the command goes on with the rest."""
    print(f"crackscan: skipped {path}: {reason}", file=sys.stderr)


def _show_progress() -> bool:
    return sys.stderr.isatty() or bool(__import__("os").environ.get("CRACKSCAN_PROGRESS"))


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    config = _config_from(args)
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    run = train(args.data, out, config, progress=_show_progress(), force=args.force)
    _print_run(run)
    return 0


def _print_run(run: Any) -> None:
    from .evaluate import format_metrics

    m = run.metrics
    images = m["images"]
    print(f"trained on {images['split']['train']} images, kept epoch {m['best_epoch']} of {run.config.epochs} "
          f"(lowest validation loss); {images['skipped']} unreadable files skipped (skipped.csv), "
          f"{images['duplicate_copies']} duplicate copies kept together")
    print(format_metrics("validation", m["val"]))
    print(format_metrics("test", m["test"]))
    print(f"took {m['timing']['total_s']:.1f} s, peak memory {m['peak_memory_mb']:.0f} MB")
    print(f"run folder: {run.path}  (model.keras, metrics.json, plots)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, format_metrics

    result = evaluate(args.model, args.data, split=args.split, out=args.out, progress=_show_progress())
    for path, reason in result.skipped:
        _report_skipped(path, reason)
    if args.format == "json":
        print(json.dumps(result.metrics, indent=2))
    else:
        print(format_metrics(f"{args.split} images" if args.split != "all" else "images", result.metrics))
        matrix = result.metrics["confusion_matrix"]
        width = max(len(n) for n in matrix["labels"]) + 2
        print("confusion matrix (rows actual, columns predicted):")
        print(" " * width + "".join(f"{n:>{width}}" for n in matrix["labels"]))
        for name, row in zip(matrix["labels"], matrix["matrix"]):
            print(f"{name:>{width}}" + "".join(f"{v:>{width}}" for v in row))
    if result.in_training_split:
        print(f"note: {result.in_training_split} of these images were in the model's training split, so the "
              "figures are optimistic; use --split test for an honest measure", file=sys.stderr)
    if args.out:
        print(f"wrote {args.out}/metrics.json and confusion_matrix.png", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .data import list_image_files
    from .predict import Failure, load
    from .progress import progress_bar

    predictor = load(args.model, batch_size=args.batch_size)
    files = list_image_files(args.paths)
    if not files:
        raise CrackscanError("no image files found in " + " ".join(args.paths))
    rows, failures = [], 0
    bar = progress_bar(total=len(files), desc="predicting", unit="img", enabled=_show_progress() and len(files) > 64)
    writer = _PredictionWriter(args.format, predictor.class_names)
    for result in predictor.iter_predict(files):
        bar.update(1)
        if isinstance(result, Failure):
            failures += 1
            bar.clear()
            _report_skipped(result.source, result.reason)
            continue
        rows.append(result)
        writer.write(result)
    bar.close()
    writer.close()
    if failures:
        print(f"crackscan: {failures} of {len(files)} files could not be read", file=sys.stderr)
        return EXIT_SOME_SKIPPED
    return 0


class _PredictionWriter:
    """Streams rows as they come, so a long folder shows results at once (JSON at the end)."""

    def __init__(self, fmt: str, class_names: Sequence[str]):
        self.fmt = fmt
        self.json_rows: list[dict] = []
        if fmt == "csv":
            self.csv = csv.writer(sys.stdout)
            self.csv.writerow(["path", "label", "crack_probability"])
        elif fmt == "table":
            print(f"{'label':<{max(len(n) for n in class_names)}}  crack_p  path")
        self.label_width = max(len(n) for n in class_names)

    def write(self, prediction: Any) -> None:
        if self.fmt == "csv":
            self.csv.writerow([prediction.source, prediction.label, f"{prediction.crack_probability:.6f}"])
        elif self.fmt == "table":
            print(f"{prediction.label:<{self.label_width}}  {prediction.crack_probability:7.4f}  {prediction.source}")
        else:
            self.json_rows.append({"path": prediction.source, "label": prediction.label,
                                   "crack_probability": prediction.crack_probability})

    def close(self) -> None:
        if self.fmt == "json":
            print(json.dumps(self.json_rows, indent=2))


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    result = export(args.model, args.format, int8=args.int8, calibration=args.calibration, out=args.out,
                    check=args.check, calibration_images=args.calibration_images, check_images=args.check_images)
    c = result.check
    kind = f"{args.format} {'int8' if args.int8 else 'float'}"
    print(f"checked on {c['images']} real images against the Keras model: max crack-probability difference "
          f"{c['max_crack_probability_difference']:.2e}, label agreement {c['label_agreement']:.2%}, accuracy "
          f"{c['keras_accuracy']:.2%} (Keras) -> {c['export_accuracy']:.2%} ({c['accuracy_change_points']:+.2f} points)")
    print(f"wrote {kind} model {result.path} ({result.size_bytes / 1e6:.1f} MB, metadata inside) in {result.seconds:.0f} s")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from .scan import scan_many

    outcome = scan_many(args.model, args.photos, args.out, args.tile, args.stride, args.threshold,
                        args.max_pixels, force=args.force, progress=_show_progress(), on_failure=_report_skipped)
    for s in outcome.scanned:
        print(f"{s['photo']}: {s['cracked_tiles']} of {s['tiles']} tiles cracked "
              f"({100 * s['cracked_area_fraction']:.1f}% of area, highest p {s['max_crack_probability']:.2f}) "
              f"in {s['seconds']:.2f} s -> {s['outputs']}")
    if outcome.resumed:
        print(f"{len(outcome.resumed)} photos already scanned in {args.out} (kept; --force to scan again)")
    if outcome.summary_csv:
        print(f"summary of all photos, most cracked first: {outcome.summary_csv}")
    if outcome.failed:
        print(f"crackscan: {len(outcome.failed)} photos could not be read", file=sys.stderr)
        return EXIT_SOME_SKIPPED
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    if not 0 < args.max_upload_mb <= 10_000:
        raise CrackscanError("--max-upload-mb must be between 0 and 10000")
    def announce(url: str) -> None:
        print(f"crackscan serving {args.model} on {url} (API docs at {url}docs); Ctrl-C stops", file=sys.stderr)

    serve(args.model, args.host, args.port, announce, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
          max_pixels=args.max_pixels)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from . import synth
    from .train import train

    started = time.perf_counter()
    if args.per_class < 20:
        raise CrackscanError("--per-class must be at least 20 for a meaningful split")
    data = args.out / "data"
    if data.exists() and not args.force:
        raise CrackscanError(f"{args.out} already holds a demo: pass --force to make it again")
    print(f"making {2 * args.per_class} synthetic concrete patches in {data} ...", file=sys.stderr)
    synth.make_dataset(data, per_class=args.per_class, seed=0)
    run = train(data, args.out / "run", TrainConfig(weights=args.weights), progress=_show_progress(), force=True)
    _print_run(run)
    print(f"\ndemo done in {time.perf_counter() - started:.0f} s. Look at:")
    for name in ("training_curves.png", "prediction_grid.png", "confusion_matrix.png", "metrics.json"):
        print(f"  {run.path / name}")
    print(f"next: crackscan predict {run.path} {data}/Positive/00000.jpg")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export, "scan": cmd_scan, "serve": cmd_serve,
            "demo": cmd_demo}

if __name__ == "__main__":
    raise SystemExit(main())
