"""Labelled images: class-folder datasets, reading them in batches, and the duplicate-aware split.

A dataset is a folder with one subfolder per class (the Özgenel layout: Positive/ and
Negative/). Every regular file under a class folder is a candidate: the ones that cannot
be read are reported with the reason, never silently dropped.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from . import runs
from .errors import CrackscanError
from .files import atomic_open
from .images import FileFacts, files_under, iter_batches, load_file_for_model

POSITIVE_CLASS_NAMES = ("positive", "crack", "cracks", "cracked")


SPLIT_NAMES = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Sample:
    path: Path
    label: int


def split_samples(run_dir: Path, class_names: Sequence[str], rows: Iterable[dict]) -> list[Sample]:
    """A run's split.csv ``rows`` as Samples at the run's data root (CrackscanError where the
    data root is gone)."""
    root = runs.data_root(run_dir)
    index = {name: number for number, name in enumerate(class_names)}
    return [Sample(root / row["path"], index[row["class"]]) for row in rows]


@dataclasses.dataclass(frozen=True)
class Dataset:
    root: Path
    class_names: tuple[str, ...]
    positive_class: str
    samples: tuple[Sample, ...]

    @property
    def positive_index(self) -> int:
        return self.class_names.index(self.positive_class)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


@dataclasses.dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def find_dataset(root: str | os.PathLike, positive_class: str | None = None) -> Dataset:
    root = Path(root)
    if not root.exists():
        raise CrackscanError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise CrackscanError(f"dataset must be a folder with one subfolder per class: {root}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise CrackscanError(f"no class folders in {root}: expected e.g. {root}/Positive and {root}/Negative")
    if len(class_dirs) == 1:
        raise CrackscanError(
            f"only one class folder ({class_dirs[0].name}) in {root}: a crack classifier needs two, "
            "e.g. Positive/ and Negative/"
        )
    if len(class_dirs) > 2:
        names = ", ".join(p.name for p in class_dirs)
        raise CrackscanError(f"{len(class_dirs)} class folders in {root} ({names}): expected two, cracked and not")
    class_names = tuple(p.name for p in class_dirs)
    positive = resolve_positive_class(class_names, positive_class)
    samples = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(files_under(class_dir))
        if not files:
            raise CrackscanError(f"class folder {class_dir} holds no files")
        samples.extend(Sample(path, label) for path in files)
    return Dataset(root, class_names, positive, tuple(samples))


def find_dataset_for_model(
    root: str | os.PathLike, class_names: Sequence[str], positive_class: str
) -> tuple[Dataset, list[Sample]]:
    """A labelled folder to measure or adapt a model on: its classes must be the model's.
    Returns the dataset and its samples labelled with the model's class indices (the
    folder's order of classes and the model's may differ)."""
    path = Path(root)
    folders = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) if path.is_dir() else []
    if len(folders) >= 2 and set(folders) != set(class_names):
        raise CrackscanError(
            f"the classes in {root} ({', '.join(folders)}) are not the model's ({', '.join(class_names)})"
        )
    dataset = find_dataset(root, positive_class)  # its own errors: missing, empty, one class
    to_model_label = [list(class_names).index(name) for name in dataset.class_names]
    return dataset, [Sample(s.path, to_model_label[s.label]) for s in dataset.samples]


def resolve_positive_class(class_names: Sequence[str], positive_class: str | None) -> str:
    if positive_class is not None:
        if positive_class not in class_names:
            raise CrackscanError(
                f"positive class {positive_class!r} is not one of the class folders {list(class_names)}"
            )
        return positive_class
    matches = [name for name in class_names if name.lower() in POSITIVE_CLASS_NAMES]
    if len(matches) != 1:
        raise CrackscanError(
            f"cannot tell which of {list(class_names)} holds the cracks: name it with --positive-class"
        )
    return matches[0]


@dataclasses.dataclass
class LabelledBatch:
    indices: list[int]  # which of the samples given these rows are
    images: np.ndarray  # model-ready pixels, one row per readable sample
    labels: np.ndarray
    facts: list[FileFacts]  # content hash and size of each
    skipped: list[Skipped]  # the unreadable ones, with the reason


def iter_labelled_batches(
    samples: Sequence[Sample], size: int, batch_size: int, root: Path | None = None, workers: int = 2
) -> Iterator[LabelledBatch]:
    """The one way labelled images are read (training, evaluation, export checks):
    model-ready pixels in batches, in order, read ahead in threads; each file is read once
    for its pixels and its hash; unreadable files come back as ``skipped`` (paths relative
    to ``root`` when given) and the rest go on."""
    batches = iter_batches([s.path for s in samples], lambda path: load_file_for_model(path, size), batch_size,
                           workers=workers)
    for batch in batches:
        yield LabelledBatch(
            indices=batch.indices,
            images=batch.images,
            labels=np.array([samples[i].label for i in batch.indices], dtype=np.int64),
            facts=batch.extras,
            skipped=[Skipped(_shown_path(samples[i].path, root), error.reason) for i, error in batch.failures],
        )


def read_labelled(samples: Sequence[Sample], size: int, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """All readable ``samples`` at once, pixels and labels, for small sets (export checks)."""
    images, labels = [], []
    for batch in iter_labelled_batches(samples, size, batch_size):
        images.append(batch.images)
        labels.append(batch.labels)
    if not images or not sum(len(part) for part in labels):
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64)
    return np.concatenate([i for i in images if len(i)]), np.concatenate(labels)


def _shown_path(path: Path, root: Path | None) -> str:
    return path.relative_to(root).as_posix() if root is not None else str(path)


def split_by_content(
    labels: Sequence[int], hashes: Sequence[str], fractions: Sequence[float], seed: int
) -> list[str]:
    """Seeded, stratified split in which byte-identical files always share a split.

    Files are grouped by content hash and the groups, not the files, are dealt out per
    class, so a duplicate can never sit on both sides of the train/test line. Groups are
    ordered by hash before the seeded shuffle, so the result depends only on the files'
    contents, labels and the seed: not on file names, listing order or the machine.
    """
    if len(labels) != len(hashes):
        raise ValueError("labels and hashes differ in length")
    groups: dict[str, list[int]] = {}
    for index, digest in enumerate(hashes):
        groups.setdefault(digest, []).append(index)
    by_class: dict[int, list[str]] = {}
    for digest, members in groups.items():
        # A file copied into both class folders is labelled by its first copy for stratifying.
        by_class.setdefault(int(labels[members[0]]), []).append(digest)
    rng = np.random.Generator(np.random.PCG64(seed))
    assignment = [""] * len(labels)
    for label in sorted(by_class):
        digests = sorted(by_class[label])
        order = rng.permutation(len(digests))
        counts = _split_counts(len(digests), fractions)
        bounds = np.cumsum(counts)
        for rank, position in enumerate(order):
            split = SPLIT_NAMES[int(np.searchsorted(bounds, rank, side="right"))]
            for index in groups[digests[position]]:
                assignment[index] = split
    return assignment


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    train = int(round(n * fractions[0]))
    val = int(round(n * fractions[1]))
    val = min(val, n - train)
    return [train, val, n - train - val]


def write_skipped_csv(path: Path, skipped: Iterable[Skipped]) -> None:
    with atomic_open(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "reason"])
        for item in skipped:
            writer.writerow([item.path, item.reason])
