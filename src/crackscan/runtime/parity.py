"""The one rule a converted model must meet before crackscan writes or runs it: a float
conversion answers as its source does; an int8 one may change a few labels but must not be
worse on labelled images. Export and the int8 backbone a run gets when it is written both
answer to it."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model.info import ModelInfo

FLOAT_TOLERANCE = 1e-4  # largest allowed difference in crack probability, float exports
# int8 changes probabilities by a few hundredths, so images the model is unsure of can flip
# either way: what matters is that int8 is not worse on labelled images. It may lose at most
# INT8_MAX_ACCURACY_DROP points of accuracy, and disagree with Keras on at most
# INT8_MAX_DISAGREEMENT of the check images; on a small check set, on at most
# INT8_MIN_ALLOWANCE images for each (one image of 119 is 0.84 points).
INT8_MAX_ACCURACY_DROP = 0.5
INT8_MAX_DISAGREEMENT = 0.01
INT8_MIN_ALLOWANCE = 2


def parity_report(
    keras_runner: Any, runner: Any, labelled: tuple[np.ndarray, np.ndarray], info: ModelInfo, int8: bool
) -> dict[str, Any]:
    """How a converted model (``runner``) answers labelled images against the model it was
    converted from (``keras_runner``; any runner of class probabilities), and whether it passes."""
    pixels, labels = labelled
    reference = keras_runner(pixels)
    exported = runner(pixels)
    positive = info.positive_index
    difference = float(np.max(np.abs(reference[:, positive] - exported[:, positive])))
    agreement = float(np.mean(reference.argmax(1) == exported.argmax(1)))
    keras_accuracy = float(np.mean(reference.argmax(1) == labels))
    export_accuracy = float(np.mean(exported.argmax(1) == labels))
    count = len(labels)
    disagreements = int(np.sum(reference.argmax(1) != exported.argmax(1)))
    allowed_drop = max(INT8_MAX_ACCURACY_DROP, 100 * INT8_MIN_ALLOWANCE / count)
    allowed_disagreements = max(INT8_MIN_ALLOWANCE, int(INT8_MAX_DISAGREEMENT * count))
    change = 100 * (export_accuracy - keras_accuracy)
    if int8:
        passed = change >= -allowed_drop - 1e-9 and disagreements <= allowed_disagreements
        criterion = (f"accuracy drop <= {allowed_drop:.2f} points and <= {allowed_disagreements} of {count} labels "
                     "changed")
    else:
        passed, criterion = difference <= FLOAT_TOLERANCE, f"crack probability within {FLOAT_TOLERANCE:g}"
    return {
        "images": int(count),
        "max_crack_probability_difference": difference,
        "label_agreement": agreement,
        "disagreements": disagreements,
        "keras_accuracy": keras_accuracy,
        "export_accuracy": export_accuracy,
        "accuracy_change_points": change,
        "criterion": criterion,
        "passed": bool(passed),
    }


def failure_message(report: dict[str, Any], int8: bool, underfit: bool = False) -> str:
    if int8:
        cause = ("the head looks underfit (its best epoch was the last one, so many images sit near the "
                 "threshold): train with more --epochs, then export again" if underfit else
                 "the calibration images may not be typical of the check images: pass --calibration with "
                 "images like the ones you will scan")
        return (f"int8 export changes {report['disagreements']} of {report['images']} labels and accuracy "
                f"{100 * report['keras_accuracy']:.2f}% -> {100 * report['export_accuracy']:.2f}% "
                f"({report['accuracy_change_points']:+.2f} points; allowed: {report['criterion']}): not written. "
                f"Likely cause: {cause}")
    return (f"float export differs from the Keras model by up to {report['max_crack_probability_difference']:.2e} "
            f"in crack probability (allowed {FLOAT_TOLERANCE:g}) on {report['images']} images: not written")
