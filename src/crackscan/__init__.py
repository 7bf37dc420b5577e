"""crackscan: find cracks in photos of concrete.

    import crackscan
    run = crackscan.train("data/concrete", out="runs/first")
    predictor = crackscan.load(run.model_path)   # .keras, .tflite or .onnx
    predictor.predict(["patch.jpg"])
    result = crackscan.scan(predictor, "whole-photo.jpg")  # tile grid, summary, overlay
    crackscan.scan_many("crackscan-nano", ["survey/"], "scans/", engine="ray")  # a survey folder
    result = crackscan.scan("crackscan-seg", "wall.jpg")  # a crack mask and the measured cracks
    cracks = crackscan.measure_cracks(mask, mm_per_pixel=0.2)  # any crack mask, measured
    crackscan.build_report("scans/", "scans/report", pdf=True)
"""

import os

# TensorFlow's C++ start-up chatter is not for our users; an explicit setting still wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .settings import TrainConfig  # noqa: E402
from .errors import CrackscanError  # noqa: E402
from .evaluate import evaluate, evaluate_photos  # noqa: E402
# measure_cracks, not measure: a public name must not hide the subpackage crackscan.measure.
from .measure.cracks import Crack  # noqa: E402
from .measure.cracks import measure as measure_cracks  # noqa: E402
from .measure.options import Measuring  # noqa: E402
from .report.build import build_report  # noqa: E402
from .segment.train import train_segmenter  # noqa: E402
from .export import export  # noqa: E402
from .photo.result import PhotoResult, PhotoSummary  # noqa: E402
from .photo.scan import scan  # noqa: E402
from .runs import Run  # noqa: E402
from .runtime.predictor import Prediction, Predictor, load  # noqa: E402
from .site.adapt import adapt  # noqa: E402
from .survey.driver import scan_many  # noqa: E402
from .train import train  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ["adapt", "Crack", "CrackscanError", "Measuring", "PhotoResult", "PhotoSummary", "Prediction", "Predictor",
           "Run", "TrainConfig", "build_report", "evaluate", "evaluate_photos", "export", "load", "measure_cracks", "scan",
           "scan_many", "train", "train_segmenter", "__version__"]
