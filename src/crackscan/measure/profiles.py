"""Crack widths read on the photo: each width sample is the photo's own intensity profile across
the crack's centreline, so the width inherits neither the mask's blur nor its labels' fatness.

The mask finds the crack and its centreline (its skeleton); at each centreline point:

1. **Profile**: the photo's grey levels along the normal, every PROFILE_STEP_PX (0.25 px,
   bilinear), three parallel lines (the point and one pixel either side along the crack)
   averaged, which takes out most of the grain and JPEG noise without blurring across the crack.
2. **Levels**: the local background on each side, the median of the profile just outside the
   mask there; the core, the profile's minimum inside it (a crack is darker than its surface).
3. **Edges**: the half-depth crossing on each side (halfway between the core and that side's
   background), placed between samples by linear interpolation; the width is their distance.
   A sample whose core is not clearly darker than both sides (under MIN_CONTRAST_NOISE times
   the background's noise) reads no width.
4. **Blur**: optics blur a crack of width w by a point spread of sigma s; the half-depth width of
   a blurred band is wider than w when w is under about 3 s, because the blur lifts the core.
   Each crack's profiles, centred and averaged, can be fitted with a blurred band (least
   squares: contrast, w, s, centre); the blur is the photo's, so it is fitted on its
   BLUR_FIT_CRACKS longest narrow cracks and their median taken (``photo_blur``), and each
   sample's half-depth width is mapped back through the band's own half-depth width for that s
   (``unblurred_width``). Wide cracks are unchanged; a 2 px crack under sigma 0.7 loses the
   ~0.4 px the blur added.

Uncertainty: the standard error of the crack's mean width from the samples' spread (MAD,
samples three pixels apart counted as independent, since each profile averages three lines),
with a quarter of the blur correction added in quadrature (the band model is a model).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import cv2
import numpy as np

PROFILE_STEP_PX = 0.25
PARALLEL_LINES_PX = (-1.0, 0.0, 1.0)
# A width sample needs its core this many times the background's noise below both sides.
MIN_CONTRAST_NOISE = 3.0
MIN_CONTRAST_LEVELS = 4.0  # and at least this many grey levels (0-255)
# A crack's widths come from the photo when at least this share of its samples read one.
MIN_READ_SHARE = 0.3
BLUR_SIGMA_RANGE_PX = (0.3, 1.5)  # what the band fit may say of the optics' blur
BLUR_FIT_CRACKS = 5  # the longest cracks of a photo its blur is fitted on
BLUR_FIT_MAX_WIDTH_PX = 8.0  # past 5 sigma the blur no longer shapes a crack's profile
# Under twice the optics' blur (sigma ~0.7 px for a sharp phone or drone photo) a crack's
# profile is the blur's own shape: its width is not resolved.
PHOTO_RESOLUTION_LIMIT_PX = 1.5


@dataclasses.dataclass(frozen=True)
class PhotoWidths:
    """A crack's half-depth widths read on the photo, one per sample (NaN where none was read),
    the share of samples that read one, and what its mean depth profile is made from, which the
    photo's blur is fitted on (``mean_depth``)."""

    widths: np.ndarray
    read_share: float
    # The read profiles with their offsets, edges and backgrounds: kept for the blur fit, which
    # only a photo's longest cracks go through (averaging them costs more than reading them).
    profiles: tuple | None = None

    def mean_depth(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self.profiles is None else _mean_depth(*self.profiles)

    @property
    def usable(self) -> bool:
        return self.read_share >= MIN_READ_SHARE and self.length >= 3

    @property
    def length(self) -> int:
        """Samples that read a width."""
        return int(np.isfinite(self.widths).sum())


def read_widths(gray: np.ndarray, points: np.ndarray, normals: np.ndarray, mask_half_widths: np.ndarray
                ) -> PhotoWidths:
    """The half-depth widths at ``points`` (N x 2, x y) across ``normals`` (N x 2, unit) in the
    photo ``gray`` (H x W float32), the mask's half widths there (N) telling where the crack ends
    and its surface begins; not yet blur-corrected (photo_blur, unblurred_width)."""
    count = len(points)
    if count == 0:
        return PhotoWidths(np.zeros(0), 0.0)
    half = np.maximum(np.asarray(mask_half_widths, np.float32), 1.0)
    reach = float(min(48.0, 2 * half.max() + 6))
    offsets = np.arange(-reach, reach + PROFILE_STEP_PX / 2, PROFILE_STEP_PX, dtype=np.float32)
    tangents = np.stack([normals[:, 1], -normals[:, 0]], axis=1)
    profile = np.zeros((count, len(offsets)), np.float32)
    for shift in PARALLEL_LINES_PX:
        xs = points[:, :1] + tangents[:, :1] * shift + normals[:, :1] * offsets
        ys = points[:, 1:] + tangents[:, 1:] * shift + normals[:, 1:] * offsets
        profile += cv2.remap(gray, xs.astype(np.float32), ys.astype(np.float32), cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
    profile /= len(PARALLEL_LINES_PX)
    distance = np.abs(offsets)[None, :]
    inner = distance <= half[:, None] + 1.5
    # The surface just outside the crack: a band as wide as the crack (3 px at least) beyond it.
    outer = (distance >= half[:, None] + 2) & (distance <= half[:, None] + 2 + np.maximum(3.0, half)[:, None])
    left_side, right_side = offsets[None, :] < 0, offsets[None, :] > 0
    left_bg = _masked_median(profile, outer & left_side)
    right_bg = _masked_median(profile, outer & right_side)
    noise = 1.4826 * _masked_median(np.abs(profile - np.where(offsets[None, :] < 0, left_bg[:, None],
                                                                right_bg[:, None])), outer)
    smooth = cv2.blur(profile, (3, 1), borderType=cv2.BORDER_REPLICATE)  # 0.75 px along the profile
    core_index = np.argmin(np.where(inner, smooth, np.inf), axis=1)
    rows = np.arange(count)
    core = smooth[rows, core_index]
    contrast = np.minimum(left_bg, right_bg) - core
    readable = contrast >= np.maximum(MIN_CONTRAST_LEVELS, MIN_CONTRAST_NOISE * noise)
    left = _crossing(profile, core_index, (left_bg + core) / 2, -1)
    right = _crossing(profile, core_index, (right_bg + core) / 2, +1)
    raw = (right - left) * PROFILE_STEP_PX
    readable &= np.isfinite(raw)
    widths = np.where(readable, raw, np.nan)
    if readable.sum() < 3:
        return PhotoWidths(widths, float(readable.mean()))
    return PhotoWidths(widths, float(readable.mean()), (profile[readable], offsets, left[readable], right[readable],
                                                        left_bg[readable], right_bg[readable]))


def photo_blur(reads: list[PhotoWidths], cracks: int = BLUR_FIT_CRACKS) -> float | None:
    """The photo's optical blur (sigma, px): the median of blurred bands fitted to its longest
    cracks' mean profiles, those narrow enough for the blur to show (a wide crack's edges are
    the photo's texture as much as its optics); None when no crack tells it."""
    narrow = [read for read in reads if read.usable and read.profiles is not None
              and np.nanmedian(read.widths) < BLUR_FIT_MAX_WIDTH_PX]
    narrow.sort(key=lambda read: -read.length)
    fitted = [sigma for read in narrow[:cracks] if (sigma := _fitted_blur(*read.mean_depth())) is not None]
    return float(np.median(fitted)) if fitted else None


def _masked_median(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Each row's median over its ``where`` samples (-inf for a row with none); a sort, as
    nanmedian's masked arrays cost seconds over a 12 MP photo's cracks."""
    ordered = np.sort(np.where(where, values, np.inf), axis=1)
    count = where.sum(axis=1)
    rows = np.arange(len(values))
    low = ordered[rows, np.maximum(count - 1, 0) // 2]
    high = ordered[rows, count // 2]
    median = np.where(count % 2 == 1, low, (low + high) / 2)
    return np.where(count > 0, median, -np.inf).astype(np.float32)


def _crossing(profile: np.ndarray, start: np.ndarray, level: np.ndarray, direction: int) -> np.ndarray:
    """The fractional sample index where each profile first climbs to ``level`` going from
    ``start`` in ``direction`` (NaN when it never does)."""
    count, size = profile.shape
    index = np.arange(size)[None, :]
    ahead = (index - start[:, None]) * direction > 0
    reached = ahead & (profile >= level[:, None])
    # The first index reached, in the walking direction.
    found = np.where(reached, index * direction, np.iinfo(np.int32).max).min(axis=1) * direction
    valid = reached.any(axis=1)
    found = np.where(valid, found, start)
    rows = np.arange(count)
    inside = np.clip(found - direction, 0, size - 1)  # the last sample still under the level
    below, above = profile[rows, inside], profile[rows, found]
    step = np.clip((level - below) / np.maximum(1e-6, above - below), 0, 1)
    return np.where(valid, inside + direction * step, np.nan)


def band_depth(x: np.ndarray, width: float | np.ndarray, sigma: float) -> np.ndarray:
    """Depth (0-1) at offset ``x`` of a band of ``width`` blurred by a Gaussian of ``sigma``."""
    scale = math.sqrt(2) * sigma
    from scipy.special import erf

    return 0.5 * (erf((x + np.asarray(width) / 2) / scale) - erf((x - np.asarray(width) / 2) / scale))


def band_half_depth_width(width: np.ndarray, sigma: float) -> np.ndarray:
    """The half-depth width of a blurred band: the distance between the offsets where its depth
    is half its own (blur-lowered) peak, found by bisection."""
    width = np.asarray(width, float)
    peak = band_depth(np.zeros_like(width), width, sigma)
    low, high = np.zeros_like(width), width / 2 + 4 * sigma
    for _ in range(40):
        middle = (low + high) / 2
        above = band_depth(middle, width, sigma) > peak / 2
        low, high = np.where(above, middle, low), np.where(above, high, middle)
    return low + high  # twice the crossing


_TRUE_WIDTHS = np.concatenate([np.linspace(0.05, 4, 80), np.linspace(4.1, 12, 40)])


@functools.lru_cache(maxsize=16)
def _half_depth_table(sigma: float) -> np.ndarray:
    return band_half_depth_width(_TRUE_WIDTHS, sigma)  # once per photo's blur, not per crack


def unblurred_width(half_depth_widths: np.ndarray, sigma: float) -> np.ndarray:
    """The band widths whose blurred half-depth widths are ``half_depth_widths`` (the inverse of
    band_half_depth_width, which rises with the width): below the narrowest band's, the band is
    narrower than the blur and its width is read as that narrowest band's."""
    table = _half_depth_table(round(float(sigma), 4))
    widths = np.asarray(half_depth_widths, float)
    # Past 12 px (over 8 sigma) the blur no longer moves the half-depth edges.
    return np.where(widths > table[-1], widths, np.interp(widths, table, _TRUE_WIDTHS, left=_TRUE_WIDTHS[0]))


def _mean_depth(profile: np.ndarray, offsets: np.ndarray, left: np.ndarray, right: np.ndarray,
                left_bg: np.ndarray, right_bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The crack's profiles, each centred between its two half-depth edges and turned into
    depth below its own background, then averaged (median) on one grid."""
    centre = (left + right) / 2 * PROFILE_STEP_PX + offsets[0]
    span = float(np.median(right - left) * PROFILE_STEP_PX) + 6
    grid = np.arange(-span, span + PROFILE_STEP_PX / 2, PROFILE_STEP_PX)
    background = np.where(offsets[None, :] < centre[:, None], left_bg[:, None], right_bg[:, None])
    depth = background - profile
    aligned = np.stack([np.interp(grid, offsets - c, row) for c, row in zip(centre, depth)])
    return grid, np.median(aligned, axis=0)


def _fitted_blur(grid: np.ndarray, mean_depth: np.ndarray) -> float | None:
    """The blur sigma (px) of a blurred band fitted (least squares: contrast, width, sigma,
    centre) to a crack's mean depth profile."""
    from scipy.optimize import least_squares

    peak = float(mean_depth.max())
    if not np.isfinite(peak) or peak <= 0:
        return None
    span = float(grid[-1])
    above = grid[mean_depth >= peak / 2]
    start_width = max(0.5, float(above[-1] - above[0])) if len(above) else 1.0

    def residual(parameters: np.ndarray) -> np.ndarray:
        contrast, width, sigma, shift = parameters
        return contrast * band_depth(grid - shift, width, sigma) - mean_depth

    low_sigma, high_sigma = BLUR_SIGMA_RANGE_PX
    try:
        fitted = least_squares(residual, [peak, start_width, 0.7, 0.0],
                               bounds=([0, 0.05, low_sigma, -2], [4 * peak + 1, 4 * span, high_sigma, 2]))
    except (ValueError, np.linalg.LinAlgError):
        return None
    return float(fitted.x[2]) if fitted.success else None
