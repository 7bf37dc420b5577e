"""Heads on the frozen backbone's features, in NumPy: the logistic crack head, the any-cell
site head and the gated site model ``adapt`` makes.

They run without TensorFlow: an adapted run is served as a LiteRT backbone and this head,
and adaptation fits them in seconds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import CrackscanError
from ..files import atomic_path


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))


def crack_logit(features: np.ndarray, head: tuple[np.ndarray, float]) -> np.ndarray:
    """A logistic head's crack logit over pooled features (N x D -> N)."""
    return np.asarray(features, np.float32) @ np.asarray(head[0], np.float32) + np.float32(head[1])


def cell_logits(site_map: np.ndarray, head: tuple[np.ndarray, float]) -> np.ndarray:
    """A linear score for every cell of every site map: N x H x W x C -> N x (H*W)."""
    maps = np.asarray(site_map, np.float32)
    cells = maps.reshape(len(maps), -1, maps.shape[-1])
    return cells @ np.asarray(head[0], np.float32) + np.float32(head[1])


def any_cell_logit(cells: np.ndarray) -> np.ndarray:
    """A tile's crack logit from its cells' scores: log(sum(exp(score))), a smooth "any cell"
    (a crack anywhere in the tile makes the tile a crack). Its sigmoid is the share of a
    softmax over the cells and one fixed zero score, which is how the Keras model computes it."""
    top = cells.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.exp(cells - top).sum(axis=1))


@dataclasses.dataclass
class SiteHead:
    """The head ``adapt`` makes: the parent's logistic head, a site head and a gate.

    The parent head and the gate read the pooled features; the site head scores each cell of
    the site map (classifier.SITE_LAYER) and calls the tile a crack if any cell is one
    (any_cell_logit), its bias holding the site's crack share. The gate says how much a tile
    looks like the site's tiles rather than the parent's training images. Crack probability
    = parent + gate * (site - parent): the parent's own images keep the parent's answers, the
    site's tiles get the site head's. Each part is a (weights, bias) pair."""

    parent: tuple[np.ndarray, float]
    site: tuple[np.ndarray, float]
    gate: tuple[np.ndarray, float]

    def parts(self, pooled: np.ndarray, site_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parent, gate = (sigmoid(crack_logit(pooled, head)) for head in (self.parent, self.gate))
        return parent, sigmoid(any_cell_logit(cell_logits(site_map, self.site))), gate

    def crack_probability(self, pooled: np.ndarray, site_map: np.ndarray) -> np.ndarray:
        parent, site, gate = self.parts(pooled, site_map)
        return parent + gate * (site - parent)

    def save_to(self, path: Path) -> None:
        arrays = {f"{name}_{part}": np.asarray(value, np.float32) for name in ("parent", "site", "gate")
                  for part, value in zip(("weights", "bias"), getattr(self, name))}
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: Path) -> "SiteHead":
        try:
            with np.load(path, allow_pickle=False) as saved:
                return cls(*((saved[f"{name}_weights"], float(saved[f"{name}_bias"])) for name in ("parent", "site", "gate")))
        except (OSError, ValueError, KeyError) as error:
            raise CrackscanError(f"cannot read the site head {path}: {error}") from None
