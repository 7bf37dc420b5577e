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
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import _tf, runs
from .data import Sample, find_dataset_for_model, read_labelled
from .errors import CrackscanError
from .evaluate import tile_metrics
from .files import atomic_path, write_bytes, write_text
from .model import load_keras_model, read_head_weights, read_keras_metadata, save_with_head
from .runtime import LiteRTRunner, keras_to_litert

# The site's labelled tiles together weigh this share of the parent's training set: the
# first of these that keeps the parent's validation accuracy within MAX_PARENT_VAL_DROP.
SITE_SHARES = (1.0, 0.3, 0.1)
MAX_PARENT_VAL_DROP = 0.1  # points; the test split is only reported, never tuned on
L2 = 1e-3
MAX_ITERATIONS = 200
CV_FOLDS = 5
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
        error = share * (_sigmoid(logits) - t)
        gradient = np.empty_like(theta)
        gradient[:-1] = x.T @ error + l2 * theta[:-1]
        gradient[-1] = error.sum()
        return loss, gradient

    theta = lbfgs(loss_and_gradient, np.concatenate([start[0], [start[1]]]).astype(np.float64), iterations)
    return theta[:-1], float(theta[-1])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))


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
    if keras_path.suffix != ".keras" or parent is None:
        raise CrackscanError(f"adapt starts from a run folder (its model.keras and training features), not {run}: "
                             "train a run first, e.g. crackscan train concrete/ --out runs/first")
    out = Path(out)
    if runs.is_run(out) and not force:
        raise CrackscanError(f"{out} already holds a run: pass --force to replace it")
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

    def fit(site_rows: np.ndarray, share: float, start: tuple[np.ndarray, float] = parent_head
            ) -> tuple[np.ndarray, float]:
        rows = np.repeat(site_rows, VIEWS) * VIEWS + np.tile(np.arange(VIEWS), len(site_rows))
        features = np.concatenate([base["features"][train], site_views[rows]])
        targets = np.concatenate([base_crack[train], np.repeat(site_crack[site_rows], VIEWS)])
        weights = np.concatenate([np.ones(int(train.sum())), np.full(len(rows), share * train.sum() / len(rows))])
        return fit_logistic(features, targets, weights, start)

    def accuracy(part: np.ndarray, head: tuple[np.ndarray, float]) -> float:
        return float(np.mean((crack_logit(base["features"][part], head) >= 0) == (base_crack[part] > 0)))

    step("fitting the head")
    parent_val = accuracy(val, parent_head)
    tried = []
    for share in SITE_SHARES:
        head = fit(np.arange(len(site_labels)), share)
        tried.append((100 * (parent_val - accuracy(val, head)), share, head))
        if tried[-1][0] <= MAX_PARENT_VAL_DROP + 1e-9:
            break
    else:  # none keeps the parent's validation accuracy: the share that costs it least
        _, share, head = min(tried, key=lambda attempt: attempt[0])
    step("cross-validating on the site labels")
    cv_logits = np.zeros(len(site_labels))
    for fold in _folds(site_crack, CV_FOLDS):
        held = np.zeros(len(site_labels), bool)
        held[fold] = True
        # From the full fit: the problem is convex and solved to convergence, so the start
        # changes how soon a fold's fit ends, not where.
        cv_logits[fold] = crack_logit(site_plain[fold], fit(np.flatnonzero(~held), share, head))

    truth = site_crack.astype(np.int8)
    site_before = tile_metrics(truth, crack_logit(site_plain, parent_head) >= 0)
    site_after = tile_metrics(truth, cv_logits >= 0)
    parent_test_before, parent_test_after = accuracy(test, parent_head), accuracy(test, head)
    drop = 100 * (parent_test_before - parent_test_after)
    if drop > MAX_PARENT_TEST_DROP + 1e-9:
        raise CrackscanError(f"adapting would cost the parent's test accuracy {drop:.2f} points "
                             f"({100 * parent_test_before:.2f}% -> {100 * parent_test_after:.2f}%; allowed "
                             f"{MAX_PARENT_TEST_DROP}): the labels may contradict the parent's data; nothing written")

    out = runs.prepare(out, force)
    # Softmax over two classes sees only the difference of their logits: put it all on the crack class.
    new_kernel, new_bias = np.zeros_like(kernel), np.zeros_like(bias)
    new_kernel[:, positive], new_bias[positive] = head[0], head[1]
    save_with_head(keras_path, out / runs.MODEL_FILE, new_kernel, new_bias, info)
    for name in ("config.json", runs.SPLIT_FILE, runs.FEATURES_FILE):
        if (parent / name).is_file():
            with atomic_path(out / name) as temporary:
                shutil.copyfile(parent / name, temporary)
    write_bytes(out / runs.BACKBONE_FILE, backbone.model_content)
    counts = {name: int(np.sum(site_labels == i)) for i, name in enumerate(info.class_names)}
    metrics = {
        "adapted_from": str(parent.resolve()),
        "labels": str(Path(labels).resolve()),
        "site_tiles": counts,
        "site_cross_validated": {"folds": len(_folds(site_crack, CV_FOLDS)), "before": site_before,
                                 "after": site_after},
        "parent_val": {"images": int(val.sum()), "accuracy_before": parent_val, "accuracy_after": accuracy(val, head)},
        "parent_test": {"images": int(test.sum()), "accuracy_before": parent_test_before,
                        "accuracy_after": parent_test_after, "change_points": -drop},
        "method": {"head": "logistic (L-BFGS), warm-started from the parent's", "site_share": share,
                   "l2": L2, "views_per_tile": VIEWS},
        "test": {"count": int(test.sum()), "accuracy": parent_test_after},
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    runs.finish(out, runs.data_root(parent), {"adapted_from": str(parent.resolve())})
    return Adaptation(out, metrics)


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
