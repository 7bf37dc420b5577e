"""The labelling loop behind the page: tiles flipped on the page are saved in one labels
folder, and adapt refits the served run on them and serves the new run at once."""

import json
import os
import threading
from pathlib import Path
from typing import Any

from ..errors import CrackscanError, LimitExceeded, write_error
from ..runtime.predictor import Predictor, load_head_on_backbone
from ..site.adapt import adapt
from ..site.labels import LabelSet

MAX_LABELS_PER_REQUEST = 4096


class LoopBusy(CrackscanError):
    pass


class LabelBudgetExceeded(LimitExceeded):
    """Saving these labels would write more than a request or the labels folder may hold."""


def parse_labels(text: str, width: int, height: int, info: Any, max_side: int = 1024
                 ) -> list[tuple[tuple[int, int, int, int], bool]]:
    """The page's labels for one photo, checked: boxes inside the photo, no side over
    ``max_side`` (a few tiles), each box once, known class names."""
    try:
        entries = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        raise CrackscanError("labels must be JSON: a list of {x, y, width, height, label}") from None
    if not isinstance(entries, list) or not entries:
        raise CrackscanError("labels must be a non-empty list of {x, y, width, height, label}")
    if len(entries) > MAX_LABELS_PER_REQUEST:
        raise CrackscanError(f"at most {MAX_LABELS_PER_REQUEST} labels per request, got {len(entries)}")
    checked = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise CrackscanError(f"each label must be an object, got {entry!r:.60}")
        box = tuple(entry.get(key) for key in ("x", "y", "width", "height"))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in box):
            raise CrackscanError(f"x, y, width and height must be whole numbers, got {box!r:.80}")
        x, y, w, h = box
        if w < 8 or h < 8 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise CrackscanError(f"tile {box} is not inside the {width}x{height} photo (or is under 8 px)")
        if max(w, h) > max_side:
            raise CrackscanError(f"tile {box} is larger than a label may be ({max_side} px a side): label tiles, "
                                 "not the photo")
        if any(box == earlier for earlier, _ in checked):
            raise CrackscanError(f"tile {box} is labelled twice in one request")
        if entry.get("label") not in info.class_names:
            raise CrackscanError(f"label must be one of {', '.join(info.class_names)}, got {entry.get('label')!r:.40}")
        checked.append(((x, y, w, h), entry["label"] == info.positive_class))
    return checked


