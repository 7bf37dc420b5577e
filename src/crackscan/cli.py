"""The crackscan command: argument parsing and printing over the package's functions."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import runs, settings, synth
from .errors import WRITE_ERRNOS, CrackscanError, write_error
from .evaluate import evaluate, evaluate_photos
from .export import export
from .images import list_image_files
from .measure.options import Measuring
from .metrics import format_metrics, format_tile_metrics
from .model.builtin import MODELS_DIR, builtin_models
from .model.backbone import build_backbone
from .model.registry import resolve
from .model.formats import EXPORT_FORMATS, FORMAT_TABLE
from .model.tasks import DEFAULT_TASK, TASKS, task_of
from .photo.options import ScanOptions
from .progress import Progress
from .report.build import build_report
from .runtime.predictor import Failure, describe_model, images_per_second, load
from .runtime.runners import cpu_name
from .serve.app import serve
from .serve.guard import hosts_answered
from .settings import TrainConfig
from .site.adapt import adapt
from .site.labels import LABELS_FILE, labels_from_masks
from .survey.driver import scan_many
from .survey.layout import REPORT_FOLDER, SurveyFolder
from .train import train
from .version import __version__

EXIT_USER_ERROR = 2
EXIT_SOME_SKIPPED = 1


def _config_from(args: argparse.Namespace) -> TrainConfig:
    if args.config:
        config = TrainConfig.load(args.config)
    elif task_of(getattr(args, "task", DEFAULT_TASK)).per_pixel:
        config = TrainConfig(**{k: v for k, v in settings.SEGMENT_TRAIN.items() if k in TrainConfig.__dataclass_fields__})
    else:
        config = TrainConfig()
    return config.replace(**settings.given(args, settings.TRAIN_SETTINGS))


EXAMPLES = {
    "train": ["crackscan train concrete/ --out runs/first",
              "crackscan train concrete/ --out runs/small --image-size 96 --alpha 0.35 --split 80:10:10",
              "crackscan train concrete/ --out runs/origin --epochs 10 --learning-rate 1e-4 --batch-size 16 --patience 0",
              "crackscan train deepcrack/ roads/ --task segment --out runs/seg   # each: images/ + masks/"],
    "evaluate": ["crackscan evaluate runs/first concrete/ --split test",
                 "crackscan evaluate runs/first other-site/ --out runs/first   # -> runs/first/evaluations/other-site-all/",
                 "crackscan evaluate crackscan-base site/images --masks site/masks --out eval-site/"],
    "predict": ["crackscan predict crackscan-nano photos/ 'more/*.jpg'",
                "crackscan predict runs/first photos/",
                "crackscan predict runs/first/model.int8.tflite patch.png --format json"],
    "export": ["crackscan export runs/first --format litert --int8   # -> runs/first/model.int8.tflite",
               "crackscan export runs/first --format onnx --out model.onnx"],
    "scan": ["crackscan scan crackscan-base site-photos/ --out scans/",
             "crackscan scan runs/first site-photos/ --out scans/",
             "crackscan scan runs/first/model.int8.tflite wall.jpg --out scans/ --threshold 0.7 --stride 113",
             "crackscan scan crackscan-nano survey/ --out scans/ --engine ray              # Ray Data, this machine",
             "crackscan scan crackscan-nano s3://bucket/survey/ --out /shared/scans --engine ray --address head:6379"],
    "serve": ["crackscan serve crackscan-base   # then open http://127.0.0.1:8000/",
              "crackscan serve runs/first --labels site-labels   # label tiles on the page, then Adapt",
              "crackscan serve runs/first --port 8080 --max-upload-mb 50",
              "crackscan serve runs/first --host 0.0.0.0 --allow-host crack.example.org   # needs its printed token"],
    "report": ["crackscan scan crackscan-seg site/ --out scans/ --mm-per-pixel 0.2 --limit-mm aci-humid",
               "crackscan report scans/ --out scans/report --pdf   # open scans/report/index.html"],
    "info": ["crackscan info runs/first", "crackscan info model.int8.tflite --format json",
             "crackscan info crackscan-nano"],
    "models": ["crackscan models", "crackscan models --benchmark   # measure images/s on this machine now",
               "crackscan scan crackscan-base site-photos/ --out scans/"],
    "label": ["crackscan label site/images --masks site/masks --out site-labels --per-class 25",
              "crackscan label photos/ --masks masks/ --out labels --per-class 10 --tile 128 --seed 3"],
    "adapt": ["crackscan adapt runs/first site-labels --out runs/first-site",
              "crackscan adapt crackscan-base site-labels --out runs/base-site   # from a built-in model",
              "crackscan adapt crackscan-seg site/photos --masks site/masks --out runs/seg-site   # the segmenter",
              "crackscan scan runs/first-site site/more-photos --out scans/"],
    "demo": ["crackscan demo", "crackscan demo --out /tmp/demo --weights none   # offline, random backbone"],
}


def _examples(command: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[command])


MODEL_HELP = "a built-in model (crackscan models lists them), a run folder or a model file (.keras, .tflite, .onnx)"


def build_parser() -> argparse.ArgumentParser:
    """Every command's arguments. One block per command, in the order ``--help`` lists them, so
    it reads as the command line's reference; the settings' flags come from settings."""
    parser = argparse.ArgumentParser(prog="crackscan", description="Find cracks in photos of concrete.")
    parser.add_argument("--version", action="version", version=f"crackscan {__version__}", help="print the version")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a crack classifier (class folders) or segmenter (mask sets)",
                                epilog=_examples("train"), formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("data", type=Path, nargs="+", help="classify: one folder with one subfolder per class, e.g. "
                       "Positive/ and Negative/; segment: one or more folders of images/ and masks/ (same names)")
    train.add_argument("--task", default=DEFAULT_TASK, choices=TASKS,
                       help="classify tiles (default) or segment crack pixels (defaults then: "
                            "--image-size 256 windows at the photo's scale, --epochs 10, --learning-rate 2e-3, "
                            "--batch-size 8, --split 70:10:20 by photo)")
    train.add_argument("--negatives", nargs="+", default=[], help="segment: photos (files, folders, patterns) known "
                       "to hold no crack, trained on as all-clear masks (joints, cobbles, block walls...)")
    train.add_argument("--out", type=Path, help="run folder to write (default runs/YYYYmmdd-HHMMSS)")
    train.add_argument("--force", action="store_true", help="replace a finished run already in --out")
    group = train.add_argument_group("settings (defaults: the project's origin)")
    group.add_argument("--config", type=Path, help="a config.json (e.g. from an earlier run) to start from")
    settings.add_arguments(group, settings.TRAIN_SETTINGS)

    evaluate = commands.add_parser("evaluate", help="measure a model on a labelled folder", epilog=_examples("evaluate"),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("model", type=Path, help=MODEL_HELP)
    evaluate.add_argument("data", type=Path, help="folder with one subfolder per class; with --masks, a folder of photos")
    evaluate.add_argument("--masks", type=Path, help="folder of crack masks named as the photos (any non-black "
                          "pixel is crack): grade the tiles of whole photos")
    settings.add_arguments(evaluate, (settings.IGNORE_VALUE,))
    settings.add_arguments(evaluate, settings.SCAN_SETTINGS)
    evaluate.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                          help="with a run folder: only the images of this part of its split (matched by content)")
    evaluate.add_argument("--out", type=Path, help="write metrics.json, confusion_matrix.png and skipped.csv here")
    evaluate.add_argument("--format", default="text", choices=("text", "json"), help="output format (default text)")
    evaluate.add_argument("--force", action="store_true", help="replace earlier results in --out")

    predict = commands.add_parser("predict", help="classify images: crack or not, with the crack probability", epilog=_examples("predict"),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    predict.add_argument("model", type=Path, help=MODEL_HELP)
    predict.add_argument("paths", nargs="+", help="image files, folders or glob patterns")
    predict.add_argument("--format", default="table", choices=("table", "csv", "json"),
                         help="output format (default table)")
    settings.add_arguments(predict, settings.PREDICT_SETTINGS)

    export = commands.add_parser("export", help="export a model to LiteRT or ONNX, float or int8, checked against Keras", epilog=_examples("export"),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("model", type=Path, help="run folder or .keras model")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                        help=" or ".join(f"{row.title} ({row.suffix})" for row in FORMAT_TABLE.values() if row.exportable))
    export.add_argument("--int8", action="store_true", help="static full-integer quantization, calibrated on real images")
    export.add_argument("--calibration", type=Path, help="images for int8 calibration (default: the run's training split)")
    export.add_argument("--check", type=Path, help="labelled images to check the export on (default: the run's val/test split)")
    settings.add_arguments(export, settings.EXPORT_SETTINGS)
    export.add_argument("--out", type=Path, help="output file (default: beside the model, e.g. model.int8.tflite)")
    export.add_argument("--force", action="store_true", help="replace an existing model file")

    scan = commands.add_parser("scan", help="scan whole photos: crack map overlay, tile grid and summary per photo", epilog=_examples("scan"),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    scan.add_argument("model", type=Path, help=MODEL_HELP)
    scan.add_argument("photos", nargs="+", help="photo files, folders or glob patterns")
    scan.add_argument("--out", type=Path, required=True, help="folder for the results (one subfolder per photo)")
    settings.add_arguments(scan, (*settings.SCAN_SETTINGS, settings.MAX_PIXELS, *settings.SURVEY_SETTINGS))
    scan.add_argument("--force", action="store_true", help="scan again photos whose results exist")
    scan.add_argument("--report", action="store_true", help="then write the inspection report into OUT/report "
                      "(as crackscan report OUT does)")
    measuring = scan.add_argument_group("crack measurement (a segmenter, e.g. crackscan-seg): without a scale, "
                                        "pixels only")
    settings.add_arguments(measuring, settings.MEASURE_SETTINGS)

    serve = commands.add_parser("serve", help="HTTP API and web page for crack checks", epilog=_examples("serve"),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("model", type=Path, help=MODEL_HELP)
    serve.add_argument("--labels", type=Path, help="turn on the page's labelling loop: flipped tiles are saved in "
                       "this folder, and Adapt refits the run on them (serves the new run at once)")
    settings.add_arguments(serve, settings.SERVE_SETTINGS)

    report = commands.add_parser("report", help="the inspection report of a finished survey: HTML, PDF, GeoJSON",
                                 epilog=_examples("report"), formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("survey", type=Path, help="a survey folder (crackscan scan --out)")
    report.add_argument("--out", type=Path, help="folder for the report (default SURVEY/report)")
    report.add_argument("--pdf", action="store_true", help="also report.pdf: the summary, then a page per photo with "
                        "findings (needs crackscan[report])")
    report.add_argument("--force", action="store_true", help="replace a report already in --out")

    info = commands.add_parser("info", help="what a model or run carries: format, classes, sizes, metrics", epilog=_examples("info"),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    info.add_argument("model", type=Path, help=MODEL_HELP)
    info.add_argument("--format", default="text", choices=("text", "json"), help="output format (default text)")

    label = commands.add_parser("label", help="label tiles of your photos from crack masks, as a dataset for adapt",
                                epilog=_examples("label"), formatter_class=argparse.RawDescriptionHelpFormatter)
    label.add_argument("photos", nargs="+", help="photo files, folders or glob patterns")
    label.add_argument("--masks", type=Path, required=True,
                       help="folder of crack masks at the photos' paths (any non-black pixel is crack)")
    label.add_argument("--out", type=Path, required=True, help="labels folder: Positive/, Negative/ and labels.csv")
    settings.add_arguments(label, settings.LABEL_SETTINGS)
    label.add_argument("--force", action="store_true", help="add to a labels folder that already holds labels")

    adapt = commands.add_parser("adapt", help="teach a model your site: a new run from site labels or masked photos",
                                epilog=_examples("adapt"), formatter_class=argparse.RawDescriptionHelpFormatter)
    adapt.add_argument("run", type=Path, help="the run to start from (its training features are reused), or a built-in "
                                              "model (crackscan-base, crackscan-nano; crackscan-seg with --masks)")
    adapt.add_argument("labels", type=Path, help="labels folder (crackscan label, the web page) or any class-folder "
                                                 "dataset; for a segmenter, the site's photos (a folder or files)")
    adapt.add_argument("--masks", type=Path, help="a segmenter's site masks: a folder of the photos' crack masks (0 "
                                                  "background, 255 crack, same names), a Label Studio JSON or CVAT "
                                                  "XML export, or a colour mask export with its labelmap.txt")
    adapt.add_argument("--out", type=Path, required=True, help="the new run folder")
    adapt.add_argument("--force", action="store_true", help="replace a run already in --out")
    settings.add_arguments(adapt, (*settings.ADAPT_SETTINGS, *settings.SEGMENT_ADAPT_SETTINGS))

    models = commands.add_parser("models", help="the built-in models: what they were trained on, accuracy, speed",
                                 epilog=_examples("models"), formatter_class=argparse.RawDescriptionHelpFormatter)
    models.add_argument("--benchmark", action="store_true",
                        help="measure each model's images/s on this machine now (a few seconds each)")
    models.add_argument("--format", default="text", choices=("text", "json"), help="output format (default text)")

    demo = commands.add_parser("demo", help="make a synthetic dataset, train on it, evaluate, plot", epilog=_examples("demo"),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--out", type=Path, default=Path("crackscan-demo"), help="folder for the data and the run")
    demo.add_argument("--per-class", type=int, default=400, help="synthetic images per class (default 400)")
    demo.add_argument("--force", action="store_true", help="overwrite an earlier demo in --out")
    demo.add_argument("--weights", default="imagenet", help="backbone weights (default imagenet)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # File names need not be valid UTF-8 on Linux; print them escaped rather than crash.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CrackscanError as error:
        print(f"crackscan: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:
        # A write outside crackscan's atomic writes (a library saving a file) that met a full
        # disk or a read-only folder: the disk's doing, said in one line.
        if error.errno not in WRITE_ERRNOS:
            raise
        print(f"crackscan: error: {write_error(error.filename or 'a file', error)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("crackscan: interrupted", file=sys.stderr)
        return 130


def _report_skipped(path: str, reason: str) -> None:
    """One line per unreadable input; the command goes on with the rest."""
    print(f"crackscan: skipped {path}: {reason}", file=sys.stderr)


def _show_progress() -> bool:
    return sys.stderr.isatty() or bool(os.environ.get("CRACKSCAN_PROGRESS"))


def _progress(timed_steps: bool = False, log_lines: bool = False) -> Progress:
    """The CLI's progress: bars on a terminal (or with CRACKSCAN_PROGRESS set), else, for the
    long commands (``log_lines``), a line on stderr every 15 s; steps on stderr with the
    seconds since the command started, result lines on stdout, and a line on stderr for
    each input skipped."""
    started = time.perf_counter()

    def step(line: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f} s] {line} ...", file=sys.stderr, flush=True)

    def log(line: str) -> None:
        print(f"crackscan: {line}", file=sys.stderr, flush=True)

    return Progress(bars=_show_progress(), on_step=step if timed_steps else None, on_line=print,
                    on_skipped=_report_skipped, on_log=log if log_lines else None)


def cmd_train(args: argparse.Namespace) -> int:
    config = _config_from(args)
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    task = task_of(args.task)
    if task.per_pixel:  # photos with masks, from any number of sets
        run = task.implementation("trainer")(args.data, out, config, progress=_progress(log_lines=True),
                                             force=args.force, negatives=args.negatives)
        _print_segment_run(run)
        return 0
    if args.negatives:
        raise CrackscanError("--negatives is for --task segment (a classifier takes clear tiles as a class folder)")
    if len(args.data) != 1:
        raise CrackscanError(f"a classifier trains on one folder of class folders, got {len(args.data)}: "
                             "pass one (or --task segment for mask sets)")
    run = task.implementation("trainer")(args.data[0], out, config, progress=_progress(log_lines=True),
                                         force=args.force)
    _print_run(run)
    return 0


def _print_segment_run(run: Any) -> None:
    m = run.metrics
    val = m["val"]
    tolerant, exact = val["tolerance_2px"], val["exact"]
    print(f"trained a segmenter on {m['windows']['train']} windows of {m['windows']['size_px']} px from "
          f"{m['photos']['train']} photos for {m['epochs_run']} epochs, kept epoch {m['best_epoch']} (lowest "
          f"validation loss); {len(m['skipped'])} files skipped")
    print(f"validation pixel F1 at threshold 0.5: {tolerant['f1']:.3f} within 2 px (precision {tolerant['precision']:.3f}, "
          f"recall {tolerant['recall']:.3f}), {exact['f1']:.3f} exact; ODS {val['ods']['f1']:.3f} at "
          f"{val['ods']['threshold']:.2f}, OIS {val['ois_f1']:.3f}")
    print(f"{m['photos']['test']} test photos held out (crackscan evaluate {run.path} PHOTOS --masks MASKS)")
    print(f"took {m['timing']['total_s']:.1f} s; run folder: {run.path}  (model.keras, metrics.json, plots)")


def _print_run(run: Any) -> None:
    m = run.metrics
    images = m["images"]
    ran = m.get("epochs_run", run.config.epochs)
    why = "validation loss stopped improving" if m.get("stopped_early") else "the --epochs cap"
    print(f"trained on {images['split']['train']} images for {ran} epoch{'s' if ran != 1 else ''} ({why}), kept epoch "
          f"{m['best_epoch']} (lowest validation loss); {images['skipped']} unreadable files skipped (skipped.csv), "
          f"{images['duplicate_copies']} duplicate copies kept together")
    print(format_metrics("validation", m["val"]))
    print(format_metrics("test", m["test"]))
    print(f"took {m['timing']['total_s']:.1f} s, peak memory {m['peak_memory_mb']:.0f} MB")
    print(f"run folder: {run.path}  (model.keras, metrics.json, plots)")
    for note in m.get("notes", []):
        print(f"crackscan: note: {note}", file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.masks is not None:
        return _evaluate_photos(args)
    if any(getattr(args, s.name) is not None for s in (*settings.SCAN_SETTINGS, settings.IGNORE_VALUE)
           if s.name != "threshold"):
        raise CrackscanError("--tile, --stride and --ignore-value grade whole photos: pass --masks too")
    result = evaluate(args.model, args.data, split=args.split, out=args.out, progress=_progress(log_lines=True),
                      force=args.force)
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
    if result.out:
        print(f"wrote {result.out}/metrics.json, confusion_matrix.png and skipped.csv", file=sys.stderr)
    return 0


def _evaluate_photos(args: argparse.Namespace) -> int:
    if args.split != "all":
        raise CrackscanError("--split applies to patch folders, not to photos with --masks")
    options = settings.resolved(args, (*settings.SCAN_SETTINGS, settings.IGNORE_VALUE))
    out = args.out
    if out is not None and SurveyFolder(out).is_survey():  # the survey's own figure, which its report shows first
        out = SurveyFolder(out).evaluation_folder(args.data)
    result = evaluate_photos(_model_for_inference(args.model), args.data, args.masks, **options, out=out,
                             force=args.force, progress=_progress())
    for path, reason in result.skipped:
        _report_skipped(path, reason)
    m = result.metrics
    if args.format == "json":
        print(json.dumps({**m, "per_photo": result.photos}, indent=2))
    else:
        print(f"{'photo':<40} {'tiles':>5} {'crack':>5} {'TP':>4} {'FP':>4} {'FN':>4}  F1     pixel F1 2 px")
        for row in result.photos:
            f1 = "n/a" if row["f1"] is None else f"{row['f1']:.3f}"
            print(f"{Path(row['photo']).name:<40} {row['tiles']:>5} {row['crack_tiles']:>5} {row['true_positives']:>4} "
                  f"{row['false_positives']:>4} {row['false_negatives']:>4}  {f1:<6} {row['pixel_f1_2px']:.3f}")
        print(format_tile_metrics(m))
        px = m["pixel"]
        tolerant, exact = px["tolerance_2px"], px["exact"]
        print(f"pixels ({px['from']}), threshold {m['threshold']:g}: within 2 px F1 {tolerant['f1']:.3f} (precision "
              f"{tolerant['precision']:.3f}, recall {tolerant['recall']:.3f}); exact F1 {exact['f1']:.3f}; ODS "
              f"{px['ods']['f1']:.3f} at {px['ods']['threshold']:.2f}; OIS {px['ois_f1']:.3f}")
        print("worst photos (pixel F1 within 2 px; see their overlays with --out): " + "; ".join(
            f"{Path(w['photo']).name} {w['pixel_f1_2px']:.3f} (precision {w['pixel_precision_2px']:.2f}, recall "
            f"{w['pixel_recall_2px']:.2f})" for w in m["worst_photos"]))
    if result.out:
        print(f"wrote {result.out}/metrics.json, photos.csv and overlays/", file=sys.stderr)
        if out != args.out:
            print(f"the report of the survey in {args.out} now shows this figure as measured on {m['photos']} of its "
                  f"photos (crackscan report {args.out})", file=sys.stderr)
    return EXIT_SOME_SKIPPED if result.skipped else 0


def cmd_predict(args: argparse.Namespace) -> int:
    predictor = load(args.model, **settings.resolved(args, settings.PREDICT_SETTINGS))
    files = list_image_files(args.paths)
    if not files:
        raise CrackscanError("no image files found in " + " ".join(args.paths))
    rows, failures = [], 0
    bar = _progress().bar(total=len(files), desc="predicting", unit="img", enabled=len(files) > 64)
    writer = _PredictionWriter(args.format, predictor.class_names)
    photos = []
    for result in predictor.iter_predict(files):
        bar.update(1)
        if isinstance(result, Failure):
            failures += 1
            bar.clear()
            _report_skipped(result.source, result.reason)
            continue
        rows.append(result)
        writer.write(result)
        if predictor.is_far_larger_than_a_patch(result):
            photos.append(result)
    bar.close()
    writer.close()
    if photos:
        first = photos[0]
        print(f"crackscan: note: {len(photos)} of these images are photos far larger than the "
              f"{predictor.info.patch_size} px patches the model learned from (e.g. {first.source}, "
              f"{first.width}x{first.height}): predict squeezes each into one {predictor.input_size} px view, which "
              f"says little; crackscan scan {args.model} PHOTOS --out DIR maps their cracks tile by tile",
              file=sys.stderr)
    if failures:
        print(f"crackscan: {failures} of {len(files)} file{'s' if len(files) != 1 else ''} could not be read",
              file=sys.stderr)
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
    result = export(args.model, args.format, int8=args.int8, calibration=args.calibration, out=args.out,
                    check=args.check, force=args.force, progress=_progress(timed_steps=True),
                    **settings.resolved(args, settings.EXPORT_SETTINGS))
    kind = f"{args.format} {'int8' if args.int8 else 'float'}"
    for c, what in ((result.check, "real images"), (result.check.get("site"), "labelled tiles of the site")):
        if c is not None:
            print(f"checked on {c['images']} {what} against the Keras model: max crack-probability difference "
                  f"{c['max_crack_probability_difference']:.2e}, label agreement {c['label_agreement']:.2%}, accuracy "
                  f"{c['keras_accuracy']:.2%} (Keras) -> {c['export_accuracy']:.2%} "
                  f"({c['accuracy_change_points']:+.2f} points)")
    print(f"wrote {kind} model {result.path} ({result.size_bytes / 1e6:.1f} MB, metadata inside) in {result.seconds:.0f} s")
    return 0


def _model_for_inference(model: Path, engine: str = "local") -> Any:
    """The model to scan or serve with, loaded: a run folder at its fastest (its fastest checked
    export, else its LiteRT backbone and NumPy head), any other name as given; which file and
    runtime is said on stderr. The Ray engine ships a model file to its workers, so it gets the
    run's fastest file."""
    if engine == "ray":
        return resolve(model, fastest=True).file
    predictor = load(model, fastest=True, progress=_progress(timed_steps=True))
    if predictor.chosen_because:
        print(f"crackscan: using {predictor.chosen_because}", file=sys.stderr)
    return predictor


