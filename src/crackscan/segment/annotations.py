"""Site masks from the tools inspectors draw them in, and strokes along a crack.

Exports are read as the tools write them:
- Label Studio's JSON export (a list of tasks): brush regions, in its own run-length code of
  the RGBA layer at the size Label Studio saw the photo, and polygons, in percent of the
  photo's width and height;
- CVAT for images 1.1 (annotations.xml, alone or in its export folder): masks (runs of 0s and
  1s over the mask's box, row by row, starting with 0s), polygons and polylines, in pixels;
- colour mask PNGs with the labelmap.txt beside them (CVAT's "Segmentation mask 1.1" and
  Pascal VOC exports): pixels of the crack label's colour are crack.
A region with the crack label is crack; any other region, and every pixel no region covers,
is background, because an inspector draws the cracks, not the concrete around them.

A crack drawn as a line (a CVAT polyline, a stroke on the web page) is where the hand went,
a few pixels off the crack. Each stroke is snapped to the darkest line within SNAP_PX of it
and given the width of that line's dark core; a band of BAND_PX around it is left unlabelled,
so no pixel the hand could have misplaced is taught either way.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from ..errors import CrackscanError

if TYPE_CHECKING:
    from .masksets import MaskedImage

UNLABELLED = 128  # in the masks crackscan writes: a pixel no label speaks for (masks.json says so)
SNAP_PX = 6
BAND_PX = 3
DEFAULT_STROKE_WIDTH_PX = 2.0  # where a stroke's line is too faint to measure
LABELMAP_FILE = "labelmap.txt"
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio names an uploaded file <8 hex>-<name>


@dataclasses.dataclass
class Region:
    labels: tuple[str, ...]
    kind: str  # "polygon" (filled), "line" (a stroke along a crack) or "mask"
    points: np.ndarray | None = None  # (n, 2) x, y; in [0, 1] of the photo's sides when ``relative``
    relative: bool = False
    mask: np.ndarray | None = None  # bool, for "mask"
    corner: tuple[int, int] = (0, 0)  # where ``mask`` sits, on the ``drawn_on`` size
    drawn_on: tuple[int, int] | None = None  # (width, height) of the photo as the tool showed it
    width_px: float | None = None  # a line's width when the drawer gave one


@dataclasses.dataclass
class Annotation:
    names: tuple[str, ...]  # the names the photo may have in the photos folder, best first
    regions: list[Region] | None  # None: the tool holds the photo but nobody annotated it


def read_export(path: str | Path) -> tuple[str, list[Annotation]]:
    """The tool's name and each photo's regions, from a Label Studio JSON export or a CVAT
    for images XML (the file, or the export folder holding annotations.xml)."""
    path = Path(path)
    if path.is_dir() and (path / "annotations.xml").is_file():
        path = path / "annotations.xml"
    if not path.is_file():
        raise CrackscanError(f"annotations not found: {path}")
    if path.suffix.lower() == ".json":
        return "Label Studio", _label_studio(path)
    if path.suffix.lower() == ".xml":
        return "CVAT", _cvat(path)
    raise CrackscanError(f"{path}: not an export crackscan reads (Label Studio JSON, CVAT for images XML, or a folder "
                         f"of mask PNGs)")


def is_export(path: str | Path) -> bool:
    path = Path(path)
    return (path.is_file() and path.suffix.lower() in (".json", ".xml")) or (path / "annotations.xml").is_file()


def crack_labels_of(text: str) -> frozenset[str]:
    return frozenset(name.strip().casefold() for name in text.split(",") if name.strip())


def labels_found(annotations: Iterable[Annotation]) -> list[str]:
    return sorted({label for a in annotations for r in a.regions or () for label in r.labels})


# ---- Label Studio --------------------------------------------------------------------

def _label_studio(path: Path) -> list[Annotation]:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise CrackscanError(f"{path} is not a readable Label Studio JSON export ({error})") from None
    tasks = [tasks] if isinstance(tasks, dict) else tasks
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise CrackscanError(f"{path} is not a Label Studio JSON export: it should be a list of tasks")
    found = []
    for task in tasks:
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        source = data.get("image") or next((v for v in data.values() if isinstance(v, str)), "")
        names = _names_from_url(str(source)) + _names_from_url(str(task.get("file_upload") or ""))
        if not names:
            continue
        done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        if not done:
            found.append(Annotation(tuple(dict.fromkeys(names)), None))
            continue
        # Several annotators: the latest word on the photo.
        chosen = max(done, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
        regions = [r for r in (_label_studio_region(result, path) for result in chosen.get("result") or []) if r]
        found.append(Annotation(tuple(dict.fromkeys(names)), regions))
    return found


def _names_from_url(url: str) -> list[str]:
    if not url:
        return []
    parsed = urllib.parse.urlparse(url)
    local = urllib.parse.parse_qs(parsed.query).get("d")  # /data/local-files/?d=folder/photo.jpg
    name = Path(urllib.parse.unquote(local[0] if local else parsed.path)).name
    if not name:
        return []
    return [name, _UPLOAD_PREFIX.sub("", name)] if _UPLOAD_PREFIX.match(name) else [name]


def _label_studio_region(result: dict, path: Path) -> Region | None:
    kind = str(result.get("type", "")).lower()
    value = result.get("value") if isinstance(result.get("value"), dict) else {}
    labels = tuple(str(label) for label in value.get(kind) or value.get("labels") or result.get(kind) or ())
    size = (result.get("original_width"), result.get("original_height"))
    drawn_on = size if all(isinstance(v, int) and v > 0 for v in size) else None
    if kind == "brushlabels":
        rle = value.get("rle") or result.get("rle")
        if drawn_on is None or not isinstance(rle, list):
            raise CrackscanError(f"{path}: a brush region without its rle and original_width/height")
        layer = decode_label_studio_rle(rle)
        if layer.size != drawn_on[0] * drawn_on[1] * 4:
            raise CrackscanError(f"{path}: a brush region decodes to {layer.size} values, not the "
                                 f"{drawn_on[0]}x{drawn_on[1]} RGBA layer it says it is")
        return Region(labels, "mask", mask=layer.reshape(drawn_on[1], drawn_on[0], 4)[..., 3] > 0, drawn_on=drawn_on)
    if kind == "polygonlabels":
        points = np.asarray(value.get("points") or [], float).reshape(-1, 2) / 100
        return Region(labels, "polygon", points=points, relative=True) if len(points) >= 3 else None
    return None  # boxes, key points, choices: no pixels to learn from


def decode_label_studio_rle(rle: Sequence[int]) -> np.ndarray:
    """Label Studio's brush code (thi.ng's rle-pack): a 32-bit value count, a 5-bit word size,
    four 4-bit run-length sizes, then runs: a 1 bit, a size index and a length, one word for
    the whole run; or a 0 bit, a size index and a length, one word per value."""
    bits = np.unpackbits(np.asarray(rle, np.uint8))
    position = 0

    def read(size: int) -> int:
        nonlocal position
        if position + size > len(bits):
            raise CrackscanError("a Label Studio brush region's rle ends early: the export is damaged")
        chunk = bits[position:position + size].astype(np.int64)
        position += size
        return int(chunk @ (1 << np.arange(size - 1, -1, -1, dtype=np.int64)))

    count, word = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(count, np.uint8)
    i = 0
    while i < count:
        repeated = read(1)
        end = min(count, i + 1 + read(sizes[read(2)]))
        if repeated:
            out[i:end] = read(word)
        else:
            for j in range(i, end):
                out[j] = read(word)
        i = end
    return out


# ---- CVAT ----------------------------------------------------------------------------

def _cvat(path: Path) -> list[Annotation]:
    import xml.etree.ElementTree as ElementTree  # expat refuses entity expansion bombs (Python >= 3.7.1)

    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise CrackscanError(f"{path} is not a readable CVAT XML export ({error})") from None
    images = root.findall("image")
    if not images:
        raise CrackscanError(f"{path} holds no <image> (export the task as 'CVAT for images 1.1'; 'CVAT for video' "
                             "is not read)")
    found = []
    for image in images:
        name = image.get("name") or ""
        try:
            drawn_on = (int(image.get("width")), int(image.get("height")))
            regions = [r for r in (_cvat_region(shape, drawn_on) for shape in image) if r]
        except (TypeError, ValueError) as error:
            raise CrackscanError(f"{path}: image {name!r:.80} has a shape crackscan cannot read ({error})") from None
        found.append(Annotation(tuple(dict.fromkeys([name, Path(name).name])), regions))
    return found


def _points(text: str) -> np.ndarray:
    return np.asarray([[float(v) for v in pair.split(",")] for pair in text.split(";") if pair.strip()], float)


def _cvat_region(shape, drawn_on: tuple[int, int]) -> Region | None:
    labels = (shape.get("label") or "",)
    if shape.tag == "polygon":
        return Region(labels, "polygon", points=_points(shape.get("points", "")), drawn_on=drawn_on)
    if shape.tag == "polyline":
        return Region(labels, "line", points=_points(shape.get("points", "")), drawn_on=drawn_on)
    if shape.tag == "mask":
        left, top, width, height = (int(float(shape.get(k))) for k in ("left", "top", "width", "height"))
        runs = [int(v) for v in (shape.get("rle") or "").split(",") if v.strip()]
        flat = np.zeros(width * height, bool)
        ends = np.cumsum(runs)
        for start, end in zip(ends[0::2], ends[1::2]):  # runs of 0s, then of 1s, in turn
            flat[start:end] = True
        return Region(labels, "mask", mask=flat.reshape(height, width), corner=(left, top), drawn_on=drawn_on)
    return None


# ---- colour masks with a labelmap.txt ------------------------------------------------

def labelmap_of(folder: str | Path) -> Path | None:
    """The labelmap.txt of a colour mask export: in the masks folder or the export above it."""
    folder = Path(folder)
    return next((place / LABELMAP_FILE for place in (folder, folder.parent) if (place / LABELMAP_FILE).is_file()), None)


def crack_colours(labelmap: Path, crack_labels: frozenset[str]) -> list[tuple[int, int, int]]:
    """The colours of the crack labels in a labelmap.txt (lines of ``label:r,g,b:parts:actions``)."""
    colours, names = [], []
    for line in labelmap.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        names.append(name.strip())
        if name.strip().casefold() in crack_labels:
            try:
                colours.append(tuple(int(v) for v in rest.split(":")[0].split(",")))
            except ValueError:
                raise CrackscanError(f"{labelmap}: {line!r:.80} has no r,g,b colour") from None
    if not colours:
        raise CrackscanError(f"{labelmap} names no crack label ({', '.join(sorted(crack_labels))}); its labels: "
                             f"{', '.join(names) or 'none'}: name yours with --crack-label")
    return colours


def colour_mask(path: Path, colours: list[tuple[int, int, int]]) -> np.ndarray:
    """The crack pixels of a colour mask PNG: those of a crack label's colour."""
    from ..images import ImageReadError

    from PIL import Image

    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except Exception as error:  # noqa: BLE001 - any decode failure is this file's
        raise ImageReadError(str(path), f"unreadable mask ({error})") from None
    crack = np.zeros(rgb.shape[:2], bool)
    for colour in colours:
        crack |= (rgb == np.asarray(colour, np.uint8)).all(axis=2)
    return crack


