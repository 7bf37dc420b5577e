"""What travels with every model file: its task, classes and sizes (model metadata).

Stored inside the file whatever its format (an entry of the .keras archive, a zip appended
to a .tflite, ``metadata_props`` of an .onnx), so nothing can be run with the wrong
preprocessing, label order or output decoding.
"""

from __future__ import annotations

import dataclasses
import json

from ..errors import CrackscanError
from .tasks import DEFAULT_TASK, TASKS

METADATA_NAME = "crackscan.json"
METADATA_FORMAT = "crackscan-model"
# What a model's output means is its task's row (model.tasks.TASK_TABLE): classify, N x classes
# probabilities for N tiles; segment, an N x H x W (x 1 or x classes) crack probability map.


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Everything needed to use a model file correctly; stored inside or beside it."""

    class_names: tuple[str, ...]
    positive_class: str
    input_size: int
    # Side of the square patches the model learned from: the scale at which to tile photos.
    patch_size: int = 227
    backbone: str = "MobileNetV2"
    alpha: float = 1.0
    crackscan_version: str = ""
    # Files made before models carried a task are all classifiers.
    task: str = DEFAULT_TASK

    def __post_init__(self) -> None:
        # Metadata comes from files anyone can edit: a model that cannot be used correctly
        # is refused at load, not after a batch has been misread.
        names = self.class_names
        if len(names) != 2 or len(set(names)) != 2 or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"class_names must be two different names, got {list(names)}")
        if self.positive_class not in names:
            raise ValueError(f"positive_class {self.positive_class!r} is not one of {list(names)}")
        for name in ("input_size", "patch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 16 <= value <= 8192:
                raise ValueError(f"{name} must be a whole number of px from 16 to 8192, got {value!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")

    @property
    def positive_index(self) -> int:
        return self.class_names.index(self.positive_class)

    @property
    def negative_class(self) -> str:
        return self.class_names[1 - self.positive_index]

    def to_json(self) -> str:
        values = dataclasses.asdict(self)
        values["class_names"] = list(self.class_names)
        return json.dumps({"format": METADATA_FORMAT, **values}, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "model") -> "ModelInfo":
        try:
            values = json.loads(text)
            if values.pop("format", None) != METADATA_FORMAT:
                raise ValueError("not crackscan metadata")
            known = {f.name for f in dataclasses.fields(cls)}
            values = {k: v for k, v in values.items() if k in known}
            values["class_names"] = tuple(values["class_names"])
            return cls(**values)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CrackscanError(f"{source}: its crackscan metadata is unreadable ({error})") from None