def cmd_scan(args: argparse.Namespace) -> int:
    engine = settings.resolved(args, settings.SURVEY_SETTINGS)
    if args.out.exists() and not args.out.is_dir():  # said before a model is loaded (or its backbone converted)
        raise CrackscanError(f"--out {args.out} is a file: name a folder for the survey")
    # Every scan and measuring option checked once, before a model is loaded.
    options = ScanOptions.from_settings(settings.resolved(
        args, (*settings.SCAN_SETTINGS, settings.MAX_PIXELS, *settings.MEASURE_SETTINGS)))
    outcome = scan_many(_model_for_inference(args.model, engine["engine"]), args.photos, args.out, **engine,
                        options=options, force=args.force, progress=_progress())
    if outcome.resumed:
        count = len(outcome.resumed)
        print(f"{count} photo{'s' if count != 1 else ''} already scanned in {args.out} with these settings "
              "(kept; --force to scan again)")
    if outcome.summary_csv:
        print(f"summary of all photos, most cracked first: {outcome.summary_csv}")
    if outcome.tiles_dataset:
        print(f"every tile of the survey, as one Parquet dataset: {outcome.tiles_dataset}")
    if args.report and outcome.summary_csv:
        _print_report(build_report(args.out, args.out / REPORT_FOLDER, force=True))
    if outcome.failed:
        count = len(outcome.failed)
        print(f"crackscan: {count} photo{'s' if count != 1 else ''} could not be scanned", file=sys.stderr)
        return EXIT_SOME_SKIPPED
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    _print_report(build_report(args.survey, args.out or args.survey / REPORT_FOLDER, pdf=args.pdf, force=args.force))
    return 0