# ---- regions to pixels ---------------------------------------------------------------

def rasterize(regions: Sequence[Region], pixels: np.ndarray, crack_labels: frozenset[str], rest: int = 0,
              base: np.ndarray | None = None) -> np.ndarray:
    """A photo's mask from its regions: 255 crack, 0 background, UNLABELLED around strokes;
    where no region speaks, ``base`` (a mask of those values) or else ``rest``. Cracks are
    drawn over whatever else covers them."""
    from PIL import Image, ImageDraw

    height, width = pixels.shape[:2]
    values = np.full((height, width), rest, np.uint8) if base is None else base.astype(np.uint8).copy()
    crack, band = np.zeros((height, width), bool), np.zeros((height, width), bool)
    gray = None
    for region in sorted(regions, key=lambda r: bool(crack_labels & {label.casefold() for label in r.labels})):
        is_crack = bool(crack_labels & {label.casefold() for label in region.labels})
        if region.kind == "mask":
            drawn = _placed(region, width, height)
        elif region.kind == "polygon":
            points = _scaled(region, width, height)
            canvas = Image.new("1", (width, height))
            ImageDraw.Draw(canvas).polygon([tuple(p) for p in points], fill=1, outline=1)
            drawn = np.asarray(canvas)
        else:
            gray = _gray(pixels) if gray is None else gray
            line = _scaled(region, width, height)
            if is_crack:
                path, line_width = snapped_stroke(gray, line, region.width_px)
                core, margin = near_path(path, (width, height), line_width / 2, line_width / 2 + BAND_PX)
                crack |= core
                band |= margin
                continue
            drawn, _ = near_path(line, (width, height), (region.width_px or 2 * SNAP_PX) / 2, 0)
        if is_crack:
            crack |= drawn
        else:
            values[drawn] = 0
    values[band & ~crack] = UNLABELLED
    values[crack] = 255
    return values


