"""Seeded procedural concrete: textures with and without cracks, for the demo and tests.

A texture is a base colour with multi-scale value noise, fine grain, pores, stains and a
lighting gradient. A crack is a persistent random walk from one edge, with branches,
varying width and darkness. Hard negatives carry what a naive detector mistakes for a
crack: straight joints, step edges between lighter and darker surfaces, dark stains,
faint scratches.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .files import atomic_path

PATCH_SIZE = 227


def _value_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    coarse = rng.standard_normal((max(2, cells), max(2, int(cells * width / height) or 2))).astype(np.float32)
    image = Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32)


def concrete_texture(rng: np.random.Generator, height: int = PATCH_SIZE, width: int = PATCH_SIZE) -> np.ndarray:
    """An HxWx3 float32 concrete-like surface, values about 0-255."""
    base = rng.uniform(115, 205)
    tint = rng.normal(0, 2.0, size=3)
    shade = np.zeros((height, width), np.float32)
    for cells, weight in ((3, 9.0), (9, 6.0), (28, 4.0)):
        shade += weight * rng.uniform(0.5, 1.5) * _value_noise(rng, height, width, cells)
    shade += rng.normal(0, rng.uniform(2.5, 7.0), size=(height, width)).astype(np.float32)  # grain
    # Lighting: a gentle gradient in a random direction.
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    shade += rng.uniform(0, 25) * ((xs / width - 0.5) * math.cos(angle) + (ys / height - 0.5) * math.sin(angle))
    image = np.clip(base + shade, 0, 255)[..., None] + tint
    overlay = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(overlay)
    area_scale = width * height / PATCH_SIZE**2
    for _ in range(int(rng.integers(4, 40) * area_scale)):  # pores: small dark pits
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.8, 3.2)
        draw.ellipse((x - r, y - r * rng.uniform(0.6, 1.0), x + r, y + r), fill=int(rng.integers(40, 120)))
    pores = np.asarray(overlay.filter(ImageFilter.GaussianBlur(0.6)), np.float32) / 255.0
    image *= (1 - 0.7 * pores)[..., None]
    for _ in range(int(rng.integers(0, 3))):  # soft stains, darker or lighter
        image += _blob(rng, height, width)[..., None] * rng.uniform(-30, 18)
    return np.clip(image, 0, 255)


def _blob(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    rx, ry = rng.uniform(0.1, 0.35) * width, rng.uniform(0.1, 0.35) * height
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
    return np.asarray(mask.filter(ImageFilter.GaussianBlur(min(width, height) * 0.08)), np.float32) / 255.0


def crack_mask(rng: np.random.Generator, height: int = PATCH_SIZE, width: int = PATCH_SIZE,
               max_width: float | None = None) -> np.ndarray:
    """An HxW float mask in [0, 1] of one branching crack crossing the image."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    scale = min(height, width) / PATCH_SIZE
    widest = max_width if max_width is not None else rng.uniform(2.0, 7.0) * max(1.0, scale ** 0.5)
    # Grown both ways from a point near the middle, so every crack crosses the image.
    start = (rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height)
    heading = rng.uniform(0, 2 * math.pi)
    reach = rng.uniform(0.5, 0.9) * (height + width)
    for direction in (heading, heading + math.pi):
        _walk(rng, draw, start, direction, widest, length=reach, step=3.0 * max(1.0, scale),
              bounds=(width, height), depth=0)
    return np.asarray(mask.filter(ImageFilter.GaussianBlur(0.7)), np.float32) / 255.0


def _walk(rng: np.random.Generator, draw: ImageDraw.ImageDraw, start: tuple[float, float], heading: float,
          width: float, length: float, step: float, bounds: tuple[int, int], depth: int) -> None:
    x, y = start
    travelled = 0.0
    while travelled < length:
        heading += rng.normal(0, 0.22)
        nx, ny = x + step * math.cos(heading), y + step * math.sin(heading)
        width = float(np.clip(width * rng.uniform(0.9, 1.1), 1.0, 12.0))
        shade = int(rng.integers(190, 256))
        draw.line((x, y, nx, ny), fill=shade, width=max(1, int(round(width))))
        if width > 2.5:  # round joints, or thick cracks look like stacked bricks
            r = width / 2
            draw.ellipse((nx - r, ny - r, nx + r, ny + r), fill=shade)
        x, y = nx, ny
        travelled += step
        if not (-5 <= x <= bounds[0] + 5 and -5 <= y <= bounds[1] + 5):
            return
        if depth < 2 and rng.random() < 0.02:
            branch = heading + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1)
            _walk(rng, draw, (x, y), branch, width * 0.6, length * 0.35, step, bounds, depth + 1)