def _print_report(made: Any) -> None:
    print(f"report of {made.photos} photos in {made.seconds:.1f} s: {made.index}")
    if made.geojson:
        print(f"photo positions for QGIS or ArcGIS: {made.geojson}")
    if made.pdf:
        print(f"PDF: {made.pdf}")


def cmd_serve(args: argparse.Namespace) -> int:
    options = settings.resolved(args, settings.SERVE_SETTINGS)

    def announce(url: str) -> None:
        base = url.split("?", 1)[0]
        print(f"crackscan serving {args.model} on {url} (API docs at {base}docs); Ctrl-C stops", file=sys.stderr)
        if "?token=" in url:
            print(f"crackscan: note: --host {options['host']} lets other machines reach this server: every request "
                  "needs the access token in that address (or Authorization: Bearer TOKEN). Across a network, put "
                  "it behind a TLS proxy (README, Web page)", file=sys.stderr)
        allowed = [name.strip() for name in options["allow_host"].split(",")]
        if "*" in allowed:
            print("crackscan: warning: --allow-host '*' answers a request naming any host: only the token keeps "
                  "other sites' pages out", file=sys.stderr)
        elif options["host"] in ("0.0.0.0", "::"):
            names = sorted(hosts_answered(options["host"], allowed) - {""})
            print(f"crackscan: answers requests that name one of: {', '.join(names)} (add others with --allow-host)",
                  file=sys.stderr)

    serve(_model_for_inference(args.model), announce=announce, labels=args.labels, **options)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    described = describe_model(args.model)
    if args.format == "json":
        print(json.dumps(described, indent=2))
        return 0
    for key, value in described.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for inner, shown in value.items():
                print(f"  {inner}: {shown}")
        else:
            print(f"{key}: {value}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    made = labels_from_masks(args.photos, args.masks, args.out, force=args.force,
                             **settings.resolved(args, settings.LABEL_SETTINGS))
    for path, reason in made.skipped:
        _report_skipped(path, reason)
    added = ", ".join(f"{count} {name} (of {made.available[name]} available)" for name, count in made.added.items())
    print(f"labelled {added} tiles; {args.out} holds {len(made.labels)} labels: {made.labels.folder / LABELS_FILE}")
    return EXIT_SOME_SKIPPED if made.skipped else 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from .model.registry import resolve
    from .model.tasks import task_of
    from .runtime.formats import read_model_info

    if args.masks is not None or task_of(read_model_info(resolve(args.run).file)[0]).per_pixel:
        return cmd_adapt_segmenter(args)
    if any(getattr(args, s.name) is not None for s in settings.SEGMENT_ADAPT_SETTINGS):
        raise CrackscanError("--ignore-value and --steps adapt a segmenter, from masked photos or labelled tiles: "
                             f"{args.run} is a tile classifier")
    result = adapt(args.run, args.labels, args.out, force=args.force, progress=_progress(timed_steps=True),
                   **settings.resolved(args, settings.ADAPT_SETTINGS))
    m = result.metrics
    site, parent = m["site_cross_validated"], m["parent_test"]

    def figures(tile: dict) -> str:
        f1 = "n/a" if tile["f1"] is None else f"{tile['f1']:.3f}"
        return f"accuracy {tile['accuracy']:.3f}, F1 {f1}"

    tiles = ", ".join(f"{count} {name}" for name, count in m["site_tiles"].items())
    print(f"site labels ({tiles}), {site['folds']}-fold cross-validated: before {figures(site['before'])} -> after "
          f"{figures(site['after'])}")
    share = m["site_crack_share"]
    sampled = m["unlabelled_site_tiles"]
    print(f"site's crack share: {'not estimated (no photos named in labels.csv found)' if share is None else f'{100 * share:.0f}%'}"
          + (f", from {sampled['tiles']} unlabelled tiles of {sampled['photos']} photo(s)" if sampled["tiles"] else ""))
    floor = " at least" if parent["bound"] else ""
    print(f"parent's test images ({parent['images']}): accuracy {100 * parent['accuracy_before']:.2f}% ->{floor} "
          f"{100 * parent['accuracy_after']:.2f}% ({parent['change_points']:+.2f} points)")
    if parent["bound"] and parent["change_points"] < 0:
        print(f"crackscan: note: that is a worst case: {parent['lost']} of the parent's images sit where the site head "
              "could move them, and the built-in ships no pixels to check them again, so each is counted wrong",
              file=sys.stderr)
    print(f"adapted in {m['seconds']:.1f} s; new run folder: {result.path} (use it as any run: scan, export, serve)")
    return 0


