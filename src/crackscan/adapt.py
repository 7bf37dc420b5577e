"""Site adaptation: a run taught a user's site from a few labelled tiles, in seconds, into a
new run folder every command takes.

The backbone is frozen, so the parent's training images never pass through it again: their
pooled features are cached in the run (features.npz). Only the site's tiles are embedded:
the labelled ones in their eight flips and rotations (a crack is a crack at any angle), and
a sample of the other tiles of the photos they came from, unlabelled. The new model has
three heads over the one backbone pass:

- the parent's head, as it was, on the pooled features;
- a site head on the site map (the activations of model.SITE_LAYER, a 10 x 10 grid of cells
  for a 160 px tile): each cell gets a linear crack score and the tile is a crack if any
  cell is (runtime.any_cell_logit). Fitted on the site's tiles alone, with the classes
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
import io
import json
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import plots, runs
from .builtin import MODELS_DIR, builtin_models, builtin_path
from .data import Sample, find_dataset_for_model, read_labelled
from .errors import CrackscanError
from .evaluate import tile_metrics
from .files import atomic_path, file_sha256, write_bytes, write_text
from .labels import unlabelled_site_tiles
from .model import (METADATA_NAME, SITE_LAYER, build_classifier, feature_extractor, imagenet_weights_path,
                    load_keras_model, read_crack_head, read_keras_metadata, save_keras_model)
from .runtime import (BackboneRunner, SiteHead, any_cell_logit, cell_logits, keras_to_litert, read_model_info,
                      sigmoid)
from .settings import TrainConfig, cache_folder

L2 = 1e-3  # the gate's
# The site head's: a few dozen tiles, hundreds of features. With 25 + 25 labels, 3e-3 to 0.1
# measured alike on the public photo sets (benchmarks/site_adaptation.py); with 10 + 10,
# 1e-2 overfit masonry (F1 0.71 against 0.76 at 3e-2) and 0.1 underfit roads.
SITE_L2 = 3e-2
MAX_ITERATIONS = 200
CV_FOLDS = 5
SITE_CONFUSION_PLOT = "site_confusion_matrix.png"
VIEWS = 8  # dihedral() gives each tile's eight flips and rotations
MAX_PARENT_TEST_DROP = 0.2  # points of the parent's test accuracy adapt may cost
UNLABELLED_TILES = 400  # of the labels' photos, to estimate the site's crack share and train the gate
# An estimated crack share is kept inside these bounds: a site with no cracks at all, or
# nothing else, is not what a few dozen labels of both kinds describe.
CRACK_SHARE_BOUNDS = (0.02, 0.98)


@dataclasses.dataclass
class Adaptation:
    path: Path
    metrics: dict[str, Any]


def dihedral(images: np.ndarray) -> np.ndarray:
    """The eight flips and rotations of each image, image-major (8 rows per image)."""
    views = []
    for image in images:
        for turned in (image, np.rot90(image)):
            views.extend((turned, turned[::-1], turned[:, ::-1], turned[::-1, ::-1]))
    return np.stack(views)


def fit_logistic(features: np.ndarray, targets: np.ndarray, weights: np.ndarray, start: tuple[np.ndarray, float],
                 l2: float = L2, iterations: int = MAX_ITERATIONS) -> tuple[np.ndarray, float]:
    """Weighted, L2-regularised logistic regression (weights sum to one), solved by L-BFGS
    from ``start``: deterministic, converged, and a few tenths of a second for ten thousand
    rows of 1280 features on a CPU, where a Keras fit takes seconds."""
    x = np.ascontiguousarray(features, np.float32)
    t = targets.astype(np.float32)
    share = (weights / weights.sum()).astype(np.float32)

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1].astype(np.float32), np.float32(theta[-1])
        logits = x @ w + b
        # log(1 + e^z) - t z, computed without overflow
        loss = float(share @ (np.logaddexp(0, logits) - t * logits)) + 0.5 * l2 * float(theta[:-1] @ theta[:-1])
        error = share * (sigmoid(logits) - t)
        gradient = np.empty_like(theta)
        gradient[:-1] = x.T @ error + l2 * theta[:-1]
        gradient[-1] = error.sum()
        return loss, gradient

    theta = lbfgs(loss_and_gradient, np.concatenate([start[0], [start[1]]]).astype(np.float64), iterations)
    return theta[:-1], float(theta[-1])


def lbfgs(function: Callable[[np.ndarray], tuple[float, np.ndarray]], theta: np.ndarray, iterations: int,
          memory: int = 10, tolerance: float = 1e-6) -> np.ndarray:
    """Minimises a smooth convex function by L-BFGS with a backtracking (Armijo) line search."""
    loss, gradient = function(theta)
    steps: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(iterations):
        direction = -gradient
        alphas = []
        for s, y, rho in reversed(steps):
            alpha = rho * (s @ direction)
            direction = direction - alpha * y
            alphas.append(alpha)
        if steps:
            s, y, _ = steps[-1]
            direction = direction * ((s @ y) / (y @ y))
        for (s, y, rho), alpha in zip(steps, reversed(alphas)):
            direction = direction + s * (alpha - rho * (y @ direction))
        slope = gradient @ direction
        if slope >= 0:  # not a descent direction: start the memory afresh
            steps.clear()
            direction, slope = -gradient, -(gradient @ gradient)
        size = 1.0
        while True:
            candidate = theta + size * direction
            new_loss, new_gradient = function(candidate)
            if new_loss <= loss + 1e-4 * size * slope or size < 1e-10:
                break
            size *= 0.5
        s, y = candidate - theta, new_gradient - gradient
        if s @ y > 1e-12:
            steps.append((s, y, 1.0 / (s @ y)))
            del steps[:-memory]
        converged = abs(loss - new_loss) <= tolerance * max(1.0, abs(loss))
        theta, loss, gradient = candidate, new_loss, new_gradient
        if converged:
            break
    return theta


def fit_any_cell(cells: np.ndarray, targets: np.ndarray, weights: np.ndarray, start: tuple[np.ndarray, float],
                 l2: float = SITE_L2, iterations: int = MAX_ITERATIONS) -> tuple[np.ndarray, float]:
    """The site head: a linear score per cell (N tiles x L cells x C channels), a tile's
    logit any_cell_logit of its cells' scores; weighted logistic loss with L2, by L-BFGS.
    Multiple-instance learning: a crack tile says that some cell holds a crack, not which."""
    count, per_tile, channels = cells.shape
    flat = np.asarray(cells, np.float32).reshape(count * per_tile, channels)
    # Fitted on centred channels: the same optimum (the bias is not regularised and takes up
    # the shift), but the ReLU activations' common offset no longer couples every weight to
    # the bias, and L-BFGS needs half the steps.
    mean = flat.mean(axis=0)
    x = flat - mean
    t = targets.astype(np.float32)
    share = (weights / weights.sum()).astype(np.float32)

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1].astype(np.float32), np.float32(theta[-1])
        scores = (x @ w + b).reshape(count, per_tile)
        logits = any_cell_logit(scores)
        loss = float(share @ (np.logaddexp(0, logits) - t * logits)) + 0.5 * l2 * float(theta[:-1] @ theta[:-1])
        # d logit / d score = each cell's softmax share of the tile
        per_cell = np.exp(scores - logits[:, None]) * (share * (sigmoid(logits) - t))[:, None]
        gradient = np.empty_like(theta)
        gradient[:-1] = x.T @ per_cell.reshape(-1) + l2 * theta[:-1]
        gradient[-1] = per_cell.sum()
        return loss, gradient

    first = np.concatenate([start[0], [start[1] + float(np.asarray(start[0], np.float32) @ mean)]])
    theta = lbfgs(loss_and_gradient, first.astype(np.float64), iterations, tolerance=1e-5)
    return theta[:-1], float(theta[-1] - theta[:-1].astype(np.float32) @ mean)


def balanced_weights(crack: np.ndarray) -> np.ndarray:
    """Each class half the weight: a head fitted with them assumes a crack share of 1/2."""
    crack = np.asarray(crack, bool)
    return np.where(crack, 0.5 / max(1, crack.sum()), 0.5 / max(1, (~crack).sum()))


def estimate_crack_share(logits: np.ndarray) -> float:
    """The share of crack tiles among tiles whose logits come from a head that assumed 1/2:
    EM on the prior (Saerens, Latinne and Decaestecker, 2002), bounded by CRACK_SHARE_BOUNDS."""
    low, high = CRACK_SHARE_BOUNDS
    share = 0.5
    for _ in range(200):
        updated = float(np.clip(np.mean(sigmoid(logits + np.log(share / (1 - share)))), low, high))
        if abs(updated - share) < 1e-5:
            return updated
        share = updated
    return share


def fit_site_head(cells: np.ndarray, crack: np.ndarray) -> tuple[np.ndarray, float]:
    """The site head on tiles' cells (N x L x C), each class half the weight, from zero."""
    return fit_any_cell(cells, crack, balanced_weights(crack), (np.zeros(cells.shape[-1]), 0.0))


