"""crackscan: find cracks in photos of concrete.

    import crackscan
    run = crackscan.train("data/concrete", out="runs/first")
    predictor = crackscan.load(run.model_path)   # .keras, .tflite or .onnx
    predictor.predict(["patch.jpg"])
    result = crackscan.scan(predictor, "whole-photo.jpg")  # tile grid, summary, overlay
    crackscan.scan_many("crackscan-nano", ["survey/"], "scans/", engine="ray")  # a survey folder
"""

import os

# TensorFlow's C++ start-up chatter is not for our users; an explicit setting still wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .settings import TrainConfig  # noqa: E402
from .errors import CrackscanError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .export import export  # noqa: E402
from .photo.result import PhotoResult, PhotoSummary  # noqa: E402
from .photo.scan import scan  # noqa: E402
from .runs import Run  # noqa: E402
from .runtime.predictor import Prediction, Predictor, load  # noqa: E402
from .site.adapt import adapt  # noqa: E402
from .survey.driver import scan_many  # noqa: E402
from .train import train  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ["adapt", "CrackscanError", "PhotoResult", "PhotoSummary", "Prediction", "Predictor", "Run", "TrainConfig",
           "evaluate", "export", "load", "scan", "scan_many", "train", "__version__"]
