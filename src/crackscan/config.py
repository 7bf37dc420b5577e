"""One dataclass of training settings, validated in one place and saved into every run.

The defaults are the project's origin: MobileNetV2 (alpha 1.0) at 160 px, a 70:24:6 split,
Adam at 1e-4, batch 16, 10 epochs, no augmentation.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .errors import CrackscanError

MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
EMBEDDING_BACKENDS = ("auto", "litert", "keras")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    image_size: int = 160
    alpha: float = 1.0
    # "imagenet" (Keras' download and cache), "none" (random init) or a path to a .h5 file.
    weights: str = "imagenet"
    dropout: float = 0.0
    split: tuple[float, float, float] = (0.70, 0.24, 0.06)
    seed: int = 42
    epochs: int = 10
    learning_rate: float = 1e-4
    batch_size: int = 16
    positive_class: str | None = None
    embed_batch_size: int = 32
    # Which runtime runs the frozen backbone over the images once; both give the same
    # features to float precision, LiteRT several times faster on a CPU.
    embedding_backend: str = "auto"

    def __post_init__(self) -> None:
        # Tuples arrive as lists from JSON and as "70:24:6" strings from the CLI.
        object.__setattr__(self, "split", parse_split(self.split))
        check_config(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise CrackscanError(f"unknown setting(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        return cls().replace(**values)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as error:
            raise CrackscanError(f"cannot read settings from {path}: {error}") from None


def parse_split(value: Any) -> tuple[float, float, float]:
    """Accepts "70:24:6", (0.7, 0.24, 0.06) or (70, 24, 6); returns fractions summing to 1."""
    parts = value.split(":") if isinstance(value, str) else list(value)
    try:
        numbers = [float(part) for part in parts]
    except (TypeError, ValueError):
        raise CrackscanError(f"split must be three numbers like 70:24:6, got {value!r}") from None
    if len(numbers) != 3 or any(n < 0 for n in numbers) or sum(numbers) <= 0:
        raise CrackscanError(f"split must be three non-negative numbers like 70:24:6, got {value!r}")
    if numbers[0] == 0 or numbers[1] == 0:
        raise CrackscanError("split needs a training and a validation part (the first two numbers)")
    total = sum(numbers)
    return tuple(round(n / total, 6) for n in numbers)  # type: ignore[return-value]


def check_config(config: TrainConfig) -> None:
    def fail(message: str) -> None:
        raise CrackscanError(message)

    if not isinstance(config.image_size, int) or not 32 <= config.image_size <= 1024:
        fail(f"image_size must be a whole number of pixels from 32 to 1024, got {config.image_size!r}")
    if config.alpha not in MOBILENET_V2_ALPHAS:
        fail(f"alpha must be one of MobileNetV2's widths {MOBILENET_V2_ALPHAS}, got {config.alpha!r}")
    if not isinstance(config.weights, str) or not config.weights:
        fail("weights must be 'imagenet', 'none' or the path of a weights file")
    if not 0 <= config.dropout < 1:
        fail(f"dropout must be in [0, 1), got {config.dropout!r}")
    if not isinstance(config.epochs, int) or not 1 <= config.epochs <= 1000:
        fail(f"epochs must be a whole number from 1 to 1000, got {config.epochs!r}")
    if not 0 < config.learning_rate <= 1:
        fail(f"learning_rate must be in (0, 1], got {config.learning_rate!r}")
    for name in ("batch_size", "embed_batch_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or not 1 <= value <= 4096:
            fail(f"{name} must be a whole number from 1 to 4096, got {value!r}")
    if not isinstance(config.seed, int) or config.seed < 0:
        fail(f"seed must be a non-negative whole number, got {config.seed!r}")
    if config.embedding_backend not in EMBEDDING_BACKENDS:
        fail(f"embedding_backend must be one of {EMBEDDING_BACKENDS}, got {config.embedding_backend!r}")