def hard_negative(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Adds a crack look-alike that is not a crack to a texture."""
    height, width = image.shape[:2]
    kind = rng.integers(4)
    overlay = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(overlay)
    if kind == 0:  # a straight formwork or saw-cut joint
        vertical = rng.random() < 0.5
        pos = rng.uniform(0.2, 0.8) * (width if vertical else height)
        tilt = rng.normal(0, 0.04) * (height if vertical else width)
        line = (pos, 0, pos + tilt, height) if vertical else (0, pos, width, pos + tilt)
        draw.line(line, fill=255, width=int(rng.integers(3, 9)))
        image *= (1 - rng.uniform(0.25, 0.5) * np.asarray(overlay.filter(ImageFilter.GaussianBlur(1.2)), np.float32)[..., None] / 255)
    elif kind == 1:  # a step edge: two surfaces at different brightness
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, math.pi)
        side = (xs - width / 2) * math.cos(angle) + (ys - height / 2) * math.sin(angle) > rng.normal(0, width * 0.15)
        image += np.where(side, rng.uniform(-45, 45), 0)[..., None]
    elif kind == 2:  # a dark stain or shadow
        image += _blob(rng, height, width)[..., None] * rng.uniform(-60, -25)
    else:  # faint straight scratches
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
            angle = rng.uniform(0, math.pi)
            reach = rng.uniform(0.3, 0.8) * width
            draw.line((x0, y0, x0 + reach * math.cos(angle), y0 + reach * math.sin(angle)), fill=255, width=1)
        image *= (1 - 0.15 * np.asarray(overlay, np.float32)[..., None] / 255)
    return np.clip(image, 0, 255)


def drawn_lookalike(rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
    """A clear photo of concrete with what a segmenter takes for a crack and is none, drawn on
    it: straight and regular where a crack is neither. A formwork or slab joint (a straight dark
    band of even width across the whole photo), the parallel joints of formwork boards, a grid
    of tie holes, or scattered bug holes (small round pits)."""
    image = photo.astype(np.float32)
    height, width = image.shape[:2]
    overlay = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(overlay)
    kind = rng.integers(4)
    if kind in (0, 1):  # one joint, or boards' joints at a regular spacing
        angle = rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.03) if rng.random() < 0.8 else rng.uniform(0, math.pi)
        band = int(rng.integers(2, 8))
        spacing = rng.uniform(0.25, 0.45) * max(width, height)
        offsets = [rng.uniform(-0.3, 0.3) * max(width, height)]
        if kind == 1:
            offsets = [offsets[0] + k * spacing for k in range(-3, 4)]
        reach = 2 * max(width, height)
        dx, dy = math.cos(angle), math.sin(angle)
        for offset in offsets:
            cx, cy = width / 2 - dy * offset, height / 2 + dx * offset
            draw.line((cx - dx * reach, cy - dy * reach, cx + dx * reach, cy + dy * reach), fill=255, width=band)
        depth = rng.uniform(0.3, 0.6)
    elif kind == 2:  # tie holes on a grid
        radius, step = rng.uniform(3, 10), rng.uniform(0.3, 0.5) * min(width, height)
        x0, y0 = rng.uniform(0, step), rng.uniform(0, step)
        for y in np.arange(y0, height, step):
            for x in np.arange(x0, width, step):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
        depth = rng.uniform(0.4, 0.7)
    else:  # bug holes: small pits scattered over the surface
        for _ in range(int(rng.integers(8, 40))):
            x, y, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1, 4)
            draw.ellipse((x - radius, y - radius * rng.uniform(0.6, 1), x + radius, y + radius), fill=255)
        depth = rng.uniform(0.3, 0.6)
    shade = np.asarray(overlay.filter(ImageFilter.GaussianBlur(0.8)), np.float32)[..., None] / 255
    return np.clip(image * (1 - depth * shade), 0, 255).astype(np.uint8)


def make_patch(rng: np.random.Generator, cracked: bool, size: int = PATCH_SIZE) -> np.ndarray:
    image = concrete_texture(rng, size, size)
    if cracked:
        image *= (1 - rng.uniform(0.55, 0.85) * crack_mask(rng, size, size))[..., None]
    elif rng.random() < 0.35:
        image = hard_negative(rng, image)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def make_dataset(root: str | Path, per_class: int = 300, seed: int = 0, size: int = PATCH_SIZE) -> Path:
    """Writes ``per_class`` JPEG patches into root/Positive and root/Negative."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for name, cracked in (("Positive", True), ("Negative", False)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            with atomic_path(folder / f"{index:05d}.jpg") as temporary:
                Image.fromarray(make_patch(rng, cracked, size)).save(temporary, quality=90)
    return root


def make_photo(rng: np.random.Generator, width: int = 2724, height: int = 2043, cracks: int = 2) -> np.ndarray:
    """A whole surface photo with ``cracks`` long cracks, for trying out scanning."""
    image = concrete_texture(rng, height, width)
    for _ in range(cracks):
        image *= (1 - rng.uniform(0.6, 0.85) * crack_mask(rng, height, width, max_width=rng.uniform(6, 12)))[..., None]
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def make_mask_set(root: str | Path, photos: int = 24, size: int = 192, seed: int = 0, joints: bool = False) -> Path:
    """A mask set (root/images, root/masks) of concrete photos, most with a drawn crack: the
    masks mark its pixels 255 (the crack's darkening over half strength), the rest 0. With
    ``joints``, a site whose slabs meet in a straight dark joint across every photo, which
    the masks leave clear: what a segmenter calls a crack on a site it never saw."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(photos):
        image = concrete_texture(rng, size, size)
        crack = crack_mask(rng, size, size, max_width=rng.uniform(2, 6)) if index % 4 else np.zeros((size, size))
        image *= (1 - rng.uniform(0.6, 0.85) * crack)[..., None]
        if joints:
            at = int(rng.integers(size // 4, 3 * size // 4))
            joint = (slice(at, at + 3), slice(None)) if index % 2 else (slice(None), slice(at, at + 3))
            image[joint] *= 0.3
        with atomic_path(root / "images" / f"{index:03d}.png") as temporary:
            Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8)).save(temporary, format="PNG")
        with atomic_path(root / "masks" / f"{index:03d}.png") as temporary:
            Image.fromarray(((crack > 0.5) * 255).astype(np.uint8)).save(temporary, format="PNG")
    return root


def crack_of_known_geometry(size: tuple[int, int], centreline: np.ndarray, width: float | np.ndarray,
                            supersample: int = 8) -> np.ndarray:
    """A crack mask (H x W float coverage, 0-1) of a centreline polyline (N x 2, x y) with a
    full width (one value, or one per point), drawn exactly: filled quads and round joints at
    ``supersample`` times the size, then averaged down, so its width is the width asked for
    (an anti-aliased rasteriser draws lines a pixel wider)."""
    import cv2

    height, width_px = size
    big = np.zeros((height * supersample, width_px * supersample), np.uint8)
    points = np.asarray(centreline, float) * supersample + (supersample - 1) / 2
    widths = np.broadcast_to(np.asarray(width, float), (len(points),)) * supersample
    for (a, b), (wa, wb) in zip(zip(points[:-1], points[1:]), zip(widths[:-1], widths[1:])):
        direction = b - a
        normal = np.array([-direction[1], direction[0]]) / max(1e-9, np.hypot(*direction))
        quad = np.array([a + normal * wa / 2, b + normal * wb / 2, b - normal * wb / 2, a - normal * wa / 2])
        cv2.fillPoly(big, [np.round(quad).astype(np.int32)], 255)
    along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])
    for point, w, at in zip(points[1:-1], widths[1:-1], along[1:-1]):  # joints of a bending crack
        if w / 2 <= at <= along[-1] - w / 2:  # flat ends: the crack ends where its centreline does
            cv2.circle(big, tuple(np.round(point).astype(int)), int(round(w / 2)), 255, -1)
    small = cv2.resize(big, (width_px, height), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255


def photo_of_known_crack(rng: np.random.Generator, size: tuple[int, int], centreline: np.ndarray,
                         width: float | np.ndarray, blur_sigma: float = 0.7, noise: float = 3.0,
                         jpeg_quality: int | None = 90, depth: float = 0.55) -> tuple[np.ndarray, np.ndarray]:
    """A photo (H x W x 3 uint8) of one crack of known width on concrete, as a camera sees it:
    the crack's exact coverage (crack_of_known_geometry, so the edges are anti-aliased) darkens
    the texture by ``depth``, then optical blur (Gaussian, ``blur_sigma`` px), sensor noise and
    JPEG at ``jpeg_quality`` (``photographed``); and the coverage itself, the truth."""
    height, width_px = size
    coverage = crack_of_known_geometry(size, centreline, width)
    surface = concrete_texture(rng, height, width_px)
    core = rng.uniform(0.25, 0.45) * surface.mean()  # a crack's inside: shadowed, darker than any grain
    photo = surface * (1 - coverage[..., None]) + (surface * (1 - depth) * 0.4 + core * 0.6) * coverage[..., None]
    return photographed(rng, photo, blur_sigma, noise, jpeg_quality), coverage


def photographed(rng: np.random.Generator, scene: np.ndarray, blur_sigma: float = 0.7, noise: float = 3.0,
                 jpeg_quality: int | None = 90) -> np.ndarray:
    """A scene (H x W x 3, 0-255) as a camera records it: optical blur (Gaussian, ``blur_sigma``
    px), sensor noise (``noise`` grey levels), 8 bits, and JPEG at ``jpeg_quality`` (None: none)."""
    import io

    import cv2

    photo = scene
    if blur_sigma > 0:
        photo = cv2.GaussianBlur(photo.astype(np.float32), (0, 0), blur_sigma)
    photo = np.clip(photo + rng.normal(0, noise, photo.shape), 0, 255).astype(np.uint8)
    if jpeg_quality:
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, format="JPEG", quality=jpeg_quality)
        photo = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return photo
