"""Site adaptation: a run's head refitted on its own training features plus a few labelled
tiles of the user's photos, in seconds, into a new run folder every command takes.

The backbone is frozen, so the parent's training images never pass through it again: their
pooled features are cached in the run (features.npz). Only the site tiles are embedded,
each in its eight flips and rotations (a crack is a crack at any angle). The new head is
a logistic fit, warm-started from the parent's, on the parent's training features and the
site tiles, the site weighted so that a few dozen tiles are heard over thousands of
patches without drowning them out. What the labels say about the change is measured
before anything is written: cross-validated accuracy and F1 on the site labels with the
parent's head and with the adapted one, and the parent's own test accuracy with each.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import _tf, plots, runs
from .builtin import builtin_path
from .data import Sample, find_dataset_for_model, read_labelled
from .errors import CrackscanError
from .evaluate import tile_metrics
from .files import atomic_path, write_bytes, write_text
from .model import METADATA_NAME, load_keras_model, read_head_weights, read_keras_metadata
from .runtime import LiteRTRunner, SiteHead, keras_to_litert, sigmoid

# In the site head's data, the site's labelled tiles together weigh as much as the parent's
# training set (SITE_SHARE of it).
SITE_SHARE = 1.0
L2 = 1e-3
MAX_ITERATIONS = 200
CV_FOLDS = 5
SITE_CONFUSION_PLOT = "site_confusion_matrix.png"
VIEWS = 8  # dihedral() gives each tile's eight flips and rotations
MAX_PARENT_TEST_DROP = 0.2  # points of the parent's test accuracy adapt may cost


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


def crack_logit(features: np.ndarray, head: tuple[np.ndarray, float]) -> np.ndarray:
    return features @ head[0] + head[1]


def adapt(
    run: str | Path,
    labels: str | Path,
    out: str | Path,
    force: bool = False,
    on_step: Callable[[str], None] | None = None,
    keep_backbone_in_parent: bool = True,
) -> Adaptation:
    """A new run whose head knows the site in ``labels`` (a labels folder or any class-folder
    dataset of tiles) as well as the parent run's data. Refuses, writing nothing, if the
    parent's test accuracy would fall by more than MAX_PARENT_TEST_DROP points. A parent
    without its backbone as LiteRT gets it converted once, and kept in the parent unless
    ``keep_backbone_in_parent`` is False (the server writes nowhere but its labels and the
    runs it makes); the new run always keeps it."""
    step = on_step or (lambda line: None)
    started = time.perf_counter()
    keras_path = runs.model_path(run)
    parent = runs.folder_of(keras_path)
    if builtin_path(str(run)) == keras_path:
        raise CrackscanError(f"{run} is a built-in model, which carries no training features to adapt with (they would "
                             "not fit the package's size): adapt a run instead; `make models` leaves one per built-in "
                             f"model in runs/builtin/{run}, or train one with crackscan train")
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
    positive, negative = info.positive_index, 1 - info.positive_index
    kernel, bias = read_head_weights(keras_path)
    parent_head = (kernel[:, positive] - kernel[:, negative], float(bias[positive] - bias[negative]))

    dataset, to_model_label = find_dataset_for_model(labels, info.class_names, info.positive_class)
    samples = [Sample(s.path, to_model_label[s.label]) for s in dataset.samples]
    pixels, site_labels = read_labelled(samples, info.input_size)
    if len(site_labels) == 0:
        raise CrackscanError(f"no readable tiles in {labels}")
    site_crack = (site_labels == positive).astype(np.float64)
    if site_crack.min() == site_crack.max():
        raise CrackscanError(f"the labels in {labels} are all of one class: label crack and clear tiles")

    backbone = parent_backbone(parent, keras_path, step, keep_backbone_in_parent)
    base = runs.load_features(parent)
    if base is None:
        step("embedding the parent run's images once (a run made before features.npz was kept)")
        base = _embed_parent(parent, backbone, info)
    base_crack = (base["labels"] == positive).astype(np.float64)
    train, val, test = (base["splits"] == part for part in ("train", "val", "test"))
    step(f"embedding {len(samples)} site tiles in their {VIEWS} flips and rotations")
    site_views = backbone(dihedral(pixels)).astype(np.float32)  # VIEWS rows per tile
    site_plain = site_views[::VIEWS]

    base_features, base_targets = base["features"][train], base_crack[train]

    def fit(site_rows: np.ndarray, start: SiteHead | None = None, gate: tuple | None = None) -> SiteHead:
        rows = np.repeat(site_rows, VIEWS) * VIEWS + np.tile(np.arange(VIEWS), len(site_rows))
        site_features, site_targets = site_views[rows], np.repeat(site_crack[site_rows], VIEWS)
        features = np.concatenate([base_features, site_features])
        # The site head learns the site without forgetting the parent's images (they are in
        # its data too, so a parent image the gate lets through is still answered well).
        weights = np.concatenate([np.ones(len(base_features)), np.full(len(rows), SITE_SHARE * len(base_features) / len(rows))])
        site = fit_logistic(features, np.concatenate([base_targets, site_targets]), weights,
                            start.site if start else parent_head)
        if gate is not None:
            return SiteHead(parent_head, site, gate)
        # The gate: the site's tiles against the parent's training images, each side half the weight.
        sides = np.concatenate([np.zeros(len(base_features)), np.ones(len(rows))])
        balance = np.concatenate([np.full(len(base_features), 1 / len(base_features)), np.full(len(rows), 1 / len(rows))])
        gate = fit_logistic(features, sides, balance, start.gate if start else (np.zeros(features.shape[1]), 0.0))
        return SiteHead(parent_head, site, gate)

    def accuracy(part: np.ndarray, crack_probability: Callable[[np.ndarray], np.ndarray]) -> float:
        return float(np.mean((crack_probability(base["features"][part]) >= 0.5) == (base_crack[part] > 0)))

    def parent_only(features: np.ndarray) -> np.ndarray:
        return sigmoid(crack_logit(features, parent_head))

    step("fitting the site head and its gate")
    head = fit(np.arange(len(site_labels)))
    step("cross-validating on the site labels")
    cv_probability = np.zeros(len(site_labels))
    for fold in _folds(site_crack, CV_FOLDS):
        held = np.zeros(len(site_labels), bool)
        held[fold] = True
        # From the full fit: the problems are convex and solved to convergence, so the start
        # changes how soon a fold's fit ends, not where. The gate is the full fit's: a held-out
        # site tile is a site tile, and the gate is there to tell those from the parent's images.
        cv_probability[fold] = fit(np.flatnonzero(~held), head, head.gate).crack_probability(site_plain[fold])

    truth = site_crack.astype(np.int8)
    site_before = tile_metrics(truth, parent_only(site_plain) >= 0.5)
    site_after = tile_metrics(truth, cv_probability >= 0.5)
    parent_test_before, parent_test_after = accuracy(test, parent_only), accuracy(test, head.crack_probability)
    drop = 100 * (parent_test_before - parent_test_after)
    if drop > MAX_PARENT_TEST_DROP + 1e-9:
        raise CrackscanError(f"adapting would cost the parent's test accuracy {drop:.2f} points "
                             f"({100 * parent_test_before:.2f}% -> {100 * parent_test_after:.2f}%; allowed "
                             f"{MAX_PARENT_TEST_DROP}): the labels may contradict the parent's data; nothing written")

    step("writing the new run")
    out = runs.prepare(out, force)
    save_site_model(keras_path, out / runs.MODEL_FILE, head, info)
    head.save_to(out / runs.SITE_HEAD_FILE)
    for name in ("config.json", runs.SPLIT_FILE, runs.FEATURES_FILE):
        if (parent / name).is_file():
            with atomic_path(out / name) as temporary:
                shutil.copyfile(parent / name, temporary)
    write_bytes(out / runs.BACKBONE_FILE, backbone.model_content)
    said = (cv_probability >= 0.5).astype(int)
    matrix = np.zeros((2, 2), int)
    np.add.at(matrix, ((site_labels == positive).astype(int), said), 1)
    names = [info.negative_class, info.positive_class]
    order = [0, 1] if positive == 1 else [1, 0]  # rows and columns in the model's class order
    plots.confusion_matrix({"labels": [names[i] for i in order], "matrix": matrix[np.ix_(order, order)].tolist()},
                           out / SITE_CONFUSION_PLOT, "Site labels, cross-validated, after adapting")
    counts = {name: int(np.sum(site_labels == i)) for i, name in enumerate(info.class_names)}
    metrics = {
        "adapted_from": str(parent.resolve()),
        "labels": str(Path(labels).resolve()),
        "site_tiles": counts,
        "site_cross_validated": {"folds": len(_folds(site_crack, CV_FOLDS)), "before": site_before,
                                 "after": site_after},
        "parent_val": {"images": int(val.sum()), "accuracy_before": accuracy(val, parent_only),
                       "accuracy_after": accuracy(val, head.crack_probability)},
        "parent_test": {"images": int(test.sum()), "accuracy_before": parent_test_before,
                        "accuracy_after": parent_test_after, "change_points": -drop},
        "method": {"head": "parent + gate * (site - parent); site head and gate logistic (L-BFGS)",
                   "site_share": SITE_SHARE, "l2": L2, "views_per_tile": VIEWS},
        "test": {"count": int(test.sum()), "accuracy": parent_test_after},
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    runs.finish(out, runs.data_root(parent), {"adapted_from": str(parent.resolve())})
    return Adaptation(out, metrics)


def save_site_model(parent_keras: Path, path: Path, head: SiteHead, info: Any) -> Path:
    """The parent's model with its dense head replaced by the site head's layers, written as
    a .keras archive: end to end (pixels in, class probabilities out), so every runtime and
    export takes it as any other run's model.

    The archive is edited, not made by Keras: the new layers' configs and weights are put
    in beside the parent's backbone, which is copied as it is. Loading Keras for this would
    cost more than the whole adaptation (about 9 s of a 10 s budget); a test loads the
    result with Keras and checks it against the NumPy head."""
    import h5py

    with zipfile.ZipFile(parent_keras) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(entries["config.json"])
    layers = config["config"]["layers"]
    old = next(layer for layer in layers if layer["name"] == "classes")
    features = old["inbound_nodes"][0]["args"][0]
    width = features["config"]["shape"][-1]
    dtype = {k: v for k, v in old["config"]["dtype"].items() if k != "shared_object_id"}

    def tensor(name: str) -> dict[str, Any]:
        return {"class_name": "__keras_tensor__", "config": {"shape": [None, 1], "dtype": "float32",
                                                             "keras_history": [name, 0, 0]}}

    def layer(class_name: str, name: str, inputs: Any, shape: Any, **settings: Any) -> dict[str, Any]:
        return {"module": "keras.layers", "class_name": class_name, "registered_name": None, "name": name,
                "config": {"name": name, "trainable": True, "dtype": dtype, **settings},
                "build_config": {"input_shape": shape}, "inbound_nodes": [{"args": [inputs], "kwargs": {}}]}

    dense = {k: v for k, v in old["config"].items() if k not in ("name", "dtype", "trainable")}
    dense.update(units=1, activation="sigmoid")
    pair = [[None, 1], [None, 1]]
    new_layers = [layer("Dense", f"{part}_head", features, [None, width], **dense) for part in ("parent", "site", "gate")]
    new_layers += [
        layer("Subtract", "site_minus_parent", [tensor("site_head"), tensor("parent_head")], pair),
        layer("Multiply", "gated", [tensor("gate_head"), tensor("site_minus_parent")], pair),
        layer("Add", "crack_probability", [tensor("parent_head"), tensor("gated")], pair),
        layer("Rescaling", "clear_probability", tensor("crack_probability"), [None, 1], scale=-1.0, offset=1.0),
        layer("Concatenate", "classes", [tensor("clear_probability"), tensor("crack_probability")]
              if info.positive_index == 1 else [tensor("crack_probability"), tensor("clear_probability")], pair, axis=-1),
    ]
    config["config"]["layers"] = [entry for entry in layers if entry is not old] + new_layers
    entries["config.json"] = json.dumps(config).encode()

    # Keras names weight groups by layer class in model order: the parent's one Dense was
    # "dense"; the three heads are dense, dense_1, dense_2, and the parent's input scaling
    # is "rescaling", so the new one is "rescaling_1".
    buffer = io.BytesIO(entries["model.weights.h5"])
    with h5py.File(buffer, "r+") as weights:
        del weights["layers/dense"]
        for group, part in (("dense", "parent"), ("dense_1", "site"), ("dense_2", "gate")):
            values = weights.create_group(f"layers/{group}/vars")
            kernel, bias = getattr(head, part)
            values.create_dataset("0", data=np.asarray(kernel, np.float32)[:, None])
            values.create_dataset("1", data=np.array([bias], np.float32))
        for group in ("subtract", "multiply", "add", "rescaling_1", "concatenate"):
            weights.create_group(f"layers/{group}/vars")
    entries["model.weights.h5"] = buffer.getvalue()
    entries[METADATA_NAME] = info.to_json().encode()
    with atomic_path(path) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as rewritten:
        for name, content in entries.items():
            rewritten.writestr(name, content)
    return Path(path)


def parent_backbone(parent: Path, keras_path: Path, step: Callable[[str], None], keep: bool = True) -> LiteRTRunner:
    """The run's frozen backbone as a LiteRT runner: the one training kept, or converted from
    the Keras model (about 20 s) and, with ``keep``, kept in the run for every later one."""
    cached = parent / runs.BACKBONE_FILE
    if cached.is_file():
        return LiteRTRunner(cached.read_bytes(), 64)
    step(f"converting the run's backbone to LiteRT{' once (kept in the run for next time)' if keep else ''}")
    model, _ = load_keras_model(keras_path)
    content = keras_to_litert(_tf.keras().Model(model.inputs, model.get_layer("pool").output))
    if keep:
        write_bytes(cached, content)
    return LiteRTRunner(content, 64)


def _folds(crack: np.ndarray, folds: int) -> list[np.ndarray]:
    """Stratified folds, dealt in order of a fixed shuffle: the same labels, the same folds."""
    order = np.random.default_rng(0).permutation(len(crack))
    count = max(2, min(folds, int(min(crack.sum(), (1 - crack).sum()))))
    assigned = np.zeros(len(crack), int)
    for value in (0, 1):
        members = order[crack[order] == value]
        assigned[members] = np.arange(len(members)) % count
    return [np.flatnonzero(assigned == k) for k in range(count)]


def _embed_parent(parent: Path, backbone: LiteRTRunner, info: Any) -> dict[str, np.ndarray]:
    root = runs.data_root(parent)
    rows = runs.split_rows(parent)
    samples = [Sample(root / r["path"], info.class_names.index(r["class"])) for r in rows]
    pixels, labels = read_labelled(samples, info.input_size)
    if len(labels) != len(rows):
        raise CrackscanError(f"some of {parent}'s training images are gone from {root}: train the run again")
    features = backbone(pixels)
    splits = np.array([r["split"] for r in rows])
    runs.save_features(parent, features, labels, splits)
    return {"features": features.astype(np.float32), "labels": labels, "splits": splits}
