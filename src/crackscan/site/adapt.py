"""Site adaptation: a run taught a user's site from a few labelled tiles, in seconds, into a
new run folder every command takes.

The backbone is frozen, so the parent's training images never pass through it again: their
pooled features are cached in the run (features.npz). Only the site's tiles are embedded:
the labelled ones in their eight flips and rotations (a crack is a crack at any angle), and
a sample of the other tiles of the photos they came from, unlabelled. The new model has
three heads over the one backbone pass:

- the parent's head, as it was, on the pooled features;
- a site head on the site map (the activations of classifier.SITE_LAYER, a 10 x 10 grid of cells
  for a 160 px tile): each cell gets a linear crack score and the tile is a crack if any
  cell is (model.heads.any_cell_logit). Fitted on the site's tiles alone, with the classes
  weighted equally; then its bias is moved to the site's own crack share, estimated on the
  unlabelled tiles by EM (Saerens et al., 2002): labels drawn K crack + K clear say nothing
  about how many of a site's tiles are cracks, and F1 on a road where one tile in seven
  is cracked depends on it;
- a gate on the pooled features that tells the site's tiles from the parent's training
  images: crack probability = parent + gate * (site - parent), so the parent's kind of
  images keep the parent's answers and the model learns the site without forgetting.

What the labels say about the change is measured before anything is written:
cross-validated accuracy and F1 on the site labels with the parent's head and with the
adapted model, and the parent's own validation and test accuracy with each.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import plots, runs
from ..datasets import read_labelled, split_samples
from ..errors import CrackscanError
from ..files import atomic_path, check_writable, file_sha256, write_bytes
from ..metrics import tile_metrics
from ..model.builtin import MODELS_DIR, builtin_models
from ..model.backbone import SITE_LAYER, imagenet_weights_path
from ..model.classifier import build_classifier, feature_extractor
from ..model.heads import SiteHead, crack_logit, sigmoid
from ..model.keras_archive import (load_keras_model, read_crack_head, read_keras_metadata, save_keras_model,
                                   write_site_model)
from ..model.registry import resolve
from ..model.tasks import task_of
from ..progress import Progress, as_progress
from ..runtime import backbone_cache
from ..runtime.formats import read_model_info, run_backbone
from ..runtime.int8_backbone import CALIBRATION_IMAGES, CHECK_IMAGES, make_int8_backbone, sample_rows
from ..runtime.runners import BackboneRunner
from ..settings import TrainConfig, cache_folder
from .fit import L2, SITE_L2, at_crack_share, balanced_weights, dihedral, fit_logistic, fit_site_head, stratified_folds
from .labels import labelled_samples, unlabelled_site_tiles

CV_FOLDS = 5
VIEWS = 8  # dihedral() gives each tile's eight flips and rotations
# Points of the parent's test accuracy adapt may cost, measured on its own images. Where the
# parent's images are not at hand (a built-in ships their pooled features, not the site maps
# the site head reads), the figure is a worst case (each image the site head could move is
# counted wrong), reported but never a reason to refuse: on 1,000 images it is a handful of
# images near the parent's threshold, not a measured loss.
MAX_PARENT_TEST_DROP = 0.5
UNLABELLED_TILES = 400  # of the labels' photos, to estimate the site's crack share and train the gate


@dataclasses.dataclass
class Adaptation:
    path: Path
    metrics: dict[str, Any]



@dataclasses.dataclass
class SiteTiles:
    """The site's tiles through the parent's backbone: the labelled ones in their VIEWS flips
    and rotations (VIEWS rows per tile), and unlabelled ones of the same photos."""

    crack: np.ndarray  # per labelled tile
    labels: np.ndarray  # per labelled tile, in the model's class indices
    view_pooled: np.ndarray
    view_maps: np.ndarray
    other_pooled: np.ndarray
    other_maps: np.ndarray
    photos: int
    pixels: np.ndarray  # the labelled tiles as read, and the unlabelled ones: the int8 backbone's calibration
    other_pixels: np.ndarray

    @property
    def view_cells(self) -> np.ndarray:
        return self.view_maps.reshape(len(self.view_maps), -1, self.view_maps.shape[-1])

    @property
    def plain_pooled(self) -> np.ndarray:
        return self.view_pooled[::VIEWS]

    @property
    def plain_maps(self) -> np.ndarray:
        return self.view_maps[::VIEWS]

    def rows(self, tiles: np.ndarray) -> np.ndarray:
        """The view rows of ``tiles``."""
        return np.repeat(tiles, VIEWS) * VIEWS + np.tile(np.arange(VIEWS), len(tiles))


def adapt(
    run: str | Path,
    labels: str | Path,
    out: str | Path,
    force: bool = False,
    progress: Progress | bool = False,
    keep_backbone_in_parent: bool = True,
    max_parent_drop: float = MAX_PARENT_TEST_DROP,
    int8_backbone: bool = True,
) -> Adaptation:
    """A new run that knows the site in ``labels`` (a labels folder or any class-folder
    dataset of tiles) as well as the parent run's data. Refuses, writing nothing, if the
    parent's test accuracy, measured on its images, would fall by more than
    ``max_parent_drop`` points (MAX_PARENT_TEST_DROP). A parent
    without its two-output LiteRT backbone gets it converted once, and kept in the parent
    unless ``keep_backbone_in_parent`` is False (the server writes nowhere but its labels
    and the runs it makes); the new run always keeps it, and with ``int8_backbone`` an int8
    one too, checked with the new head (runtime.int8_backbone). ``progress`` hears a step as
    each stage starts."""
    report = as_progress(progress)
    started = time.perf_counter()
    parent, keras_path = _parent_run(run, report)
    out = Path(out)
    if out.resolve() == parent.resolve():
        raise CrackscanError(f"--out {out} is the parent run itself: name a new folder for the adapted run")
    if runs.is_run(out) and not force:
        raise CrackscanError(f"{out} already holds a run: pass --force to replace it")
    check_writable(out, create=False)  # a read-only --out is said now, not after the site is embedded
    info = read_keras_metadata(keras_path)
    parent_head = read_crack_head(keras_path, info)
    backbone = run_backbone(parent, keras_path, report.step, keep_backbone_in_parent)
    site = _embed_site(labels, info, backbone, report)
    base = runs.load_features(parent)
    if base is None:
        report.step("embedding the parent run's images once (a run made before features.npz was kept)")
        base = _embed_parent(parent, backbone, info)
    if base["features"].shape[1] != site.view_pooled.shape[1]:
        raise CrackscanError(f"{parent / runs.FEATURES_FILE} holds {base['features'].shape[1]} features an image, its "
                             f"backbone gives {site.view_pooled.shape[1]}: it is damaged or from another model; delete "
                             "it, and adapt embeds the run's images again")

    report.step("fitting the site head, its crack share and the gate")
    everyone = np.arange(len(site.labels))
    site_head, crack_share = at_crack_share(
        fit_site_head(site.view_cells[site.rows(everyone)], np.repeat(site.crack, VIEWS)), site.other_maps)
    gate = _fit_gate(base, site)
    head = SiteHead(parent_head, site_head, gate)

    report.step("cross-validating on the site labels")
    cv_probability = _cross_validated(site, parent_head, gate)
    truth = site.crack.astype(np.int8)
    site_before = tile_metrics(truth, sigmoid(crack_logit(site.plain_pooled, parent_head)) >= 0.5)
    site_after = tile_metrics(truth, cv_probability >= 0.5)
    parent_check = _check_parent(head, base, parent, backbone, info, max_parent_drop)

    report.step("writing the new run")
    with runs.writing(out, force) as out:
        write_site_model(keras_path, out / runs.MODEL_FILE, head, info, site.view_maps.shape[1:], SITE_LAYER)
        head.save_to(out / runs.SITE_HEAD_FILE)
        _link_parent_records(parent, out)
        write_bytes(out / runs.BACKBONE_FILE, backbone.model_content)
        _site_confusion_plot(out, site.crack, cv_probability >= 0.5, info)
        int8 = _int8_backbone(out, parent, keras_path, backbone, head, info, site, report) if int8_backbone else None
        metrics = _adaptation_metrics(parent, labels, site, info, crack_share, (site_before, site_after), parent_check,
                                      time.perf_counter() - started)
        metrics["int8_backbone"] = int8
        runs.write_metrics(out, metrics)
        runs.finish(out, runs.data_root(parent), {"adapted_from": str(parent.resolve())})
    return Adaptation(out, metrics)


def _int8_backbone(out: Path, parent: Path, keras_path: Path, backbone: BackboneRunner, head: SiteHead, info: Any,
                   site: SiteTiles, report: Progress) -> dict[str, Any]:
    """The adapted run's int8 backbone, calibrated on the site's tiles (what the run will
    scan) and checked with the new head on the labelled site tiles and, where they are on
    disk, the parent's validation and test images."""
    checks = {"labelled site tiles": (site.pixels, site.labels)}
    parent_rows = [r for r in runs.split_rows(parent) if r["split"] != "train"] \
        if (parent / runs.SPLIT_FILE).is_file() else []
    if parent_rows:
        try:
            chosen = [parent_rows[i] for i in sample_rows(len(parent_rows), CHECK_IMAGES // 2)]
            samples = split_samples(parent, info.class_names, chosen)
            checks["parent's validation and test images"] = read_labelled(samples, info.input_size)
        except CrackscanError:
            pass  # the parent's data is gone: the site's tiles are all there is to check on
    tiles = np.concatenate([site.pixels, site.other_pixels])
    calibration = tiles[sample_rows(len(tiles), CALIBRATION_IMAGES)]
    extractor = feature_extractor(load_keras_model(keras_path)[0])
    return make_int8_backbone(out, extractor, backbone.model_content, head.crack_probability, info, calibration,
                              checks, report.step)


def _check_parent(head: SiteHead, base: dict[str, np.ndarray], parent: Path, backbone: BackboneRunner, info: Any,
                  max_drop: float = MAX_PARENT_TEST_DROP) -> dict[str, Any]:
    """The parent's accuracy on its validation and test images before and after; refused
    (CrackscanError) when the test accuracy, measured, would fall by more than ``max_drop``
    points. A built-in model's parent run ships test features, not validation ones."""
    base_crack = base["labels"] == info.positive_index
    parent_check = {part: _parent_accuracy(head, base, mask, base_crack, parent, backbone, info) if mask.any() else None
                    for part, mask in (("val", base["splits"] == "val"), ("test", base["splits"] == "test"))}
    checked = parent_check["test"] or parent_check["val"]
    if checked is None:
        raise CrackscanError(f"{parent} holds no test or validation images to check the parent on: adapt a run trained "
                             "with a test split (e.g. --split 70:24:6)")
    drop = 100 * (checked["accuracy_before"] - checked["accuracy_after"])
    checked["max_drop_points"] = max_drop
    if drop > max_drop + 1e-9 and not checked["bound"]:
        raise CrackscanError(f"adapting would cost the parent's test accuracy {drop:.2f} points "
                             f"({100 * checked['accuracy_before']:.2f}% -> {100 * checked['accuracy_after']:.2f}%; "
                             f"allowed {max_drop:g}, --max-parent-drop): the labels may contradict the parent's data; "
                             "nothing written")
    return parent_check


def _adaptation_metrics(parent: Path, labels: str | Path, site: SiteTiles, info: Any, crack_share: float | None,
                        site_figures: tuple[dict[str, Any], dict[str, Any]], parent_check: dict[str, Any],
                        seconds: float) -> dict[str, Any]:
    """What the new run's metrics.json records: the parent, the labels, the site's figures
    before and after (cross-validated), the parent's accuracy before and after, the method."""
    site_before, site_after = site_figures
    checked = parent_check["test"] or parent_check["val"]
    drop = 100 * (checked["accuracy_before"] - checked["accuracy_after"])
    return {
        "adapted_from": str(parent.resolve()),
        "labels": str(Path(labels).resolve()),
        "site_tiles": {name: int(np.sum(site.labels == i)) for i, name in enumerate(info.class_names)},
        "unlabelled_site_tiles": {"tiles": len(site.other_pooled), "photos": site.photos},
        "site_crack_share": None if crack_share is None else round(crack_share, 4),
        "site_cross_validated": {"folds": len(stratified_folds(site.crack, CV_FOLDS)), "before": site_before,
                                 "after": site_after},
        "parent_val": parent_check["val"],
        "parent_test": {**checked, "split": "test" if parent_check["test"] else "val", "change_points": -drop},
        "method": {"head": "parent + gate * (site - parent); site: any-cell logistic on the site map, bias at the "
                           "site's crack share (EM); gate: logistic, site tiles vs the parent's training images",
                   "site_layer": SITE_LAYER, "site_l2": SITE_L2, "gate_l2": L2, "views_per_tile": VIEWS},
        "test": {"count": checked["images"], "accuracy": checked["accuracy_after"]},
        "seconds": round(seconds, 2),
    }


def _parent_run(run: str | Path, report: Progress) -> tuple[Path, Path]:
    """The run folder adapt starts from and its model.keras: a run, or for a built-in model
    the float parent made once from it (builtin_parent)."""
    resolved = resolve(run)
    if task_of(read_model_info(resolved.file)[0]).per_pixel:
        raise CrackscanError(f"{run} is a segmenter: it adapts from the site's photos and their crack masks, not tile "
                             f"labels: crackscan adapt {run} PHOTOS --masks MASKS --out RUN")
    if resolved.builtin is not None:
        resolved = resolve(builtin_parent(resolved.builtin.name, report.step))
    parent = resolved.run
    if resolved.file.suffix != ".keras" or parent is None:
        raise CrackscanError(f"adapt starts from a run folder (its model.keras and training features), not {run}: "
                             "train a run first, e.g. crackscan train concrete/ --out runs/first")
    if (parent / runs.SITE_HEAD_FILE).is_file():
        origin = runs.read_json(parent, runs.METRICS_FILE).get("adapted_from", "its parent run")
        raise CrackscanError(f"{parent} is itself adapted: adapt {origin} instead, with all your labels in one folder")
    return parent, resolved.file


def _embed_site(labels: str | Path, info: Any, backbone: BackboneRunner, report: Progress) -> SiteTiles:
    samples = labelled_samples(labels, info.class_names, info.positive_class)
    pixels, site_labels = read_labelled(samples, info.input_size)
    if len(site_labels) == 0:
        raise CrackscanError(f"no readable tiles in {labels}")
    crack = site_labels == info.positive_index
    if crack.min() == crack.max():
        raise CrackscanError(f"the labels in {labels} are all of one class: label crack and clear tiles")
    report.step(f"embedding {len(samples)} site tiles in their {VIEWS} flips and rotations")
    view_pooled, view_maps = backbone.features(dihedral(pixels))
    sample = unlabelled_site_tiles(labels, info.input_size, UNLABELLED_TILES)
    report.step(f"embedding {len(sample.pixels)} unlabelled tiles of {sample.photos} site photo(s)" if len(sample.pixels)
                else "no site photos to sample (labels.csv names none that exist): the site's crack share is not "
                     "estimated")
    other_pooled, other_maps = backbone.features(sample.pixels) if len(sample.pixels) else (view_pooled[:0],
                                                                                             view_maps[:0])
    return SiteTiles(crack, site_labels, view_pooled, view_maps, other_pooled, other_maps, sample.photos, pixels,
                     sample.pixels)


def _fit_gate(base: dict[str, np.ndarray], site: SiteTiles) -> tuple[np.ndarray, float]:
    """The gate: the site's tiles (labelled, in every view, and unlabelled) against the
    parent's training images, each side half the weight."""
    train = base["splits"] == "train"
    site_pooled = np.concatenate([site.view_pooled, site.other_pooled])
    features = np.concatenate([base["features"][train], site_pooled])
    sides = np.concatenate([np.zeros(int(train.sum())), np.ones(len(site_pooled))])
    return fit_logistic(features, sides, balanced_weights(sides), (np.zeros(features.shape[1]), 0.0))


def _cross_validated(site: SiteTiles, parent_head: tuple[np.ndarray, float], gate: tuple[np.ndarray, float]
                     ) -> np.ndarray:
    """Each labelled tile's crack probability from a site head fitted without its fold.

    Each fold starts from nothing, as the full fit did: the any-cell loss is not convex (a
    crack tile's loss falls as its best cell rises), so a start at the full fit, which saw
    the held-out tiles, could carry them into the fold's answer. The gate is the full fit's:
    a held-out site tile is a site tile, and the gate is there to tell those apart."""
    everyone = np.arange(len(site.labels))
    probability = np.zeros(len(site.labels))
    for fold in stratified_folds(site.crack, CV_FOLDS):
        kept = np.setdiff1d(everyone, fold)
        fold_head, _ = at_crack_share(fit_site_head(site.view_cells[site.rows(kept)], np.repeat(site.crack[kept], VIEWS)),
                                      site.other_maps)
        probability[fold] = SiteHead(parent_head, fold_head, gate).crack_probability(site.plain_pooled[fold],
                                                                                       site.plain_maps[fold])
    return probability


def _link_parent_records(parent: Path, out: Path) -> None:
    """The parent's settings, split and features, which describe the new run's parent data too."""
    for name in (runs.CONFIG_FILE, runs.SPLIT_FILE, runs.FEATURES_FILE):
        if (parent / name).is_file():
            with atomic_path(out / name) as temporary:
                try:  # the parent's features are never written in place, so a link is a copy for free
                    os.link(parent / name, temporary)
                except OSError:
                    shutil.copyfile(parent / name, temporary)


def _site_confusion_plot(out: Path, crack: np.ndarray, said_crack: np.ndarray, info: Any) -> None:
    matrix = np.zeros((2, 2), int)
    np.add.at(matrix, (crack.astype(int), said_crack.astype(int)), 1)
    names = [info.negative_class, info.positive_class]
    order = [0, 1] if info.positive_index == 1 else [1, 0]  # rows and columns in the model's class order
    plots.confusion_matrix({"labels": [names[i] for i in order], "matrix": matrix[np.ix_(order, order)].tolist()},
                           out / runs.SITE_CONFUSION_PLOT, "Site labels, cross-validated, after adapting")


def builtin_parent(name: str, step: Callable[[str], None] = lambda line: None) -> Path:
    """The run folder a built-in model adapts from, made once in crackscan's cache: its
    float model (the ImageNet backbone it was built on, from Keras' weights file, under the
    float head it ships), the sample of its training and test features it ships, and the
    two-output LiteRT backbone. About 20 s the first time; after that it is just there.

    The int8 file cannot be adapted as it is (its backbone is quantized, and a new head
    needs the float one). Keras' ImageNet weights must be the very file the built-in was
    made from (its SHA-256 is recorded): a head on other weights' features would not be
    the built-in model."""
    model = builtin_models()[name]
    data = model.adaptation
    stored = MODELS_DIR / data.get("file", "")
    if not data or not stored.is_file():
        raise CrackscanError(f"built-in model {name} carries no adaptation data in this install: train a run "
                             "(crackscan train) and adapt it instead")
    folder = cache_folder() / "builtin" / f"{name}-{model.sha256[:12]}"
    if runs.is_run(folder):
        return folder
    step(f"making {name}'s float model once, from the ImageNet weights it was built on (kept in {folder})")
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{key: value for key, value in model.settings.items() if key in fields})
    classifier = build_classifier(config)
    weights = imagenet_weights_path(config).resolve()
    if file_sha256(weights) != data.get("imagenet_weights_sha256"):
        raise CrackscanError(f"{name} was built on other ImageNet weights than Keras' {weights} (SHA-256 differs), so "
                             "its head does not fit this backbone: train a run (crackscan train) and adapt it instead")
    try:
        with np.load(stored, allow_pickle=False) as saved:
            shipped = {key: saved[key] for key in ("features", "feature_scale", "labels", "splits", "head_kernel",
                                                   "head_bias")}
    except (OSError, ValueError, KeyError) as error:
        raise CrackscanError(f"cannot read {stored} ({error}): reinstall crackscan") from None
    classifier.model.get_layer("classes").set_weights([shipped["head_kernel"], shipped["head_bias"]])
    info = read_model_info(model.path)[0]
    # Two processes adapting from the same built-in at once: the second waits, then finds
    # the parent the first made.
    with runs.locked(folder, wait=True):
        if runs.is_run(folder):
            return folder
        out = runs.prepare(folder, force=True)
        save_keras_model(classifier.model, out / runs.MODEL_FILE, info)
        config.save(out / runs.CONFIG_FILE)
        runs.save_features(out, shipped["features"] * shipped["feature_scale"], shipped["labels"], shipped["splits"])
        write_bytes(out / runs.BACKBONE_FILE, backbone_cache.float_litert(feature_extractor(classifier.model)))
        runs.write_metrics(out, {"builtin": name, "trained_on": model.trained_on})
        return runs.finish(out, out, {"builtin": name}).parent


def _parent_accuracy(head: SiteHead, base: dict[str, np.ndarray], part: np.ndarray, crack: np.ndarray, parent: Path,
                     backbone: BackboneRunner, info: Any) -> dict[str, Any]:
    """The parent's accuracy on a split of its own images, before and after. Only pooled
    features are cached, but the site head reads the site map; an image's answer can move by
    at most its gate (|site - parent| <= 1), so only images whose gate could carry them across
    0.5 are embedded again, from the run's data. Where the data is gone they count as wrong,
    and the figure is a floor ("bound": true)."""
    features, truth = base["features"][part], crack[part]
    parent_p = sigmoid(crack_logit(features, head.parent))
    gate = sigmoid(crack_logit(features, head.gate))
    after = parent_p >= 0.5
    movable = np.flatnonzero(gate >= np.abs(parent_p - 0.5))
    bound = False
    if len(movable):
        pixels = _parent_pixels(parent, np.flatnonzero(part)[movable], info)
        if pixels is None:
            after[movable] = ~truth[movable]
            bound = True
        else:
            after[movable] = head.crack_probability(*backbone.features(pixels)) >= 0.5
    right_before, right_after = (parent_p >= 0.5) == truth, after == truth
    return {"images": int(part.sum()), "accuracy_before": float(np.mean(right_before)),
            "accuracy_after": float(np.mean(right_after)), "embedded_again": int(len(movable)), "bound": bound,
            "lost": int(np.sum(right_before & ~right_after)), "gained": int(np.sum(~right_before & right_after))}


def _parent_pixels(parent: Path, rows: np.ndarray, info: Any) -> np.ndarray | None:
    """The parent's images of ``rows``, or None where its data is gone. A damaged split.csv
    is refused (its own error), never taken for gone data."""
    if not (parent / runs.SPLIT_FILE).is_file():  # a built-in's parent ships features, not images
        return None
    listed = runs.split_rows(parent)
    try:
        samples = split_samples(parent, info.class_names, (listed[i] for i in rows))
        pixels, read = read_labelled(samples, info.input_size)
    except CrackscanError:
        return None
    return pixels if len(read) == len(rows) else None


def _embed_parent(parent: Path, backbone: BackboneRunner, info: Any) -> dict[str, np.ndarray]:
    rows = runs.split_rows(parent)
    samples = split_samples(parent, info.class_names, rows)
    pixels, labels = read_labelled(samples, info.input_size)
    if len(labels) != len(rows):
        raise CrackscanError(f"some of {parent}'s training images are gone from {runs.data_root(parent)}: train the "
                             "run again")
    features = backbone(pixels)
    splits = np.array([r["split"] for r in rows])
    runs.save_features(parent, features, labels, splits)
    return {"features": features.astype(np.float32), "labels": labels, "splits": splits}
