"""The labelling loop behind the page: what the user marks on the page is saved in one
labels folder, and adapt teaches the served model from it and serves the new run at once,
when the site's cross-validation says it is better.

A tile classifier is taught by tiles flipped on the page (crack / clear), a segmenter by
marks on its cracks: a false crack clicked "not a crack", a stroke along a crack it missed.
The labels folder then holds photos/ and masks/ (the crack map the user saw, corrected by
the marks: 255 crack, 0 clear, 128 in the band around a stroke), which `crackscan adapt
crackscan-seg LABELS` reads as well."""

import hashlib
import json
import math
import os
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CrackscanError, LimitExceeded, write_error
from ..model.tasks import task_of
from ..runtime.predictor import Predictor, load, load_head_on_backbone
from ..site.adapt import adapt
from ..site.labels import LabelSet

MAX_LABELS_PER_REQUEST = 4096
MAX_MARKS_PER_REQUEST = 512
MAX_POINTS_PER_MARK = 4096


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


def parse_marks(text: str, width: int, height: int
                ) -> tuple[list[tuple[np.ndarray, float]], list[np.ndarray], float]:
    """The page's marks on one photo, checked: false cracks (``not_cracks``: a centreline and
    the crack's width in px), strokes along missed cracks (``strokes``: a line), every point
    inside the photo; and the threshold the marked crack map was drawn at."""
    try:
        marks = json.loads(text)
    except (ValueError, RecursionError):
        raise CrackscanError('marks must be JSON: {"not_cracks": [{"points": [[x, y], ...], "width": w}], '
                             '"strokes": [{"points": [[x, y], ...]}]}') from None
    if not isinstance(marks, dict) or set(marks) - {"not_cracks", "strokes", "threshold"}:
        raise CrackscanError('marks must be an object with "not_cracks" and "strokes" lists (and the "threshold" '
                             'the crack map was drawn at)')
    lists = {key: marks.get(key) or [] for key in ("not_cracks", "strokes")}
    if not all(isinstance(v, list) for v in lists.values()):
        raise CrackscanError('"not_cracks" and "strokes" must be lists')
    if not any(lists.values()):
        raise CrackscanError("no marks: click a false crack or draw along a missed one first")
    if sum(map(len, lists.values())) > MAX_MARKS_PER_REQUEST:
        raise CrackscanError(f"at most {MAX_MARKS_PER_REQUEST} marks per photo")

    def line(entry: Any) -> np.ndarray:
        points = entry.get("points") if isinstance(entry, dict) else None
        if not isinstance(points, list) or not 1 <= len(points) <= MAX_POINTS_PER_MARK or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            and math.isfinite(v) for v in p) for p in points):
            raise CrackscanError(f"each mark needs points: a list of 1 to {MAX_POINTS_PER_MARK} [x, y] numbers")
        array = np.asarray(points, float)
        if (array < -1).any() or (array[:, 0] > width + 1).any() or (array[:, 1] > height + 1).any():
            raise CrackscanError(f"a mark reaches outside the {width}x{height} photo")
        return np.clip(array, 0, [width - 1, height - 1])

    not_cracks = []
    for entry in lists["not_cracks"]:
        crack_width = entry.get("width") if isinstance(entry, dict) else None
        if not isinstance(crack_width, (int, float)) or isinstance(crack_width, bool) or not 0 < crack_width <= 500:
            raise CrackscanError("each false crack needs its width: a number of px from 0 to 500")
        not_cracks.append((line(entry), float(crack_width)))
    threshold = marks.get("threshold", 0.5)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold < 1:
        raise CrackscanError(f"threshold must be a number between 0 and 1, got {threshold!r:.40}")
    return not_cracks, [line(entry) for entry in lists["strokes"]], float(threshold)


