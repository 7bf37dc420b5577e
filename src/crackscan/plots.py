"""PNG figures of a run: training curves, prediction grid, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .files import atomic_path

MISTAKE_COLOUR = "#d62728"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: Sequence[dict[str, float]], path: Path, best_epoch: int | None = None) -> Path:
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    for axis, metric, title in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss (cross-entropy)")):
        axis.plot(epochs, [row[metric] for row in history], "o-", label=f"Training {metric}")
        axis.plot(epochs, [row[f"val_{metric}"] for row in history], "o-", label=f"Validation {metric}")
        if best_epoch is not None:
            axis.axvline(best_epoch, color="grey", linestyle=":", label=f"kept: epoch {best_epoch}")
        axis.set_title(f"Training and validation {metric}")
        axis.set_ylabel(title)
        axis.grid(alpha=0.3)
        axis.legend()
    axes[1].set_xlabel("Epoch")
    axes[1].set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return Path(path)


def prediction_grid(
    images: Sequence[np.ndarray],
    actual: Sequence[str],
    predicted: Sequence[str],
    crack_probabilities: Sequence[float],
    path: Path,
    columns: int = 4,
) -> Path:
    """Test images titled as in the project's origin; mistakes framed and titled in red."""
    plt = _pyplot()
    count = len(images)
    rows = max(1, int(np.ceil(count / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.5 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, truth, guess, probability in zip(axes.flat, images, actual, predicted, crack_probabilities):
        wrong = truth != guess
        axis.imshow(image)
        axis.set_title(
            f"Prediction: {guess}, Actual: {truth}\ncrack p={crack_probability_text(probability)}"
            + ("  MISTAKE" if wrong else ""),
            fontsize=9,
            color=MISTAKE_COLOUR if wrong else "black",
        )
        if wrong:
            axis.axis("on")
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_edgecolor(MISTAKE_COLOUR)
                spine.set_linewidth(4)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=80)
    plt.close(figure)
    return Path(path)


def confusion_matrix(confusion: dict[str, Any], path: Path, title: str = "Confusion matrix") -> Path:
    plt = _pyplot()
    labels = confusion["labels"]
    matrix = np.asarray(confusion["matrix"])
    figure, axis = plt.subplots(figsize=(4.8, 4.2))
    axis.imshow(matrix, cmap="Blues")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), value in np.ndenumerate(matrix):
        axis.text(column, row, f"{value}", ha="center", va="center", fontsize=13,
                  color="white" if value > threshold else "black")
    axis.set_xticks(range(len(labels)), labels)
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("Predicted")
    axis.set_ylabel("Actual")
    axis.set_title(title)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return Path(path)


def crack_probability_text(probability: float) -> str:
    """Three decimals, but never rounded onto the threshold: 0.4996 is shown as <0.500 and
    0.5004 as >0.500, so a mistake by a hair does not read as a coin toss at exactly 0.5."""
    shown = f"{probability:.3f}"
    if shown == "0.500" and probability != 0.5:
        return ("<" if probability < 0.5 else ">") + shown
    return shown


def loss_curves(history: Sequence[dict[str, float]], path: Path) -> Path:
    """Training and validation loss by epoch (a segmenter's run has no accuracy)."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(epochs, [row["loss"] for row in history], "o-", label="Training loss")
    axis.plot(epochs, [row["val_loss"] for row in history], "o-", label="Validation loss")
    axis.set_xlabel("Epoch")
    axis.set_ylabel("Cross-entropy + Dice")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return Path(path)


def image_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], path: Path) -> Path:
    """Rows of images side by side under column titles (photo, true mask, predicted mask)."""
    plt = _pyplot()
    figure, axes = plt.subplots(len(rows), len(titles), figsize=(3 * len(titles), 3 * len(rows)), squeeze=False)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            axes[r][c].imshow(image, cmap=None if np.ndim(image) == 3 else "gray", vmin=0, vmax=255)
            axes[r][c].axis("off")
            if r == 0:
                axes[r][c].set_title(titles[c])
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=80)
    plt.close(figure)
    return Path(path)
