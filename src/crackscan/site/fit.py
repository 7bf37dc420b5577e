"""The fits behind site adaptation, in NumPy: deterministic, converged, and fractions of a
second on a CPU where a Keras fit takes seconds.

A weighted logistic regression (the gate), a multiple-instance "any cell" logistic fit (the
site head), both by L-BFGS; the EM estimate of a site's crack share (Saerens, Latinne and
Decaestecker, 2002); stratified folds; the eight flips and rotations of a tile.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..model.heads import any_cell_logit, cell_logits, sigmoid

L2 = 1e-3  # the gate's
# The site head's: a few dozen tiles, hundreds of features. With 25 + 25 labels, 3e-3 to 0.1
# measured alike on the public photo sets (benchmarks/site_adaptation.py); with 10 + 10,
# 1e-2 overfit masonry (F1 0.71 against 0.76 at 3e-2) and 0.1 underfit roads.
SITE_L2 = 3e-2
MAX_ITERATIONS = 200
# An estimated crack share is kept inside these bounds: a site with no cracks at all, or
# nothing else, is not what a few dozen labels of both kinds describe.
CRACK_SHARE_BOUNDS = (0.02, 0.98)


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


def stratified_folds(crack: np.ndarray, folds: int) -> list[np.ndarray]:
    """Stratified folds, dealt in order of a fixed shuffle: the same labels, the same folds."""
    order = np.random.default_rng(0).permutation(len(crack))
    crack = np.asarray(crack, bool)
    count = max(2, min(folds, int(min(crack.sum(), (~crack).sum()))))
    assigned = np.zeros(len(crack), int)
    for value in (0, 1):
        members = order[crack[order] == value]
        assigned[members] = np.arange(len(members)) % count
    return [np.flatnonzero(assigned == k) for k in range(count)]