def _scaled(region: Region, width: int, height: int) -> np.ndarray:
    points = np.asarray(region.points, float).reshape(-1, 2)
    if region.relative:
        return points * [width, height]
    if region.drawn_on and tuple(region.drawn_on) != (width, height):
        return points * [width / region.drawn_on[0], height / region.drawn_on[1]]
    return points


def _placed(region: Region, width: int, height: int) -> np.ndarray:
    drawn_w, drawn_h = region.drawn_on or (width, height)
    layer = np.zeros((drawn_h, drawn_w), bool)
    x, y = region.corner
    part = region.mask[:max(0, drawn_h - y), :max(0, drawn_w - x)]
    layer[y:y + part.shape[0], x:x + part.shape[1]] = part
    if (drawn_w, drawn_h) == (width, height):
        return layer
    from PIL import Image

    return np.asarray(Image.fromarray(layer).resize((width, height), Image.NEAREST))


def sizes_agree(drawn_on: tuple[int, int] | None, width: int, height: int) -> bool:
    """Whether a region drawn on a ``drawn_on`` photo can be placed on this one: the same
    photo, perhaps scaled, never turned (EXIF rotation seen by one tool and not the other)."""
    if drawn_on is None:
        return True
    return abs(drawn_on[0] / drawn_on[1] - width / height) <= 0.01 * width / height


