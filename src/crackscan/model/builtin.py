"""The crack models that ship inside the package, so a new user can scan on day one.

They are int8 LiteRT files with their metadata inside (classes, input size, patch size),
made by ``make models`` (scripts/build_models.py) with crackscan's own train and export,
and described in ``models/models.json``: what they were trained on, their accuracy on the
held-out test images and the speed measured when they were built. A built-in name works
wherever a model path does; a file or run folder of the same name in the working
directory wins, as a path the user typed should.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from ..datasets import find_dataset, split_by_content
from ..errors import CrackscanError
from ..settings import parse_split
from .tasks import DEFAULT_TASK, task_of

MODELS_DIR = Path(__file__).parent.parent / "models"  # crackscan/models/, beside this subpackage
REGISTRY_FILE = "models.json"


@dataclasses.dataclass(frozen=True)
class BuiltinModel:
    name: str
    file: str
    summary: str
    trained_on: str
    backbone: str
    input_size: int
    size_bytes: int
    sha256: str
    # A classifier's figures on its held-out test images; a segmenter has pixel_test instead.
    test_accuracy: float | None = None
    test_images: int | None = None
    test_errors: int | None = None
    images_per_second: float = 0.0  # images of its input size (a segmenter: its windows)
    measured_on: str = ""
    built: str = ""
    command: str = ""
    task: str = DEFAULT_TASK
    pixel_test: dict = dataclasses.field(default_factory=dict)
    settings: dict = dataclasses.field(default_factory=dict)
    test_split_sha256: str = ""
    # What adapt needs to start from it: file (head and feature sample), imagenet_weights_sha256.
    adaptation: dict = dataclasses.field(default_factory=dict)

    def held_out_figure(self) -> str:
        """Its held-out figure in words: test accuracy, or a segmenter's pixel F1."""
        if task_of(self.task).per_pixel:
            return (f"pixel F1 {self.pixel_test.get('photo_weighted_f1_2px', 0):.3f} within 2 px on "
                    f"{sum(v['photos'] for v in self.pixel_test.get('by_set', {}).values())} held-out photos")
        return f"{100 * (self.test_accuracy or 0):.2f}% ({self.test_errors} of {self.test_images} wrong)"

    @property
    def path(self) -> Path:
        return MODELS_DIR / self.file

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=1)
def builtin_models() -> dict[str, BuiltinModel]:
    """The built-in models by name, as models.json lists them (none if it is missing)."""
    try:
        listed = json.loads((MODELS_DIR / REGISTRY_FILE).read_text())["models"]
        fields = {field.name for field in dataclasses.fields(BuiltinModel)}
        return {entry["name"]: BuiltinModel(**{k: v for k, v in entry.items() if k in fields}) for entry in listed}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError) as error:
        raise CrackscanError(f"the built-in model list {MODELS_DIR / REGISTRY_FILE} is damaged ({error}): "
                             "reinstall crackscan") from None


def builtin_path(name: str) -> Path | None:
    """The file of the built-in model ``name``, or None if no built-in has that name."""
    model = builtin_models().get(name)
    if model is None:
        return None
    if not model.path.is_file():
        raise CrackscanError(f"built-in model {name} is missing its file {model.path}: reinstall crackscan")
    return model.path


def known_names() -> str:
    names = sorted(builtin_models())
    return f"built-in models: {', '.join(names)}" if names else "this install has no built-in models"


def split_digest(test_hashes: Iterable[str]) -> str:
    """One SHA-256 over the sorted content hashes of a split's images."""
    return hashlib.sha256("\n".join(sorted(test_hashes)).encode()).hexdigest()


def held_out_test_files(model: BuiltinModel, data: str | os.PathLike) -> list[tuple[Path, str]]:
    """The images of ``data`` (the model's training data, or a copy of it) that were held
    out as its test split, with their class names. The split is recomputed from the files'
    contents with the recorded seed and proportions, and must match the one recorded when
    the model was built, so its accuracy can be measured again honestly."""
    dataset = find_dataset(data, model.settings.get("positive_class"))
    hashes = [hashlib.sha256(Path(sample.path).read_bytes()).hexdigest() for sample in dataset.samples]
    labels = [sample.label for sample in dataset.samples]
    splits = split_by_content(labels, hashes, parse_split(model.settings.get("split", "")), model.settings.get("seed", 0))
    test = [i for i, split in enumerate(splits) if split == "test"]
    if split_digest(hashes[i] for i in test) != model.test_split_sha256:
        raise CrackscanError(f"{data} is not the data {model.name} was built from: its test split cannot be recomputed")
    return [(Path(dataset.samples[i].path), dataset.class_names[labels[i]]) for i in test]
