"""Cracks as objects, measured from a crack mask: length, width profile, orientation, type.

- **Cracks**: the mask's crack pixels, with fragments closer than ``join_gap_px`` (15) joined
  into one crack (a crack the mask breaks at a shadow is still one crack); specks smaller than
  ``min_area_px`` are dropped, and so are marks shorter than MIN_CRACK_LENGTH_PX (20) or than
  MIN_CRACK_ASPECT (3) times their width: a crack is long and thin, a shorter mark is a
  speck, a pore or a spall edge the mask saw. Chosen on the validation photos of the shared
  mask sets (never their test fifths), crackscan-seg's masks against the true ones: crack
  counts within one of the truth's in 58% of photos with a 5 px join and no length rule, 75%
  with 9 px, 79% with 15 px, at the same median total-length error (15-16%).
- **Length**: along the crack's skeleton traced into polylines (junction to junction and to
  the ends), each simplified to within 1 px (Douglas-Peucker) before its segments are summed:
  a count of skeleton pixels, or steps of 1 and 1.41, overstates a diagonal crack by up to 8%.
- **Width**: full width, measured across the crack, on a profile orthogonal to the skeleton at
  each skeleton point (the local direction from the skeleton points around it), sampled every
  0.25 px in the probability map (bilinear): the width is that of the profile's central run
  at or over the threshold, its edges placed between samples (sub-pixel). Points near a junction are left out
  (there the profile crosses two cracks). Max, mean and p90 over the points.
- **Orientation**: the principal axis of the skeleton points, in degrees from the image's
  horizontal (0-180, counter-clockwise, y up). **Type** (crack_type): map cracking when the
  crack closes two cells or more, each wider all round than four times the crack (a hole in a
  spalled crack's mask, or a gap between a fat mask's two edges, is no cell); else by
  orientation in the image: transverse (within 30 degrees of horizontal),
  longitudinal (within 30 degrees of vertical), diagonal. Branching is a count beside the
  type (``branches``: paths longer than the crack is wide), not a type: typed "branched", 55%
  of crackscan-seg's cracks on DeepCrack's held-out photos agreed with the true masks' type,
  94% with this rule (benchmarks/measure.py).

Widths under RESOLUTION_LIMIT_PX (2.5) are marked at the resolution limit: a photo cannot tell
0.1 mm from 0.3 mm across one or two pixels.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import cv2
import numpy as np

from .profiles import PHOTO_RESOLUTION_LIMIT_PX, PROFILE_STEP_PX, PhotoWidths, photo_blur, read_widths, unblurred_width
from .scale import px_to_mm

# A crack whose mask is under 2.5 px wide is 1-2 px wide give or take the half pixel a profile can
# be off: the photo cannot tell its width in mm apart from its neighbours'. Widths read on the
# photo resolve down to twice the optics' blur (profiles.PHOTO_RESOLUTION_LIMIT_PX at least).
RESOLUTION_LIMIT_PX = 2.5
DIRECTION_RADIUS_PX = 4  # skeleton points within this distance give a point's direction
MIN_CRACK_LENGTH_PX = 20
MIN_CRACK_ASPECT = 3
PROFILE_INDEPENDENCE_PX = 3.0
CELLS_FOR_MAP = 2
MAP_CELL_WIDTHS = 4.0
MIN_MAP_CELL_PX = 100
# crackscan-seg's mask reads a crack 0.7-1.9 px wider than it is (synthetic photos, issue 33):
# what a width read off the mask alone can be off by.
MASK_WIDTH_BIAS_PX = 1.5


@dataclasses.dataclass
class Crack:
    crack_id: int
    length_px: float
    max_width_px: float
    mean_width_px: float
    p90_width_px: float
    orientation_deg: float
    type: str
    x: int
    y: int
    width: int
    height: int
    polylines: list[list[tuple[float, float]]]
    at_resolution_limit: bool
    area_px: int
    mm_per_pixel: float | None = None
    width_class: str = ""
    over_limit: bool | None = None
    width_source: str = "mask"
    width_uncertainty_px: float = 0.0
    resolution_limit_px: float = RESOLUTION_LIMIT_PX
    branches: int = 1

    def mm(self, value_px: float) -> float | None:
        in_mm = px_to_mm(value_px, self.mm_per_pixel)
        return None if in_mm is None else round(in_mm, 3)

    def row(self) -> dict[str, Any]:
        """The crack's cracks.csv row."""
        return {"crack_id": self.crack_id, "length_px": round(self.length_px, 1),
                "max_width_px": round(self.max_width_px, 2), "mean_width_px": round(self.mean_width_px, 2),
                "p90_width_px": round(self.p90_width_px, 2), "length_mm": self.mm(self.length_px),
                "max_width_mm": self.mm(self.max_width_px), "mean_width_mm": self.mm(self.mean_width_px),
                "p90_width_mm": self.mm(self.p90_width_px), "width_uncertainty_px": round(self.width_uncertainty_px, 2),
                "width_uncertainty_mm": self.mm(self.width_uncertainty_px), "width_source": self.width_source,
                "resolution_limit_px": round(self.resolution_limit_px, 2),
                "resolution_limit_mm": self.mm(self.resolution_limit_px),
                "orientation_deg": round(self.orientation_deg, 1),
                "type": self.type, "branches": self.branches, "width_class": self.width_class, "at_resolution_limit": self.at_resolution_limit,
                "over_limit": self.over_limit, "x": self.x, "y": self.y, "width": self.width, "height": self.height}

    def to_dict(self) -> dict[str, Any]:
        return {**self.row(), "polylines": [np.round(np.asarray(line, float).reshape(-1, 2), 1).tolist()
                                            for line in self.polylines]}