def _gray(pixels: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(pixels[..., :3].astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32), 1.0)


def snapped_stroke(gray: np.ndarray, points: np.ndarray, width_px: float | None = None
                   ) -> tuple[np.ndarray, float]:
    """A stroke drawn along a crack, moved onto the darkest line within SNAP_PX of it (along
    each point's normal, the offsets smoothed along the stroke so it cannot zigzag between
    dark specks), and the width of that line's dark core at half its depth (the median along
    the stroke; DEFAULT_STROKE_WIDTH_PX where it is too faint to read), unless given."""
    from scipy.ndimage import map_coordinates, median_filter

    path = _resampled(np.asarray(points, float).reshape(-1, 2))
    if len(path) < 2:
        return path, width_px or DEFAULT_STROKE_WIDTH_PX
    tangent = np.gradient(path, axis=0)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-6)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)

    def across(centres: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        where = centres[:, None, :] + offsets[None, :, None] * normal[:, None, :]
        return map_coordinates(gray, [where[..., 1], where[..., 0]], order=1, mode="nearest")

    reach = np.arange(-SNAP_PX, SNAP_PX + 0.25, 0.5)
    profile = across(path, reach)
    contrast = profile.max(axis=1, keepdims=True) - profile.min(axis=1, keepdims=True)
    # The darkest point, pulled a little toward where the hand went.
    chosen = reach[np.argmin(profile + 0.15 * contrast * np.abs(reach) / SNAP_PX, axis=1)]
    chosen = median_filter(chosen, size=min(len(chosen) | 1, 9), mode="nearest")
    path = path + chosen[:, None] * normal
    if width_px is not None:
        return path, float(width_px)
    step = 0.25
    offsets = np.arange(-2 * SNAP_PX, 2 * SNAP_PX + step / 2, step)
    profile = across(path, offsets)
    middle = len(offsets) // 2
    widths = []
    for row in profile:
        core = row[middle - 4:middle + 5].min()
        background = min(np.median(row[:len(offsets) // 4]), np.median(row[-len(offsets) // 4:]))
        if background - core < 8:  # grey levels: too faint to place two edges
            continue
        dark = row < (core + background) / 2
        left = middle - np.argmin(dark[middle::-1]) if not dark[middle::-1].all() else 0
        right = middle + np.argmin(dark[middle:]) if not dark[middle:].all() else len(row)
        widths.append((right - left) * step)
    width = float(np.median(widths)) if len(widths) >= max(2, len(path) // 4) else DEFAULT_STROKE_WIDTH_PX
    return path, float(np.clip(width, 1.0, 2 * SNAP_PX))


def _resampled(points: np.ndarray, step: float = 1.0) -> np.ndarray:
    if len(points) < 2:
        return points
    lengths = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    if lengths[-1] == 0:
        return points[:1]
    at = np.linspace(0, lengths[-1], max(2, int(np.ceil(lengths[-1] / step)) + 1))
    return np.stack([np.interp(at, lengths, points[:, 0]), np.interp(at, lengths, points[:, 1])], axis=1)


def near_path(path: np.ndarray, size: tuple[int, int], inner: float, outer: float) -> tuple[np.ndarray, np.ndarray]:
    """The pixels within ``inner`` px of a polyline (at least the pixels it passes through),
    and those within ``outer`` px, over a photo of ``size``; computed in the path's box."""
    from scipy.ndimage import distance_transform_edt

    width, height = size
    reach = int(np.ceil(max(inner, outer))) + 2
    low = np.maximum(np.floor(path.min(axis=0)).astype(int) - reach, 0)
    high = np.minimum(np.ceil(path.max(axis=0)).astype(int) + reach + 1, [width, height])
    core, margin = np.zeros((height, width), bool), np.zeros((height, width), bool)
    if (high <= low).any():
        return core, margin
    box_w, box_h = high - low
    on_path = np.zeros((box_h, box_w), bool)
    dense = _resampled(path - low, 0.5) if len(path) > 1 else path - low
    columns, rows = np.clip(np.round(dense).astype(int), 0, [box_w - 1, box_h - 1]).T
    on_path[rows, columns] = True
    distance = distance_transform_edt(~on_path)
    window = (slice(low[1], high[1]), slice(low[0], high[0]))
    core[window] = distance <= max(inner, 0.5)
    margin[window] = distance <= outer
    return core, margin


def marks_mask(pixels: np.ndarray, not_cracks: Sequence[tuple[np.ndarray, float]], strokes: Sequence[np.ndarray],
               accepted: np.ndarray) -> np.ndarray:
    """A photo's mask from the web page's marks on the crack map the user saw (``accepted``:
    the model's crack pixels at the page's threshold): each false crack clear, its whole patch
    of the map and out to SNAP_PX beyond its measured edges; each stroke along a missed crack
    snapped onto it (crack, in a band left unlabelled); every other pixel as the map drew it.

    The user looked at the whole map and corrected what was wrong, so what they left is what
    they accept. Strokes alone label no clear pixel, and a decoder that calls everything crack
    scores best on them: GAPs384 fell from 0.51 to 0.19 on other photos that way, and to 0.33
    with only 8 px around each mark accepted; with the whole map it rose to 0.62
    (benchmarks/segmenter_marks.py, results/segmenter-marks.json)."""
    from scipy.ndimage import label

    regions = [Region(("not a crack",), "line", points=np.asarray(line, float), width_px=width + 2 * SNAP_PX)
               for line, width in not_cracks]
    regions += [Region(("crack",), "line", points=line) for line in strokes]
    height, width = pixels.shape[:2]
    # A false crack is clear wherever the map drew it: its whole patch, which a blurred map
    # draws wider than the crack measured on the photo.
    patches, _ = label(accepted)
    cleared = np.zeros((height, width), bool)
    for line, crack_width in not_cracks:
        under = patches[near_path(np.asarray(line, float), (width, height), crack_width / 2 + 1, 0)[0]]
        cleared |= np.isin(patches, under[under > 0])
    base = np.where(accepted & ~cleared, 255, 0)
    return rasterize(regions, pixels, frozenset({"crack"}), base=base)


# ---- a site's photos with what the tools say of them ---------------------------------

Reader = Callable[[], "tuple[np.ndarray, np.ndarray, np.ndarray]"]


def exported_sources(photos: str | Path | Sequence[str | Path], masks: str | Path, crack_label: str = "crack"
                     ) -> tuple[list[tuple["MaskedImage", Reader]], list[tuple[str, str]], str]:
    """The site photos a tool's export speaks of, each with a reader of its pixels, crack
    mask and pixel weights (0 in the band around a stroke); the photos and annotations left
    out, with why; and the tool's name. ``masks`` is a Label Studio JSON or CVAT XML export,
    or a folder of colour mask PNGs with its labelmap.txt."""
    from ..files import file_sha256
    from ..images import list_image_files, read_pixels
    from .masksets import MaskedImage

    wanted = crack_labels_of(crack_label)
    sources = [photos] if isinstance(photos, (str, Path)) else list(photos)
    found = list_image_files(sources)
    if not found:
        raise CrackscanError(f"no photos found in {' '.join(map(str, sources))}")
    masks = Path(masks)
    if not is_export(masks):
        return _colour_sources(found, masks, wanted)
    tool, annotations = read_export(masks)
    labels = labels_found(annotations)
    if labels and not wanted & {label.casefold() for label in labels}:
        raise CrackscanError(f"no region in {masks} is labelled {crack_label!r} (its labels: {', '.join(labels)}): "
                             "name the crack label with --crack-label")
    by_name: dict[str, list[Path]] = {}
    for photo in found:
        by_name.setdefault(photo.name, []).append(photo)
    skipped, paired, used = [], [], set()
    for annotation in annotations:
        matches = next((by_name[name] for name in annotation.names if name in by_name), None)
        if matches is None:
            skipped.append((annotation.names[0], f"annotated in {masks.name} but not among the photos given"))
            continue
        if len(matches) > 1:
            skipped.append((str(matches[0]), f"{len(matches)} photos are named {matches[0].name}: {tool} names its "
                                             "photos by file name, so keep one"))
            used.update(matches)
            continue
        photo = matches[0]
        used.add(photo)
        if annotation.regions is None:
            skipped.append((str(photo), f"not annotated in {tool}"))
            continue
        paired.append((photo, annotation.regions))
    skipped += [(str(photo), f"not in {masks.name}") for photo in found if photo not in used]

    def reader(photo: Path, regions: list[Region]) -> Reader:
        def read() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            from ..images import ImageReadError

            pixels = read_pixels(photo, name=str(photo))
            height, width = pixels.shape[:2]
            for region in regions:
                if not sizes_agree(region.drawn_on, width, height):
                    raise ImageReadError(str(photo), f"{tool} drew on it at {region.drawn_on[0]}x{region.drawn_on[1]} "
                                                     f"px, but it reads {width}x{height} (turned by its EXIF "
                                                     "orientation in one and not the other?)", "unreadable")
            values = rasterize(regions, pixels, wanted)
            return pixels, values == 255, (values != UNLABELLED).astype(np.float32)
        return read

    return [(MaskedImage(photo, None, "site", "train", file_sha256(photo)), reader(photo, regions))
            for photo, regions in paired], skipped, tool


def _colour_sources(found: list[Path], masks: Path, wanted: frozenset[str]):
    from ..files import file_sha256
    from ..images import ImageReadError, read_pixels
    from ..masks import pair_with_masks
    from .masksets import MaskedImage

    labelmap = labelmap_of(masks)
    if labelmap is None:
        raise CrackscanError(f"{masks} is a masks folder without a {LABELMAP_FILE}: plain masks (0 background, 255 "
                             "crack) are read as they are")
    colours = crack_colours(labelmap, wanted)
    folder = masks / "SegmentationClass" if (masks / "SegmentationClass").is_dir() else masks
    pairs, skipped = pair_with_masks(found, folder)

    def reader(photo: Path, mask: Path) -> Reader:
        def read() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            pixels = read_pixels(photo, name=str(photo))
            crack = colour_mask(mask, colours)
            if crack.shape != pixels.shape[:2]:
                raise ImageReadError(str(mask), f"mask is {crack.shape[1]}x{crack.shape[0]} px, its photo "
                                                f"{pixels.shape[1]}x{pixels.shape[0]}", "unreadable")
            return pixels, crack, np.ones(crack.shape, np.float32)
        return read

    return [(MaskedImage(p.photo, None, "site", "train", file_sha256(p.photo)), reader(p.photo, p.mask))
            for p in pairs], list(skipped), "colour masks"