def at_crack_share(head: tuple[np.ndarray, float], unlabelled_maps: np.ndarray) -> tuple[tuple[np.ndarray, float], float | None]:
    """A site head fitted at a crack share of 1/2, moved to the share estimated on the site's
    unlabelled tiles (its bias, which shifts every cell's score and so the tile's logit).
    Without unlabelled tiles it stays as it is, and the share is None."""
    if len(unlabelled_maps) == 0:
        return head, None
    share = estimate_crack_share(any_cell_logit(cell_logits(unlabelled_maps, head)))
    return (head[0], head[1] + float(np.log(share / (1 - share)))), share


def adapt(
    run: str | Path,
    labels: str | Path,
    out: str | Path,
    force: bool = False,
    on_step: Callable[[str], None] | None = None,
    keep_backbone_in_parent: bool = True,
) -> Adaptation:
    """A new run that knows the site in ``labels`` (a labels folder or any class-folder
    dataset of tiles) as well as the parent run's data. Refuses, writing nothing, if the
    parent's test accuracy would fall by more than MAX_PARENT_TEST_DROP points. A parent
    without its two-output LiteRT backbone gets it converted once, and kept in the parent
    unless ``keep_backbone_in_parent`` is False (the server writes nowhere but its labels
    and the runs it makes); the new run always keeps it."""
    step = on_step or (lambda line: None)
    started = time.perf_counter()
    keras_path = runs.model_path(run)
    if builtin_path(str(run)) == keras_path:
        keras_path = runs.model_path(builtin_parent(str(run), step))
    parent = runs.folder_of(keras_path)
    if keras_path.suffix != ".keras" or parent is None:
        raise CrackscanError(f"adapt starts from a run folder (its model.keras and training features), not {run}: "
                             "train a run first, e.g. crackscan train concrete/ --out runs/first")
    out = Path(out)
    if runs.is_run(out) and not force:
        raise CrackscanError(f"{out} already holds a run: pass --force to replace it")
    if (parent / runs.SITE_HEAD_FILE).is_file():
        origin = runs.read_json(parent, "metrics.json").get("adapted_from", "its parent run")
        raise CrackscanError(f"{parent} is itself adapted: adapt {origin} instead, with all your labels in one folder")
    info = read_keras_metadata(keras_path)
    positive = info.positive_index
    parent_head = read_crack_head(keras_path, info)

    _, samples = find_dataset_for_model(labels, info.class_names, info.positive_class)
    pixels, site_labels = read_labelled(samples, info.input_size)
    if len(site_labels) == 0:
        raise CrackscanError(f"no readable tiles in {labels}")
    site_crack = site_labels == positive
    if site_crack.min() == site_crack.max():
        raise CrackscanError(f"the labels in {labels} are all of one class: label crack and clear tiles")

    backbone = parent_backbone(parent, keras_path, step, keep_backbone_in_parent)
    base = runs.load_features(parent)
    if base is None:
        step("embedding the parent run's images once (a run made before features.npz was kept)")
        base = _embed_parent(parent, backbone, info)
    base_crack = base["labels"] == positive
    train, val, test = (base["splits"] == part for part in ("train", "val", "test"))
    step(f"embedding {len(samples)} site tiles in their {VIEWS} flips and rotations")
    view_pooled, view_maps = backbone(dihedral(pixels))  # VIEWS rows per tile
    view_cells = view_maps.reshape(len(view_maps), -1, view_maps.shape[-1])
    plain_pooled, plain_maps = view_pooled[::VIEWS], view_maps[::VIEWS]
    sample = unlabelled_site_tiles(labels, info.input_size, UNLABELLED_TILES)
    step(f"embedding {len(sample.pixels)} unlabelled tiles of {sample.photos} site photo(s)" if len(sample.pixels)
         else "no site photos to sample (labels.csv names none that exist): the site's crack share is not estimated")
    other_pooled, other_maps = backbone(sample.pixels) if len(sample.pixels) else (view_pooled[:0], view_maps[:0])

    def site_rows(tiles: np.ndarray) -> np.ndarray:
        return np.repeat(tiles, VIEWS) * VIEWS + np.tile(np.arange(VIEWS), len(tiles))

    step("fitting the site head, its crack share and the gate")
    everyone = np.arange(len(site_labels))
    balanced_head = fit_site_head(view_cells[site_rows(everyone)], np.repeat(site_crack, VIEWS))
    site_head, crack_share = at_crack_share(balanced_head, other_maps)
    # The gate: the site's tiles (labelled, in every view, and unlabelled) against the parent's
    # training images, each side half the weight.
    site_pooled = np.concatenate([view_pooled, other_pooled])
    gate_features = np.concatenate([base["features"][train], site_pooled])
    sides = np.concatenate([np.zeros(int(train.sum())), np.ones(len(site_pooled))])
    gate = fit_logistic(gate_features, sides, balanced_weights(sides), (np.zeros(gate_features.shape[1]), 0.0))
    head = SiteHead(parent_head, site_head, gate)

    step("cross-validating on the site labels")
    cv_probability = np.zeros(len(site_labels))
    for fold in _folds(site_crack, CV_FOLDS):
        kept = np.setdiff1d(everyone, fold)
        # Each fold starts from nothing, as the full fit did: the any-cell loss is not convex
        # (a crack tile's loss falls as its best cell rises), so a start at the full fit, which
        # saw the held-out tiles, could carry them into the fold's answer. The gate is the full
        # fit's: a held-out site tile is a site tile, and the gate is there to tell those apart.
        fold_head, _ = at_crack_share(fit_site_head(view_cells[site_rows(kept)], np.repeat(site_crack[kept], VIEWS)),
                                      other_maps)
        cv_probability[fold] = SiteHead(parent_head, fold_head, gate).crack_probability(plain_pooled[fold],
                                                                                          plain_maps[fold])

    truth = site_crack.astype(np.int8)
    site_before = tile_metrics(truth, sigmoid(crack_logit(plain_pooled, parent_head)) >= 0.5)
    site_after = tile_metrics(truth, cv_probability >= 0.5)
    # A built-in model's parent run ships test features, not validation ones.
    parent_check = {part: _parent_accuracy(head, base, mask, base_crack, parent, backbone, info) if mask.any() else None
                    for part, mask in (("val", val), ("test", test))}
    checked = parent_check["test"] or parent_check["val"]
    if checked is None:
        raise CrackscanError(f"{parent} holds no test or validation images to check the parent on: adapt a run trained "
                             "with a test split (e.g. --split 70:24:6)")
    test_before, test_after = checked["accuracy_before"], checked["accuracy_after"]
    drop = 100 * (test_before - test_after)
    if drop > MAX_PARENT_TEST_DROP + 1e-9:
        raise CrackscanError(f"adapting would cost the parent's test accuracy {drop:.2f} points "
                             f"({100 * test_before:.2f}% -> {100 * test_after:.2f}%; allowed "
                             f"{MAX_PARENT_TEST_DROP}): the labels may contradict the parent's data; nothing written")

    step("writing the new run")
    out = runs.prepare(out, force)
    save_site_model(keras_path, out / runs.MODEL_FILE, head, info, view_maps.shape[1:])
    head.save_to(out / runs.SITE_HEAD_FILE)
    for name in ("config.json", runs.SPLIT_FILE, runs.FEATURES_FILE):
        if (parent / name).is_file():
            with atomic_path(out / name) as temporary:
                try:  # the parent's features are never written in place, so a link is a copy for free
                    os.link(parent / name, temporary)
                except OSError:
                    shutil.copyfile(parent / name, temporary)
    write_bytes(out / runs.BACKBONE_FILE, backbone.model_content)
    said = (cv_probability >= 0.5).astype(int)
    matrix = np.zeros((2, 2), int)
    np.add.at(matrix, (site_crack.astype(int), said), 1)
    names = [info.negative_class, info.positive_class]
    order = [0, 1] if positive == 1 else [1, 0]  # rows and columns in the model's class order
    plots.confusion_matrix({"labels": [names[i] for i in order], "matrix": matrix[np.ix_(order, order)].tolist()},
                           out / SITE_CONFUSION_PLOT, "Site labels, cross-validated, after adapting")
    counts = {name: int(np.sum(site_labels == i)) for i, name in enumerate(info.class_names)}
    metrics = {
        "adapted_from": str(parent.resolve()),
        "labels": str(Path(labels).resolve()),
        "site_tiles": counts,
        "unlabelled_site_tiles": {"tiles": len(sample.pixels), "photos": sample.photos},
        "site_crack_share": None if crack_share is None else round(crack_share, 4),
        "site_cross_validated": {"folds": len(_folds(site_crack, CV_FOLDS)), "before": site_before,
                                 "after": site_after},
        "parent_val": parent_check["val"],
        "parent_test": {**checked, "split": "test" if parent_check["test"] else "val", "change_points": -drop},
        "method": {"head": "parent + gate * (site - parent); site: any-cell logistic on the site map, bias at the "
                           "site's crack share (EM); gate: logistic, site tiles vs the parent's training images",
                   "site_layer": SITE_LAYER, "site_l2": SITE_L2, "gate_l2": L2, "views_per_tile": VIEWS},
        "test": {"count": checked["images"], "accuracy": test_after},
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    runs.finish(out, runs.data_root(parent), {"adapted_from": str(parent.resolve())})
    return Adaptation(out, metrics)


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
    out = runs.prepare(folder, force=True)
    save_keras_model(classifier.model, out / runs.MODEL_FILE, info)
    config.save(out / "config.json")
    runs.save_features(out, shipped["features"] * shipped["feature_scale"], shipped["labels"], shipped["splits"])
    write_bytes(out / runs.BACKBONE_FILE, keras_to_litert(feature_extractor(classifier.model)))
    write_text(out / "metrics.json", json.dumps({"builtin": name, "trained_on": model.trained_on}, indent=2) + "\n")
    return runs.finish(out, out, {"builtin": name}).parent


def crack_logit(features: np.ndarray, head: tuple[np.ndarray, float]) -> np.ndarray:
    return np.asarray(features, np.float32) @ np.asarray(head[0], np.float32) + np.float32(head[1])


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
            after[movable] = head.crack_probability(*backbone(pixels)) >= 0.5
    return {"images": int(part.sum()), "accuracy_before": float(np.mean((parent_p >= 0.5) == truth)),
            "accuracy_after": float(np.mean(after == truth)), "embedded_again": int(len(movable)), "bound": bound}


def _parent_pixels(parent: Path, rows: np.ndarray, info: Any) -> np.ndarray | None:
    try:
        root, listed = runs.data_root(parent), runs.split_rows(parent)
        samples = [Sample(root / listed[i]["path"], 0) for i in rows]
        pixels, read = read_labelled(samples, info.input_size)
    except CrackscanError:
        return None
    return pixels if len(read) == len(rows) else None


def save_site_model(parent_keras: Path, path: Path, head: SiteHead, info: Any, site_map_shape: tuple[int, ...]) -> Path:
    """The parent's model with its dense head replaced by the site head's layers, written as
    a .keras archive: end to end (pixels in, class probabilities out), so every runtime and
    export takes it as any other run's model. ``site_map_shape`` is (height, width, channels)
    of the site map.

    The archive is edited, not made by Keras: the backbone gets the site map as a second
    output, and the new layers' configs and weights are put in beside it; its weights are
    copied as they are. Loading Keras for this would cost more than the whole adaptation
    (about 9 s of a 10 s budget); a test loads the result with Keras and checks it against
    the NumPy head. Every layer is a stock Keras layer, so the file loads without crackscan:
    the any-cell logit's sigmoid is the share of a softmax over the cells' scores and one
    fixed zero score that the cells do not hold."""
    import h5py

    with zipfile.ZipFile(parent_keras) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(entries["config.json"])
    layers = config["config"]["layers"]
    old = next(layer for layer in layers if layer["name"] == "classes")
    pool = old["inbound_nodes"][0]["args"][0]
    width = pool["config"]["shape"][-1]
    dtype = {k: v for k, v in old["config"]["dtype"].items() if k != "shared_object_id"}
    backbone = next(layer for layer in layers if layer["class_name"] == "Functional")
    outputs = backbone["config"]["output_layers"]
    last = outputs if isinstance(outputs[0], str) else outputs[0]
    backbone["config"]["output_layers"] = [last, [SITE_LAYER, 0, 0]]
    rows, cols, channels = site_map_shape
    cells = rows * cols

    def tensor(name: str, shape: list, index: int = 0) -> dict[str, Any]:
        return {"class_name": "__keras_tensor__", "config": {"shape": shape, "dtype": "float32",
                                                             "keras_history": [name, 0, index]}}

    def layer(class_name: str, name: str, inputs: Any, shape: Any, **settings: Any) -> dict[str, Any]:
        return {"module": "keras.layers", "class_name": class_name, "registered_name": None, "name": name,
                "config": {"name": name, "trainable": True, "dtype": dtype, **settings},
                "build_config": {"input_shape": shape}, "inbound_nodes": [{"args": [inputs], "kwargs": {}}]}

    def dense(activation: str, use_bias: bool = True) -> dict[str, Any]:
        settings = {k: v for k, v in old["config"].items() if k not in ("name", "dtype", "trainable")}
        settings.update(units=1, activation=activation, use_bias=use_bias)
        return settings

    one = [None, 1]
    site_map = tensor(backbone["name"], [None, rows, cols, channels], index=1)
    # In the order Keras itself writes this graph (by depth), which is the order it names
    # the layers' weight groups in: dense, dense_1, ... as the Dense layers come.
    new_layers = [
        layer("Dense", "site_cells", site_map, [None, rows, cols, channels], **dense("linear")),
        layer("Reshape", "site_cell_scores", tensor("site_cells", [None, rows, cols, 1]), [None, rows, cols, 1],
              target_shape=[cells]),
        layer("Dense", "no_crack_score", pool, [None, width], **dense("linear", use_bias=False)),
        layer("Concatenate", "site_scores", [tensor("site_cell_scores", [None, cells]), tensor("no_crack_score", one)],
              [[None, cells], one], axis=-1),
        layer("Softmax", "site_shares", tensor("site_scores", [None, cells + 1]), [None, cells + 1], axis=-1),
        layer("Dense", "parent_head", pool, [None, width], **dense("sigmoid")),
        layer("Dense", "site_head", tensor("site_shares", [None, cells + 1]), [None, cells + 1],
              **dense("linear", use_bias=False)),
        layer("Dense", "gate_head", pool, [None, width], **dense("sigmoid")),
        layer("Subtract", "site_minus_parent", [tensor("site_head", one), tensor("parent_head", one)], [one, one]),
        layer("Multiply", "gated", [tensor("gate_head", one), tensor("site_minus_parent", one)], [one, one]),
        layer("Add", "crack_probability", [tensor("parent_head", one), tensor("gated", one)], [one, one]),
        layer("Rescaling", "clear_probability", tensor("crack_probability", one), one, scale=-1.0, offset=1.0),
        layer("Concatenate", "classes", [tensor("clear_probability", one), tensor("crack_probability", one)]
              if info.positive_index == 1 else [tensor("crack_probability", one), tensor("clear_probability", one)],
              [one, one], axis=-1),
    ]
    config["config"]["layers"] = [entry for entry in layers if entry is not old] + new_layers
    entries["config.json"] = json.dumps(config).encode()

    # The parent's input scaling is "rescaling", so the new one is "rescaling_1", and so on.
    site_sum = np.ones((cells + 1, 1), np.float32)
    site_sum[-1] = 0  # every share but the zero score's: the crack probability
    values = {
        "dense": [np.asarray(head.site[0], np.float32)[:, None], np.array([head.site[1]], np.float32)],
        "dense_1": [np.zeros((width, 1), np.float32)],
        "dense_2": [np.asarray(head.parent[0], np.float32)[:, None], np.array([head.parent[1]], np.float32)],
        "dense_3": [site_sum],
        "dense_4": [np.asarray(head.gate[0], np.float32)[:, None], np.array([head.gate[1]], np.float32)],
    }
    buffer = io.BytesIO(entries["model.weights.h5"])
    with h5py.File(buffer, "r+") as weights:
        del weights["layers/dense"]
        for group, arrays in values.items():
            stored = weights.create_group(f"layers/{group}/vars")
            for index, array in enumerate(arrays):
                stored.create_dataset(str(index), data=array)
        for group in ("reshape", "concatenate", "softmax", "subtract", "multiply", "add", "rescaling_1", "concatenate_1"):
            weights.create_group(f"layers/{group}/vars")
    entries["model.weights.h5"] = buffer.getvalue()
    entries[METADATA_NAME] = info.to_json().encode()
    # Stored, not deflated, as Keras writes it: compressing the backbone's weights took a second.
    with atomic_path(path) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as rewritten:
        for name, content in entries.items():
            rewritten.writestr(name, content)
    return Path(path)


def parent_backbone(parent: Path, keras_path: Path, step: Callable[[str], None], keep: bool = True) -> BackboneRunner:
    """The run's frozen backbone as LiteRT, pooled features and site map: the one training
    kept, or converted from the Keras model (about 20 s) and, with ``keep``, kept in the run
    for every later one. Runs made before the site map kept a one-output backbone, which is
    converted again once."""
    cached = parent / runs.BACKBONE_FILE
    if cached.is_file():
        try:
            return BackboneRunner(cached.read_bytes(), 64)
        except CrackscanError:
            pass
    step(f"converting the run's backbone to LiteRT{' once (kept in the run for next time)' if keep else ''}")
    model, _ = load_keras_model(keras_path)
    content = keras_to_litert(feature_extractor(model))
    if keep:
        write_bytes(cached, content)
    return BackboneRunner(content, 64)


def _folds(crack: np.ndarray, folds: int) -> list[np.ndarray]:
    """Stratified folds, dealt in order of a fixed shuffle: the same labels, the same folds."""
    order = np.random.default_rng(0).permutation(len(crack))
    crack = np.asarray(crack, bool)
    count = max(2, min(folds, int(min(crack.sum(), (~crack).sum()))))
    assigned = np.zeros(len(crack), int)
    for value in (0, 1):
        members = order[crack[order] == value]
        assigned[members] = np.arange(len(members)) % count
    return [np.flatnonzero(assigned == k) for k in range(count)]


def _embed_parent(parent: Path, backbone: BackboneRunner, info: Any) -> dict[str, np.ndarray]:
    root = runs.data_root(parent)
    rows = runs.split_rows(parent)
    samples = [Sample(root / r["path"], info.class_names.index(r["class"])) for r in rows]
    pixels, labels = read_labelled(samples, info.input_size)
    if len(labels) != len(rows):
        raise CrackscanError(f"some of {parent}'s training images are gone from {root}: train the run again")
    features = backbone.pooled(pixels)
    splits = np.array([r["split"] for r in rows])
    runs.save_features(parent, features, labels, splits)
    return {"features": features.astype(np.float32), "labels": labels, "splits": splits}