class SiteLoop:
    """The labelling loop behind the page: one labels folder, the run (or built-in model) being
    served, the runs adapt made from it; one save and one adaptation at a time. A new run is
    served only if its cross-validated F1 on the labels is not below the served model's;
    otherwise it is kept aside, both figures are reported, and ``use`` serves it on request."""

    def __init__(self, folder: str | os.PathLike | None, run: Any, predictor: Predictor,
                 max_request_mb: float = 32.0, max_folder_mb: float = 2048.0, load_on: Any = None):
        # Resolved: adapted runs go beside the labels folder, and "." has no parent of its own.
        self.folder = Path(folder).resolve() if folder is not None else None
        self.origin = run
        self.predictor = predictor
        # Where a new model is loaded: a normal-priority thread (see budgets.NormalWork), not
        # the low-priority one adapt runs on, whose priority the model's threads would take.
        self.load_on = load_on or (lambda load, *args: load(*args))
        self.made: list[Path] = []
        self.kept_aside: dict[str, Path] = {}  # adapted runs not served, by name, for ``use``
        self._lock = threading.Lock()  # saving
        self._adapting = threading.Lock()
        self.max_request_bytes, self.max_folder_bytes = int(max_request_mb * 2**20), int(max_folder_mb * 2**20)
        self.folder_bytes = 0
        if self.folder is not None:
            if self.folder.exists() and not self.folder.is_dir():
                raise CrackscanError(f"--labels {self.folder} is a file, not a folder")
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise write_error(self.folder, error) from None
            self.folder_bytes = sum(path.stat().st_size for path in self.folder.rglob("*") if path.is_file())

    @property
    def can_adapt(self) -> bool:
        return self.folder is not None and self.origin is not None

    def why_not(self) -> str | None:
        """Why the page's Adapt is off, in a sentence; None when it is on."""
        if self.folder is None:
            return "this server keeps no labels: start it with --labels DIR"
        if self.origin is None:
            return ("the served model is a file, not a run folder or a built-in model (adapt refits a run's head): "
                    "serve a run folder or crackscan-base / crackscan-nano with --labels DIR")
        return None

    def save(self, photo: Any, content: bytes, name: str, entries: list) -> dict[str, Any]:
        # A name is recorded, never used as a path: keep it printable.
        shown = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in name)[:200] or "upload"
        info = self.predictor.info
        # Bounded before anything is written, by the crops' uncompressed size (PNG is smaller).
        cost = len(content) + sum(w * h * 3 for (_, _, w, h), _ in entries)
        if cost > self.max_request_bytes:
            raise LabelBudgetExceeded(f"these labels would write {cost / 2**20:.1f} MB, over the "
                                      f"{self.max_request_bytes / 2**20:g} MB one request may write")
        if self.folder_bytes + cost > self.max_folder_bytes:
            raise LabelBudgetExceeded(f"the labels folder holds {self.folder_bytes / 2**20:.0f} MB; these labels would "
                                      f"take it over its {self.max_folder_bytes / 2**20:g} MB")
        with self._lock:
            labels = LabelSet(self.folder, (info.negative_class, info.positive_class))
            kept = labels.keep_photo(content, shown)
            for (x, y, w, h), crack in entries:
                labels.add(photo[y : y + h, x : x + w], kept, (x, y, w, h), crack, f"page:{shown}")
            labels.save()
            self.folder_bytes += cost
        return {"saved": len(entries), "labels": self.folder.name, "counts": labels.counts()}

    def adapt(self) -> dict[str, Any]:
        if self._lock.locked():
            raise LoopBusy("labels are being saved: press Adapt again when the save is done")
        if not self._adapting.acquire(blocking=False):
            raise LoopBusy("an adaptation is already running: try again when it is done")
        try:
            # The page's user waits for the swap: no int8 step (~10-40 s); `crackscan adapt` makes it.
            made = adapt(self.origin, self.folder, self.next_run_folder(), keep_backbone_in_parent=False,
                         int8_backbone=False)
            cv = made.metrics["site_cross_validated"]
            before, after = cv["before"]["f1"], cv["after"]["f1"]
            # Served only if the labels say it is not worse: F1 where both have one, else accuracy.
            worse = (after < before) if before is not None and after is not None \
                else cv["after"]["accuracy"] < cv["before"]["accuracy"]
            if worse:
                self.kept_aside[made.path.name] = made.path
            else:
                self.predictor = self.load_on(load_head_on_backbone, made.path)
                self.made.append(made.path)
        finally:
            self._adapting.release()
        m = made.metrics
        return {"run": made.path.name, "swapped": not worse, "model": self.predictor.path.name,
                "site_tiles": m["site_tiles"], "site_cross_validated": cv, "parent_test": m["parent_test"],
                "seconds": m["seconds"]}

    def use(self, name: str) -> dict[str, Any]:
        """Serves an adapted run that was kept aside (the user's choice over the labels')."""
        path = self.kept_aside.get(name)
        if path is None:
            raise CrackscanError(f"no adapted run named {name!r:.80} is waiting to be used")
        with self._adapting:
            self.predictor = self.load_on(load_head_on_backbone, path)
            self.made.append(path)
            del self.kept_aside[name]
        return {"run": name, "swapped": True, "model": self.predictor.path.name}

    def next_run_folder(self) -> Path:
        """Where the next adapted run goes: beside the labels folder, never inside it (a run
        inside would count as a third class of labels)."""
        return next(self.folder.parent / f"{self.folder.name}-adapted-{n:02d}" for n in range(1, 10_000)
                    if not (self.folder.parent / f"{self.folder.name}-adapted-{n:02d}").exists())