class SiteLoop:
    """The labelling loop behind the page: one labels folder, the run (or built-in model) being
    served, the runs adapt made from it; one save and one adaptation at a time. A new run is
    served only if its cross-validated F1 on the labels is not below the served model's;
    otherwise it is kept aside, both figures are reported, and ``use`` serves it on request."""

    def __init__(self, folder: str | os.PathLike | None, run: Any, predictor: Predictor,
                 max_request_mb: float = 32.0, max_folder_mb: float = 2048.0, load_on: Any = None,
                 adapt_steps: int | None = None):
        # Resolved: adapted runs go beside the labels folder, and "." has no parent of its own.
        self.folder = Path(folder).resolve() if folder is not None else None
        self.origin = run
        self.predictor = predictor
        # Where a new model is loaded: a normal-priority thread (see budgets.NormalWork), not
        # the low-priority one adapt runs on, whose priority the model's threads would take.
        self.load_on = load_on or (lambda load, *args: load(*args))
        self.per_pixel = task_of(predictor.info).per_pixel
        self.adapt_steps = adapt_steps  # a segmenter's fine-tuning steps (None: adapt's default)
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
            return ("the served model is a file, not a run folder or a built-in model (adapt starts from a run): "
                    "serve a run folder or a built-in model with --labels DIR")
        return None

    def save_marks(self, photo: Any, content: bytes, name: str, not_cracks: list, strokes: list,
                   threshold: float = 0.5) -> dict[str, Any]:
        """Keeps the photo (as uploaded) and the mask its marks make in the labels folder's
        photos/ and masks/: the served model's crack map at the page's ``threshold``, as the
        user saw it, corrected by the marks; marking the same photo again replaces its mask."""
        from ..photo.segment import crack_probability_map
        from ..files import atomic_path, write_bytes, write_text
        from ..masks import MASKS_SETTINGS_FILE
        from ..segment.adapt import MARKED_MASKS, MARKED_PHOTOS
        from ..segment.annotations import UNLABELLED, marks_mask

        from PIL import Image

        height, width = photo.shape[:2]
        cost = self._within_budget(len(content) + width * height, "marks")  # the mask's raw size bounds its PNG
        values = marks_mask(photo, not_cracks, strokes, crack_probability_map(self.predictor, photo) >= threshold)
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name).stem)[:60] or "photo"
        suffix = Path(name).suffix.lower() if re.fullmatch(r"\.[a-z0-9]{2,5}", Path(name).suffix.lower()) else ""
        kept = f"{hashlib.sha256(content).hexdigest()[:8]}-{stem}"
        with self._lock:
            try:
                (self.folder / MARKED_PHOTOS).mkdir(exist_ok=True)
                (self.folder / MARKED_MASKS).mkdir(exist_ok=True)
            except OSError as error:
                raise write_error(self.folder, error) from None
            settings = self.folder / MARKED_MASKS / MASKS_SETTINGS_FILE
            if not settings.is_file():
                write_text(settings, json.dumps({"ignore_value": UNLABELLED}) + "\n")
            if not (self.folder / MARKED_PHOTOS / f"{kept}{suffix}").is_file():
                write_bytes(self.folder / MARKED_PHOTOS / f"{kept}{suffix}", content)
            with atomic_path(self.folder / MARKED_MASKS / f"{kept}.png") as temporary:
                Image.fromarray(values).save(temporary, format="PNG")
            self.folder_bytes += cost
            marked = len(list((self.folder / MARKED_MASKS).glob("*.png")))
        return {"photo": kept, "crack_pixels": int((values == 255).sum()), "clear_pixels": int((values == 0).sum()),
                "marked_photos": marked, "labels": self.folder.name}

    def save(self, photo: Any, content: bytes, name: str, entries: list) -> dict[str, Any]:
        # A name is recorded, never used as a path: keep it printable.
        shown = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in name)[:200] or "upload"
        info = self.predictor.info
        # Bounded before anything is written, by the crops' uncompressed size (PNG is smaller).
        cost = self._within_budget(len(content) + sum(w * h * 3 for (_, _, w, h), _ in entries), "labels")
        with self._lock:
            labels = LabelSet(self.folder, (info.negative_class, info.positive_class))
            kept = labels.keep_photo(content, shown)
            for (x, y, w, h), crack in entries:
                labels.add(photo[y : y + h, x : x + w], kept, (x, y, w, h), crack, f"page:{shown}")
            labels.save()
            self.folder_bytes += cost
        return {"saved": len(entries), "labels": self.folder.name, "counts": labels.counts()}

    def _within_budget(self, cost: int, what: str) -> int:
        """``cost`` bytes, if one request may write them and the labels folder can take them."""
        if cost > self.max_request_bytes:
            raise LabelBudgetExceeded(f"these {what} would write {cost / 2**20:.1f} MB, over the "
                                      f"{self.max_request_bytes / 2**20:g} MB one request may write")
        if self.folder_bytes + cost > self.max_folder_bytes:
            raise LabelBudgetExceeded(f"the labels folder holds {self.folder_bytes / 2**20:.0f} MB; these {what} would "
                                      f"take it over its {self.max_folder_bytes / 2**20:g} MB")
        return cost

    def adapt(self) -> dict[str, Any]:
        if self._lock.locked():
            raise LoopBusy("labels are being saved: press Adapt again when the save is done")
        if not self._adapting.acquire(blocking=False):
            raise LoopBusy("an adaptation is already running: try again when it is done")
        try:
            if self.per_pixel:
                return self._adapt_segmenter()
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

    def _adapt_segmenter(self) -> dict[str, Any]:
        """The segmenter taught the marked photos; served only when each photo, scored by a
        decoder not taught on it, says it is better. Its int8 export is made too: a float
        segmenter scans several times slower, and the page scans again at once."""
        from ..segment.adapt import MARKED_PHOTOS, NotBetter, adapt_segmenter, site_figure

        if not (self.folder / MARKED_PHOTOS).is_dir():
            raise CrackscanError("no marked photos yet: mark false cracks or draw along missed ones, then Save marks")
        try:
            made = adapt_segmenter(self.origin, self.folder, None, self.next_run_folder(),
                                   **({} if self.adapt_steps is None else {"steps": self.adapt_steps}))
        except NotBetter as refused:
            return {"run": None, "swapped": False, "model": self.predictor.path.name, "reason": str(refused),
                    "site_cross_validated": {
                        "figure": site_figure(refused.before, refused.after, refused.sparse),
                        "before": refused.before.figures(), "after": refused.after.figures(),
                        "per_photo": [{"photo": name, "figure": site_figure(b, a, refused.sparse)}
                                      for name, (b, a) in refused.per_photo.items()]}}
        self.predictor = self.load_on(lambda path: load(path, fastest=True), made.path)
        self.made.append(made.path)
        m = made.metrics
        cv = m["site_cross_validated"]
        # Photos by name, never by where the server keeps them.
        per_photo = [{**one, "photo": Path(one["photo"]).name} for one in cv["per_photo"]]
        return {"run": made.path.name, "swapped": True, "model": self.predictor.path.name,
                "site_cross_validated": {**{key: cv[key] for key in ("figure", "before", "after", "photos", "folds")},
                                         "per_photo": per_photo},
                "int8": bool(m.get("int8", {}).get("passed")), "seconds": m["seconds"]}

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