_SAMPLE_ROW = Crack(0, 1.0, 1.0, 1.0, 1.0, 1.0, "", 0, 0, 0, 0, [], False, 0, mm_per_pixel=1.0,
                    width_uncertainty_px=1.0).row()
CRACK_FIELDS = tuple(_SAMPLE_ROW)
# The columns of cracks.csv that hold a measured figure (px, mm, degrees), which a reader of a
# survey checks to be numbers: the row's own floats, so a new figure is checked once it is written.
CRACK_NUMBER_FIELDS = tuple(name for name, value in _SAMPLE_ROW.items() if isinstance(value, float))


def measure(mask: np.ndarray, mm_per_pixel: float | None = None, threshold: float = 0.5, join_gap_px: int = 15,
            min_area_px: int = 30, photo: np.ndarray | None = None) -> list[Crack]:
    """The cracks of a mask: boolean, or a probability map (0-1 float, or 0-255 uint8) read
    at ``threshold``; geometry in px, and in mm with ``mm_per_pixel`` (Crack.mm, the one
    conversion), as scikit-image's regionprops measures regions. With the ``photo`` the mask
    was made from (H x W x 3 or H x W, its size), widths are read on the photo's own profiles
    (measure.profiles); without it, on the mask's. Classing and flagging them against width
    classes and a limit is a separate step: measure.severity.grade."""
    from scipy.ndimage import find_objects
    from skimage.morphology import skeletonize

    probability = _as_probability(mask)
    gray = None if photo is None else _gray(photo, probability.shape)
    crack = probability >= threshold
    if not crack.any():
        return []
    # Fragments within join_gap_px of each other share a label; the pixels stay the mask's own.
    near = cv2.dilate(crack.astype(np.uint8), cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * (join_gap_px // 2) + 1,) * 2)) if join_gap_px > 1 else crack.astype(np.uint8)
    # OpenCV's labelling, 8-connected as scikit-image's connectivity=2: a tenth of its time on 12 MP.
    groups = cv2.connectedComponents(near, connectivity=8, ltype=cv2.CV_32S)[1]
    del near
    groups[~crack] = 0
    distance = cv2.distanceTransform(crack.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    measured = []
    # Each crack in its own box: a skeleton of the whole photo would cost seconds on 12 MP.
    for group, found in enumerate(find_objects(groups), start=1):
        if found is None:
            continue
        rows, cols = found
        pixels = groups[found] == group
        area = int(pixels.sum())
        if area < min_area_px:
            continue
        bones = skeletonize(pixels)  # in the crack's box only
        if not bones.any():
            continue
        box = (int(cols.start), int(rows.start), int(cols.stop - cols.start), int(rows.stop - rows.start))
        measured.append((_measure_one(bones, probability, distance, box, threshold, gray), _cells(pixels), area))
    # The optics' blur is the photo's, not a crack's: fitted on its longest cracks, used for all.
    reads = [figures.pop("read") for figures, _, _ in measured]
    sigma = photo_blur([read for read in reads if read is not None])
    cracks = []
    for (figures, cells, area), read in zip(measured, reads):
        widths, weights = figures.pop("widths"), figures.pop("weights")
        figures.update(_width_figures(widths, weights, read is not None and read.usable, sigma))
        figures["type"] = crack_type(figures["orientation_deg"], cells, figures["mean_width_px"])
        branch_lengths = figures.pop("branch_lengths")
        figures["branches"] = sum(length > max(3.0, figures["max_width_px"]) for length in branch_lengths) or 1
        found_crack = Crack(0, **figures, area_px=area, mm_per_pixel=mm_per_pixel)
        if found_crack.length_px >= max(MIN_CRACK_LENGTH_PX, MIN_CRACK_ASPECT * found_crack.max_width_px):
            cracks.append(found_crack)
    cracks.sort(key=lambda c: (-c.length_px, c.y, c.x))
    for number, found in enumerate(cracks, start=1):
        found.crack_id = number
    return cracks


def _cells(pixels: np.ndarray) -> list[int]:
    """The areas (px) of the regions a crack's pixels close all round: map cracking's cells."""
    # The background's 4-connected regions (binary_fill_holes' own rule) that do not reach the
    # box's edge, in one OpenCV pass (scipy's fill and a second labelling took 5x as long).
    # Label 0 is the crack's own pixels.
    count, _, stats, _ = cv2.connectedComponentsWithStats((~pixels).astype(np.uint8), connectivity=4)
    height, width = pixels.shape
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    inside = (left > 0) & (top > 0) & (left + stats[:, cv2.CC_STAT_WIDTH] < width) & \
        (top + stats[:, cv2.CC_STAT_HEIGHT] < height)
    return [int(stats[i, cv2.CC_STAT_AREA]) for i in range(1, count) if inside[i]]


def crack_type(orientation: float, cells: list[int] | None, mean_width: float) -> str:
    """map when the crack closes CELLS_FOR_MAP cells or more, each wider all round than
    MAP_CELL_WIDTHS times the crack is (a hole in a spalled crack's mask is no cell); else
    by orientation."""
    least = max(MIN_MAP_CELL_PX, (MAP_CELL_WIDTHS * mean_width) ** 2)
    if sum(area >= least for area in cells or []) >= CELLS_FOR_MAP:
        return "map"
    return _direction_type(orientation)


def _as_probability(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask.astype(np.float32)
    if mask.dtype == np.uint8:
        return mask.astype(np.float32) / 255
    return np.asarray(mask, np.float32)  # a float32 map as it is: a copy is 200 MB at 50 MP


def _gray(photo: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    photo = np.asarray(photo)
    if photo.shape[:2] != tuple(shape):
        raise ValueError(f"the photo is {photo.shape[1]}x{photo.shape[0]} px and its mask {shape[1]}x{shape[0]}")
    if photo.ndim == 3:
        return cv2.cvtColor(np.ascontiguousarray(photo[..., :3]), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return photo.astype(np.float32)


def _measure_one(local: np.ndarray, probability: np.ndarray, distance: np.ndarray, box: tuple[int, int, int, int],
                 threshold: float, gray: np.ndarray | None = None) -> dict[str, Any]:
    """One crack's geometry (Crack's fields by name) from its skeleton ``local`` (the size of
    its ``box``, x y w h), with its width samples (read on the photo ``gray`` where given and
    readable, else on the mask) still to be made figures once the photo's blur is known."""
    x0, y0, w, h = box
    window = (slice(y0, y0 + h), slice(x0, x0 + w))
    offset = np.array([x0, y0], float)
    paths, junctions, _, degree = _trace(local)
    local_distance = distance[window]
    # Douglas-Peucker is most of a crack's measuring time: each path is simplified once.
    lengths = {id(path): _polyline_length(path) for path in paths}
    paths = _without_spurs(paths, degree, local_distance, lengths)
    counts: dict = {}
    for path in paths:
        for end in (path[0], path[-1]):
            counts[end] = counts.get(end, 0) + 1
    junctions = [j for j in junctions if counts.get(j, 0) >= 3]
    polylines = [[(float(x + x0), float(y + y0)) for x, y in path] for path in paths]  # ints: no NumPy scalars
    # The skeleton stops about half the crack's width short of each free end.
    ends = [end for path in paths for end in (path[0], path[-1]) if counts.get(end, 0) == 1 and len(path) > 1]
    length = sum(lengths[id(path)] for path in paths) + sum(float(local_distance[y, x]) for x, y in ends)
    points = (np.argwhere(local)[:, ::-1] + offset).astype(float)  # x, y in the photo
    # Profiles near a junction cross two cracks, and near a free end run along the crack's end.
    junction_points = [(x + offset[0], y + offset[1]) for x, y in (*junctions, *ends)]
    along, normals, spacing = _path_points_and_normals(polylines)
    widths, weights, read = _widths(along, normals, spacing, probability, distance, junction_points, threshold, gray)
    if len(widths) == 0 or weights.sum() <= 0:
        widths, weights = np.array([2 * float(local_distance[local].max()) - 1]), np.ones(1)
    return {"length_px": length, "orientation_deg": _orientation(points),
            "x": box[0], "y": box[1], "width": box[2], "height": box[3], "polylines": polylines,
            "branch_lengths": [lengths[id(p)] for p in paths] if junctions else [],
            "widths": widths, "weights": weights, "read": read}


def _width_figures(widths: np.ndarray, weights: np.ndarray, on_photo: bool, sigma: float | None) -> dict[str, Any]:
    """A crack's width figures from its samples: on the photo, blur-corrected by the photo's
    ``sigma`` (profiles.unblurred_width) and resolved down to twice it."""
    if on_photo and sigma is not None:
        corrected = unblurred_width(widths, sigma)
        correction = float(np.median(widths - corrected))
        widths = corrected
    else:
        correction = 0.0
    # The largest width held over more than a point or two: one profile cut along a bend is no width.
    max_width = float(np.percentile(widths, 98))
    p90_width = float(np.percentile(widths, 90))
    resolved = max(PHOTO_RESOLUTION_LIMIT_PX, 2 * (sigma or 0.0)) if on_photo else RESOLUTION_LIMIT_PX
    return {"max_width_px": max_width, "mean_width_px": float(np.average(widths, weights=weights)),
            "p90_width_px": p90_width,
            # On the photo, one noisy profile in fifty must not lift a hairline crack out of the limit.
            "at_resolution_limit": (p90_width if on_photo else max_width) < resolved, "resolution_limit_px": resolved,
            "width_source": "photo" if on_photo else "mask",
            "width_uncertainty_px": width_uncertainty(widths, correction if on_photo else None)}


def width_uncertainty(widths: np.ndarray, blur_correction_px: float | None) -> float:
    """The uncertainty (px, one standard error) of a crack's mean width: the samples' spread
    (MAD), samples PROFILE_INDEPENDENCE_PX apart counted as independent (a profile averages
    three lines), with a quarter of the blur correction added (the band model is a model); a
    mask's width (no photo read) adds MASK_WIDTH_BIAS_PX, the widening measured on synthetic photos."""
    spread = 1.4826 * float(np.median(np.abs(widths - np.median(widths)))) if len(widths) else 0.0
    error = spread / math.sqrt(max(1.0, len(widths) / PROFILE_INDEPENDENCE_PX))
    model = MASK_WIDTH_BIAS_PX if blur_correction_px is None else 0.25 * abs(blur_correction_px)
    return max(0.05, math.hypot(error, model))


def _trace(bones: np.ndarray) -> tuple[list[list[tuple[int, int]]], list[tuple[int, int]], int, dict]:
    """The skeleton as paths between nodes (ends and junctions), the junctions, the number of
    independent loops (cycles of the pixel graph) and each pixel's degree.

    Pixels are 8-connected, but a diagonal step where a straight one reaches the same pixel is
    the same connection twice and is dropped (that rule is symmetric, so the graph is too).
    The links are found for all pixels at once with array shifts; only the walk is Python."""
    ys, xs = np.nonzero(bones)
    if len(ys) == 0:
        return [], [], 0, {}
    padded = np.pad(bones.astype(bool), 1)
    index = np.full(padded.shape, -1, np.int64)
    index[ys + 1, xs + 1] = np.arange(len(ys))

    def on(dx: int, dy: int) -> np.ndarray:
        return padded[ys + 1 + dy, xs + 1 + dx]

    links = {(dx, dy): on(dx, dy) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))}
    for dx in (-1, 1):
        for dy in (-1, 1):
            links[dx, dy] = on(dx, dy) & ~links[dx, 0] & ~links[0, dy]
    graph: list[list[int]] = [[] for _ in range(len(ys))]
    for (dx, dy), linked in links.items():
        sources = np.flatnonzero(linked)
        for source, target in zip(sources.tolist(), index[ys[sources] + 1 + dy, xs[sources] + 1 + dx].tolist()):
            graph[source].append(target)
    degrees = [len(near) for near in graph]
    points = list(zip(xs.tolist(), ys.tolist()))
    nodes = [i for i, d in enumerate(degrees) if d != 2]
    is_node = [d != 2 for d in degrees]
    junctions = [points[i] for i, d in enumerate(degrees) if d >= 3]
    edges = sum(degrees) // 2
    # Dropping a diagonal never disconnects (the straight pixel joins both ends): the
    # components are the skeleton's 8-connected ones.
    components = cv2.connectedComponents(bones.astype(np.uint8), connectivity=8)[0] - 1
    loops = max(0, edges - len(points) + components)
    seen_edges: set[tuple[int, int]] = set()
    paths = []
    for start in nodes or [0]:  # a closed loop has no node: start anywhere
        for first in graph[start]:
            if (start, first) in seen_edges:
                continue
            path = [start, first]
            seen_edges.update({(start, first), (first, start)})
            previous, current = start, first
            while not is_node[current] and current != start:
                following = [q for q in graph[current] if q != previous and (current, q) not in seen_edges]
                if not following:
                    break
                previous, current = current, following[0]
                seen_edges.update({(previous, current), (current, previous)})
                path.append(current)
            paths.append([points[i] for i in path])
    if not paths:
        paths = [[points[0]]]
    return paths, junctions, loops, dict(zip(points, degrees))


def _without_spurs(paths: list, degree: dict, distance: np.ndarray, lengths: dict[int, float]) -> list:
    """Paths without the short whiskers a skeleton grows towards a wide crack's corners: a
    path from a free end to a junction no longer than the crack is wide there."""
    if len(paths) < 2:
        return paths
    kept = []
    for path in paths:
        first, last = path[0], path[-1]
        free, joined = (first, last) if degree.get(first, 0) <= 1 else (last, first)
        is_spur = degree.get(free, 0) <= 1 and degree.get(joined, 0) >= 3 and \
            lengths[id(path)] <= 1.5 * float(distance[joined[1], joined[0]]) + 1
        if not is_spur:
            kept.append(path)
    return kept or paths


def simplified(line: Any, tolerance: float) -> np.ndarray:
    """A polyline (N x 2, x y) simplified to within ``tolerance`` px (Douglas-Peucker, OpenCV's:
    scikit-image's approximate_polygon is the same algorithm in Python, 700x slower on a
    200-point path, and was most of a crack's measuring time)."""
    points = np.asarray(line, np.float64).reshape(-1, 2)
    if len(points) < 3:
        return points
    kept = cv2.approxPolyDP(points.astype(np.float32).reshape(-1, 1, 2), tolerance, False).reshape(-1, 2)
    return kept.astype(np.float64)


def _polyline_length(line: list) -> float:
    if len(line) < 2:
        return 0.0
    return float(np.sum(np.hypot(*np.diff(simplified(line, 1.0), axis=0).T)))


def _path_points_and_normals(polylines: list[list[tuple[float, float]]]
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every point of the traced paths, its unit normal (from the path's own direction over
    DIRECTION_RADIUS_PX points either side) and the length of path it stands for.

    All paths at once: a 12 MP photo's cracks are thousands of short paths, and a NumPy pass
    per path cost more than the arithmetic."""
    lines = [line for line in polylines if len(line) >= 2]
    if not lines:
        return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)
    sizes = np.array([len(line) for line in lines])
    points = np.array([point for line in lines for point in line], float).reshape(-1, 2)
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)  # each point's path's first point
    last = first + np.repeat(sizes, sizes) - 1
    index = np.arange(len(points))
    tangent = points[np.minimum(index + DIRECTION_RADIUS_PX, last)] - points[np.maximum(index - DIRECTION_RADIUS_PX, first)]
    tangent /= np.maximum(1e-9, np.hypot(*tangent.T))[:, None]
    steps = np.hypot(*np.diff(points, axis=0).T)  # across a path's end too: masked below
    before = np.where(index > first, np.concatenate([[0.0], steps]), 0.0)
    after = np.where(index < last, np.concatenate([steps, [0.0]]), 0.0)
    return points, np.stack([-tangent[:, 1], tangent[:, 0]], axis=1), (before + after) / 2


def _widths(points: np.ndarray, normals: np.ndarray, spacing: np.ndarray, probability: np.ndarray,
            distance: np.ndarray, junctions: list[tuple[float, float]], threshold: float,
            gray: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, PhotoWidths | None]:
    """Full width at each path point away from junctions and free ends, across the path, and
    the length of path each stands for: read on the photo ``gray`` where it can be (with the
    photo's reading), else on the mask."""
    if len(points) == 0:
        return np.zeros(0), np.zeros(0), None
    half_widths = distance[points[:, 1].astype(int), points[:, 0].astype(int)]
    keep = np.ones(len(points), bool)
    for jx, jy in junctions:
        keep &= np.hypot(points[:, 0] - jx, points[:, 1] - jy) > half_widths + 2
    if keep.sum() < max(1, 0.2 * len(points)):  # a short crack that is mostly junction: keep them all
        keep[:] = True
    points, normals, half_widths, spacing = points[keep], normals[keep], half_widths[keep], spacing[keep]
    read = None if gray is None else read_widths(gray, points, normals, half_widths)
    if read is not None and read.usable:
        found = np.isfinite(read.widths)
        return read.widths[found], spacing[found], read
    reach = float(min(40.0, half_widths.max() * 2 + 3))
    offsets = np.arange(-reach, reach + PROFILE_STEP_PX / 2, PROFILE_STEP_PX)
    xs = points[:, :1] + normals[:, :1] * offsets
    ys = points[:, 1:] + normals[:, 1:] * offsets
    profile = cv2.remap(probability, xs.astype(np.float32), ys.astype(np.float32), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return crossing_widths(profile, threshold), spacing, read


def crossing_widths(profiles: np.ndarray, threshold: float) -> np.ndarray:
    """The width of each profile's central run at or over ``threshold`` (profiles: one per
    row, sampled every PROFILE_STEP_PX), its two edges placed between samples by linear
    interpolation (sub-pixel). A profile whose centre and its neighbourhood are under the
    threshold is one sample wide."""
    profiles = np.asarray(profiles, np.float32)
    count, size = profiles.shape
    rows = np.arange(count)
    centre = np.full(count, size // 2)
    # A skeleton point off its own pixels' centre: start at the peak nearby.
    off = profiles[:, size // 2] < threshold
    nearby = profiles[:, size // 2 - 4:size // 2 + 5]
    centre[off] = np.argmax(nearby[off], axis=1) + size // 2 - 4
    missed = profiles[rows, centre] < threshold
    index = np.arange(size)
    under = profiles < threshold
    low = np.where(under & (index < centre[:, None]), index, -1).max(axis=1) + 1
    high = np.where(under & (index > centre[:, None]), index, size).min(axis=1) - 1
    before = profiles[rows, np.maximum(low - 1, 0)]
    after = profiles[rows, np.minimum(high + 1, size - 1)]
    left = np.where(low > 0, low - (profiles[rows, low] - threshold) / np.maximum(1e-6, profiles[rows, low] - before),
                    low)
    right = np.where(high < size - 1,
                     high + (profiles[rows, high] - threshold) / np.maximum(1e-6, profiles[rows, high] - after), high)
    return np.where(missed, PROFILE_STEP_PX, (right - left) * PROFILE_STEP_PX).astype(float)


def _orientation(points: np.ndarray) -> float:
    if len(points) < 2:
        return 0.0
    centred = points - points.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    dx, dy = axes[0]
    return float(math.degrees(math.atan2(-dy, dx)) % 180.0)  # image y runs down; angles count with y up


def _direction_type(orientation: float) -> str:
    off_horizontal = min(orientation, 180 - orientation)
    if off_horizontal <= 30:
        return "transverse"
    if off_horizontal >= 60:
        return "longitudinal"
    return "diagonal"