def cmd_adapt_segmenter(args: argparse.Namespace) -> int:
    from .segment.adapt import adapt_segmenter

    result = adapt_segmenter(args.run, args.labels, args.masks, args.out, force=args.force,
                             progress=_progress(timed_steps=True),
                             **settings.resolved(args, settings.SEGMENT_ADAPT_SETTINGS))
    m = result.metrics
    site = m["site_cross_validated"]
    print(f"site photos ({site['photos']}, {site['folds']} folds, each photo scored by a decoder not taught on it): "
          f"{site['figure']} (precision {site['before']['precision']:.3f} -> {site['after']['precision']:.3f}, recall "
          f"{site['before']['recall']:.3f} -> {site['after']['recall']:.3f})")
    int8 = m["int8"]
    if int8.get("passed"):
        print(f"int8 LiteRT export: pixel F1 {int8['keras_pixel_f1']:.3f} float -> {int8['export_pixel_f1']:.3f} int8 on "
              f"{int8['windows']} site windows")
    else:
        print(f"crackscan: warning: no int8 export, so scans run the float model.keras, several times slower: "
              f"{int8.get('error')}", file=sys.stderr)
    print(f"adapted in {m['seconds']:.1f} s; new run folder: {result.path} (use it as any segmenter: scan, survey, "
          "report, export)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    listed = builtin_models()
    if not listed:
        raise CrackscanError(f"this install has no built-in models (expected in {MODELS_DIR}): reinstall crackscan")
    rows = []
    for model in listed.values():
        row = model.to_dict()
        row["measured_now"] = args.benchmark
        if args.benchmark:
            row["images_per_second"] = images_per_second(load(model.path))
            row["measured_on"] = cpu_name()
        rows.append(row)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    header = ("name", "task", "trained on", "input", "size", "held out", "images/s")
    table = [header] + [
        (r["name"], r["task"], r["trained_on"], f"{r['input_size']} px", f"{r['size_bytes'] / 1e6:.1f} MB",
         model.held_out_figure(), f"{r['images_per_second']:.0f}") for r, model in zip(rows, listed.values())]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    when = "measured now" if args.benchmark else "recorded when the models were built"
    print(f"\nimages/s: the model alone on pixels, batches of 32, {when}, on {rows[0]['measured_on']}"
          f"{'' if args.benchmark else '; --benchmark measures this machine'}")
    print("use a name wherever a model path goes, e.g. crackscan scan crackscan-base photos/ --out scans/")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.per_class < 20:
        raise CrackscanError("--per-class must be at least 20 for a meaningful split")
    data = args.out / "data"
    if data.exists() and not args.force:
        raise CrackscanError(f"{args.out} already holds a demo: pass --force to make it again")
    build_backbone(TrainConfig(weights=args.weights))  # missing weights: say so now, not after making data
    print(f"making {2 * args.per_class} synthetic concrete patches in {data} ...", file=sys.stderr)
    synth.make_dataset(data, per_class=args.per_class, seed=0)
    run = train(data, args.out / "run", TrainConfig(weights=args.weights), progress=_progress(log_lines=True),
                force=True)
    _print_run(run)
    report = _demo_survey(args.out)
    print(f"\ndemo done in {time.perf_counter() - started:.0f} s. Look at:")
    for name in (runs.TRAINING_CURVES_PLOT, runs.PREDICTION_GRID_PLOT, runs.CONFUSION_MATRIX_PLOT, runs.METRICS_FILE):
        print(f"  {run.path / name}")
    if report is not None:
        print(f"  {report.index}  (the inspection report of a few synthetic photos, scanned with crackscan-seg)")
    print(f"next: crackscan predict {run.path} {data}/Positive/00000.jpg")
    return 0


def _demo_survey(out: Path) -> Any:
    """The whole job on a few synthetic photos: crackscan-seg's masks, measured cracks and the
    report (None, said, when this install has no segmenter or no report templates)."""
    if "crackscan-seg" not in builtin_models():
        print("crackscan: note: no built-in segmenter in this install: the demo's survey and report are skipped",
              file=sys.stderr)
        return None
    photos = out / "photos"
    synth.make_mask_set(photos, photos=6, size=512, seed=1)
    print(f"scanning {photos / 'images'} with crackscan-seg ...", file=sys.stderr)
    scan_many("crackscan-seg", [photos / "images"], out / "survey", force=True,
              measuring=Measuring(mm_per_pixel=0.1), progress=_progress())
    try:
        return build_report(out / "survey", out / "survey" / REPORT_FOLDER, force=True)
    except CrackscanError as error:  # the report extra not installed
        print(f"crackscan: note: {error}", file=sys.stderr)
        return None


COMMANDS = {"report": cmd_report, "info": cmd_info, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export, "scan": cmd_scan, "serve": cmd_serve,
            "label": cmd_label, "adapt": cmd_adapt, "models": cmd_models, "demo": cmd_demo}

if __name__ == "__main__":
    raise SystemExit(main())
