"""Training recipes for crackscan-seg, side by side: each is trained as `make models` trains the
shipped one (the frozen ImageNet backbone, its maps cached once, only the decoder learns), exported
to int8 LiteRT with the same check, and graded by benchmarks/segmentation.py on the held-out
fifth of every shared mask set, the sets it did not train on included, with the false alarms on
the held-out look-alike photos.

    python benchmarks/segmenter_training.py --label LABEL [--sets S ...] [--epochs N]
        [--windows-per-photo N] [--alpha A] [--skeleton-recall W] [--drawn-negatives N]
        [--balance-sets] [--full-resolution] [--grade-only]

LABEL names the run (runs/experiments/LABEL) and results/segmenter-training-LABEL.json, with the
recipe and its training time beside the graded figures (results/segmentation-LABEL.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, write_results

sys.path.insert(0, str(ROOT / "scripts"))
from build_models import NEGATIVES_PER_SOURCE, SEGMENT_NEGATIVES, SEGMENT_SETS  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "real-photos"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True)
    parser.add_argument("--sets", nargs="+", default=list(SEGMENT_SETS), help="the mask sets trained on")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--alpha", type=float, help="the backbone's width (MobileNetV2 alpha; default: the product's 1.0)")
    parser.add_argument("--windows-per-photo", type=int)
    parser.add_argument("--skeleton-recall", type=float, help="the skeleton recall loss's weight (default: the product's)")
    parser.add_argument("--drawn-negatives", type=int, default=0,
                        help="this many clear Özgenel patches with joints, tie holes or bug holes drawn on them "
                             "(synth.drawn_lookalike), as negatives beside the shared ones")
    parser.add_argument("--balance-sets", action="store_true", help="every set (and the negatives) weighs the same")
    parser.add_argument("--full-resolution", action="store_true",
                        help="the decoder's last stage at full resolution on the input pixels "
                             "(model.segmenter.FULL_RESOLUTION_STAGE) instead of stride-2 logits upsampled")
    parser.add_argument("--grade-only", action="store_true", help="grade the run already in runs/experiments/LABEL")
    args = parser.parse_args()

    import os
    import tempfile

    from crackscan import TrainConfig, export
    from crackscan.testing import use_offline_keras_home

    if not os.environ.get("KERAS_HOME"):  # ImageNet weights from ../shared where Keras cannot download them
        use_offline_keras_home(Path(tempfile.mkdtemp(prefix="crackscan-keras-home-")))
    from crackscan.progress import Progress
    from crackscan.settings import SEGMENT_TRAIN
    from crackscan.segment.train import train_segmenter

    from crackscan.segment import train as segment_train

    from crackscan.model import segmenter

    segment_train.BALANCE_SETS = args.balance_sets or segment_train.BALANCE_SETS
    segmenter.FULL_RESOLUTION_STAGE = args.full_resolution or segmenter.FULL_RESOLUTION_STAGE
    if args.skeleton_recall is not None:
        segment_train.SKELETON_RECALL_WEIGHT = args.skeleton_recall
    settings = dict(SEGMENT_TRAIN)
    if args.epochs:
        settings["epochs"] = args.epochs
    if args.windows_per_photo:
        settings["windows_per_photo"] = args.windows_per_photo
    if args.alpha:
        settings["alpha"] = args.alpha
    config = TrainConfig(**{k: v for k, v in settings.items() if k in TrainConfig.__dataclass_fields__})
    folder = ROOT / "runs" / "experiments" / args.label
    started = time.perf_counter()
    negatives = [str(PHOTOS.parent / source) for source in SEGMENT_NEGATIVES]
    if args.drawn_negatives:
        negatives.append(str(_drawn_negatives(ROOT / "runs" / "experiments" / f"{args.label}-drawn", args.drawn_negatives)))
    if not args.grade_only:
        metrics = train_segmenter([PHOTOS / name for name in args.sets], folder, config, force=True,
                                  windows_per_photo=settings["windows_per_photo"], empty_share=settings["empty_share"],
                                  negatives=negatives,
                                  negatives_per_source=NEGATIVES_PER_SOURCE,
                                  progress=Progress(on_step=lambda line: print(f"   {line}", flush=True))).metrics
    else:
        metrics = json.loads((folder / "metrics.json").read_text())
    trained_s = time.perf_counter() - started
    exported = export(folder, "litert", int8=True, force=True, calibration_images=512)
    print(f"int8 check: {exported.check}", flush=True)
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "segmentation.py"), "--model", str(exported.path),
                    "--label", args.label, "--skip-classifiers", "--skip-speed"], check=True)
    graded = json.loads((ROOT / "results" / f"segmentation-{args.label}.json").read_text())
    write_results(f"segmenter-training-{args.label}", {
        "sets_trained_on": args.sets, "settings": settings,
        "skeleton_recall_weight": segment_train.SKELETON_RECALL_WEIGHT, "drawn_negatives": args.drawn_negatives,
        "balanced_sets": segment_train.BALANCE_SETS, "full_resolution_stage": segmenter.FULL_RESOLUTION_STAGE,
        "training_s": round(trained_s, 1),
        "timing": metrics.get("timing"), "windows": metrics.get("windows"), "photos": metrics.get("photos"),
        "int8_check_passed": bool(exported.check.get("passed")), "graded": f"results/segmentation-{args.label}.json",
        "pixel_f1_2px": {name: s["pixel_f1_2px"] for name, s in graded["sets"].items()},
        "false_alarm_tiles": graded["false_alarms"]["crackscan-seg"]["tiles_flagged"],
    })


def _drawn_negatives(folder: Path, count: int) -> Path:
    """``count`` clear Özgenel patches (the last by name, not the first ones the shared negatives
    take) with a look-alike drawn on each, written once into ``folder``."""
    import numpy as np
    from PIL import Image

    from crackscan.synth import drawn_lookalike

    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((PHOTOS.parent / "ozgenel-12k" / "Negative").glob("*.jpg"))[-count:]
    rng = np.random.default_rng(7)
    for index, source in enumerate(sources):
        target = folder / f"drawn-{index:04d}.png"
        if not target.is_file():
            Image.fromarray(drawn_lookalike(rng, np.asarray(Image.open(source).convert("RGB")))).save(target)
    return folder


if __name__ == "__main__":
    main()
