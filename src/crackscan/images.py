"""Reading any image to RGB pixels through one guarded decode, finding image files, and
reading many in threads ahead of the model.

Every decoder failure on untrusted bytes becomes an ``ImageReadError`` with a kind, so
callers decide by kind, never by wording; a bad file in a folder is reported and skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import stat
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import CrackscanError
from .settings import DEFAULT_MAX_PIXELS

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


# The formats Pillow may decode, judged by content. Pillow knows some forty more (DDS,
# JPEG 2000, PPM, PSD, ...); each is parser code that a crafted upload could reach, and no
# camera or dataset of crack photos uses them, so they are refused as unsupported.
DECODED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")


# Files an OS or a sync tool drops into folders; not images anybody meant to label.
_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})


ImageSource = Any  # a path (str or Path), raw bytes, a PIL image or an HxWxC array

# Pillow warns per damaged file ("Corrupt EXIF data", "Truncated File Read"); crackscan reports
# each file it cannot read once, as skipped with the reason, so these lines would only repeat it.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


class ImageReadError(CrackscanError):
    """One image could not be read: ``source`` says which, ``reason`` why, ``kind`` what
    sort of problem (one of READ_ERROR_KINDS), so callers decide by kind, not by wording."""

    def __init__(self, source: str, reason: str, kind: str = "corrupt"):
        if kind not in READ_ERROR_KINDS:
            raise ValueError(f"unknown read-error kind {kind!r}")
        self.source = str(source)
        self.reason = reason
        self.kind = kind
        super().__init__(f"{source}: {reason}")


# not_image: no image format recognised; unsupported: an image, but not a format crackscan
# reads; corrupt: a supported format whose content is damaged; too_many_pixels: over the
# pixel limit (refused before decoding); too_large: over a byte limit; unreadable: the file
# itself cannot be had (missing, a folder, no permission).
READ_ERROR_KINDS = ("not_image", "unsupported", "corrupt", "too_many_pixels", "too_large", "unreadable")


def files_under(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower() not in _IGNORED_NAMES:
                yield Path(dirpath) / name


def list_image_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expands files, folders (recursively, image suffixes only) and glob patterns."""
    found: list[Path] = []
    for entry in paths:
        entry = str(entry)
        path = Path(entry)
        if path.is_dir():
            found.extend(sorted(p for p in files_under(path) if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.exists():
            found.append(path)
        elif any(ch in entry for ch in "*?["):
            anchor = Path(path.anchor) if path.is_absolute() else Path(".")
            pattern = str(path.relative_to(anchor)) if path.is_absolute() else entry
            matches = sorted(p for p in anchor.glob(pattern) if p.is_file())
            if not matches:
                raise CrackscanError(f"no files match {entry}")
            found.extend(matches)
        else:
            raise CrackscanError(f"no such file or folder: {entry}")
    return found


def max_file_bytes(max_pixels: int | None) -> int | None:
    """The most bytes an image file of at most ``max_pixels`` pixels can hold in a format
    crackscan reads: uncompressed 16-bit RGBA (8 bytes a pixel) plus headers. A larger file
    is refused before it is read, whatever its name says."""
    return None if max_pixels is None else 8 * max_pixels + (1 << 20)


SNIFF_ABOVE_BYTES = 16 << 20  # over this, a file's first bytes must look like an image before it is read whole


def _starts_like_an_image(head: bytes) -> bool:
    """The decoded formats' signatures (_SUPPORTED_MAGIC), and the rest of their variants: any
    JPEG marker after FF D8, BMP, BigTIFF."""
    if head[:4] == b"RIFF":  # a RIFF file is an image only as WebP (not AVI, not WAV)
        return head[8:12] == b"WEBP"
    return (head[:4] in _SUPPORTED_MAGIC or head[:3] == b"\xff\xd8\xff" or head[:2] == b"BM"
            or head[:4] in (b"II+\x00", b"MM\x00+"))


def exif_number(value: Any) -> float | None:
    """An EXIF field as a finite number, or None: cameras and editors write text ("fifty"),
    bytes, tuples and 0/0 rationals where a number belongs, and one odd photo must not stop a
    survey nor put NaN into its figures."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if isinstance(value, (bytes, bytearray, str, bool, tuple, list, dict)) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def read_image_file(path: str | os.PathLike, max_bytes: int | None = max_file_bytes(DEFAULT_MAX_PIXELS)) -> bytes:
    """A regular file's bytes, or an ImageReadError that says why they cannot be had.

    Opened without blocking and judged before any byte is read: a FIFO would block forever,
    a device (a link to /dev/zero) never ends, and a file over ``max_bytes`` would take its
    size in memory only to be refused."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        reason = "a link to nothing (dangling symlink)" if os.path.islink(path) else "file not found"
        raise ImageReadError(path, reason, "unreadable") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not an image", "unreadable") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied", "unreadable") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot read ({error.strerror or error})", "unreadable") from None
    try:
        facts = os.fstat(descriptor)
        if stat.S_ISDIR(facts.st_mode):
            raise ImageReadError(path, "is a folder, not an image", "unreadable")
        if not stat.S_ISREG(facts.st_mode):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(facts.st_mode) else "a device" if stat.S_ISCHR(facts.st_mode)
                    or stat.S_ISBLK(facts.st_mode) else "a socket" if stat.S_ISSOCK(facts.st_mode) else "not a file")
            raise ImageReadError(path, f"is {kind}, not an image file: not read", "unreadable")
        if max_bytes is not None and facts.st_size > max_bytes:
            raise ImageReadError(path, f"{facts.st_size:,} bytes, more than an image within the pixel limit can hold "
                                       f"({max_bytes:,}): not read", "too_large")
        os.set_blocking(descriptor, True)
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            if facts.st_size > SNIFF_ABOVE_BYTES:
                # A large file is judged by its first bytes before the rest is read: a 1 GB
                # video or archive in a folder of photos costs a read of 16 bytes, not its size.
                head = handle.read(16)
                if not _starts_like_an_image(head):
                    raise ImageReadError(path, f"not an image (its first bytes are no image format's; "
                                               f"{facts.st_size:,} bytes not read)", "not_image")
                handle.seek(0)
            return handle.read()
    except OSError as error:
        raise ImageReadError(path, f"cannot read ({error.strerror or error})", "unreadable") from None
    finally:
        os.close(descriptor)


def open_image(source: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Opens any supported source as an RGB PIL image, EXIF orientation applied."""
    if isinstance(source, np.ndarray):
        return Image.fromarray(_array_to_rgb_uint8(source))
    if isinstance(source, Image.Image):
        return _upright_rgb(source, getattr(source, "filename", None) or "image")
    if isinstance(source, (bytes, bytearray)):
        return _open_bytes(bytes(source), "image bytes", max_pixels)
    return _open_bytes(read_image_file(source, max_file_bytes(max_pixels)), str(source), max_pixels)


def read_pixels(source: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """Any supported source as HxWx3 uint8 RGB pixels, EXIF orientation applied. ``name``
    says what raw bytes are (a file, an upload) in an error's message.

    Plain JPEGs, nearly every photo and patch, are decoded by simplejpeg: libjpeg-turbo's
    pixels, the same as Pillow's (a test checks this on the Özgenel images), at under half
    the cost, which matters when decoding shares two cores with the model. Every other file
    takes Pillow's path.
    """
    return read_for_shrinking(source, None, max_pixels, name)[0]


def read_mask_values(source: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A mask image as HxW uint8 values (its brightest channel, EXIF orientation applied),
    through the same guarded decode as photos. Pixels that its alpha channel makes fully
    transparent are 0: a transparent background is no crack, whatever colour it stores."""
    name = str(source)
    image = _open_header(read_image_file(source, max_file_bytes(max_pixels)), name, max_pixels)
    try:
        image.load()
        image = _exif_upright(image)
        has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
        opaque = np.asarray(image.convert("RGBA"))[..., 3] > 0 if has_alpha else None
        values = np.asarray(_to_rgb(image)).max(axis=2)
    except MemoryError:
        raise ImageReadError(name, "too large to decode", "too_many_pixels") from None
    except Exception as error:  # noqa: BLE001 - see _open_bytes
        raise ImageReadError(name, f"truncated or corrupt image ({_describe(error)})") from None
    return values if opaque is None else np.where(opaque, values, 0).astype(np.uint8)


def read_for_shrinking(
    source: ImageSource,
    target: Callable[[int, int], tuple[int, int]] | None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Pixels to be resized to ``target(width, height)`` (or less), and the image's upright
    (width, height). A plain JPEG that will shrink 2x or more is decoded at 1/2, 1/4 or 1/8
    of its size by libjpeg-turbo's DCT scaling, down to no less than the target: the same
    low-pass an area resize applies, at a quarter of the cost of decoding everything and
    averaging it away. The pixels may therefore be smaller than the image."""
    if isinstance(source, np.ndarray):
        pixels = _array_to_rgb_uint8(source)
    elif isinstance(source, (bytes, bytearray, str, os.PathLike)):
        if isinstance(source, (bytes, bytearray)):
            content, name = bytes(source), name or "image bytes"
        else:
            content, name = read_image_file(source, max_file_bytes(max_pixels)), name or str(source)
        decoded = _decode_plain_jpeg(content, max_pixels, target)
        if decoded is not None:
            return decoded
        pixels = np.asarray(_open_bytes(content, name, max_pixels))
    else:
        pixels = np.asarray(open_image(source, max_pixels))
    return pixels, (pixels.shape[1], pixels.shape[0])


DCT_SCALES = (8, 4, 2)  # libjpeg-turbo's fast power-of-two reductions, largest first


def _decode_plain_jpeg(content: bytes, max_pixels: int | None,
                       target: Callable[[int, int], tuple[int, int]] | None = None
                       ) -> tuple[np.ndarray, tuple[int, int]] | None:
    """libjpeg-turbo's decoding of a sound, upright RGB or greyscale JPEG within the pixel
    limit, and its size; None for anything else, which Pillow then reads or explains."""
    if content[:2] != b"\xff\xd8":
        return None
    import simplejpeg

    try:
        if _has_exif(content):  # its orientation is Pillow's to read
            header = Image.open(io.BytesIO(content), formats=("JPEG",))  # parses the header only
            plain = header.format == "JPEG" and header.mode in ("RGB", "L") and _stored_upright(header)
            width, height = header.width, header.height
        else:
            # libjpeg-turbo's own header read: Pillow's cost a fifth of a 227 px patch's decoding.
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(content)
            plain = colorspace in ("YCbCr", "Gray", "RGB")
        plain = plain and (max_pixels is None or width * height <= max_pixels)
    except Exception:  # Pillow's path will name what is wrong with the file
        return None
    if not plain:
        return None
    reduction = {}
    if target is not None:
        wanted_width, wanted_height = target(width, height)
        divisor = next((d for d in DCT_SCALES if width >= d * wanted_width and height >= d * wanted_height), 1)
        if divisor > 1:
            # simplejpeg takes the smallest scale reaching these sides: exactly 1/divisor.
            reduction = {"min_width": -(-width // divisor), "min_height": -(-height // divisor)}
    try:
        # strict: any libjpeg warning (a truncated or corrupt stream) is an error here, and
        # Pillow's path then decides as it always has.
        return simplejpeg.decode_jpeg(content, colorspace="RGB", strict=True, **reduction), (width, height)
    except ValueError:
        return None


def _has_exif(content: bytes) -> bool:
    """Whether a JPEG's segments before its image data hold an EXIF block (APP1 "Exif"), or
    cannot be walked: then Pillow reads the header, orientation included."""
    at = 2
    while at + 4 <= len(content):
        if content[at] != 0xFF:
            return True
        marker = content[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker == 0xDA or 0xD0 <= marker <= 0xD9:  # start of scan, or a marker with no length
            return False
        length = int.from_bytes(content[at + 2:at + 4], "big")
        if marker == 0xE1 and content[at + 4:at + 10] == b"Exif\x00\x00":
            return True
        at += 2 + length
    return True


def _open_bytes(content: bytes, name: str, max_pixels: int | None) -> Image.Image:
    """The one guarded decode of untrusted bytes: whatever a decoder raises on a damaged
    file (Pillow's plugins raise ValueError, TypeError, struct.error, NotImplementedError,
    IndexError, ... on crafted headers) becomes an ImageReadError with the reason."""
    return _upright_rgb(_open_header(content, name, max_pixels), name)


def image_pixel_count(content: bytes, name: str = "image bytes", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> int:
    """How many pixels ``content`` decodes to, read from its header alone: what a server
    needs to budget memory before it decodes anything."""
    image = _open_header(content, name, max_pixels)
    return image.width * image.height


def _open_header(content: bytes, name: str, max_pixels: int | None) -> Image.Image:
    """The image with only its header parsed, refused if it declares more than ``max_pixels``."""
    try:
        image = Image.open(io.BytesIO(content), formats=DECODED_FORMATS)
    except UnidentifiedImageError:
        return _unidentified(content, name)
    except Image.DecompressionBombError as error:  # Pillow's own, far larger limit
        raise ImageReadError(name, f"over the pixel limit ({_describe(error)})", "too_many_pixels") from None
    except MemoryError:
        raise ImageReadError(name, "too large to decode", "too_many_pixels") from None
    except Exception as error:  # noqa: BLE001 - any decoder failure is a corrupt file
        raise ImageReadError(name, f"truncated or corrupt image ({_describe(error)})") from None
    if max_pixels is not None and image.width * image.height > max_pixels:
        raise ImageReadError(name, f"{image.width}x{image.height} is over the pixel limit of {max_pixels:,} pixels",
                             "too_many_pixels")
    return image


def _unidentified(content: bytes, name: str) -> Image.Image:
    """Tells an image in a format crackscan does not decode from content that is no image."""
    try:
        with Image.open(io.BytesIO(content)) as other:
            found = other.format
    except Exception:  # noqa: BLE001 - unknown to every plugin, or damaged: not an image to us
        found = None
    if found is not None and found not in DECODED_FORMATS:
        raise ImageReadError(name, f"unsupported image format {found} (crackscan reads JPEG, PNG, BMP, TIFF and "
                                   "WebP)", "unsupported") from None
    if found is None and content[:4] in _SUPPORTED_MAGIC:
        # A supported format's signature with a header no plugin accepts: damaged, not foreign.
        raise ImageReadError(name, "truncated or corrupt image (unreadable header)") from None
    raise ImageReadError(name, "not an image (unrecognised content)", "not_image") from None


# First bytes of the decoded formats, to call a damaged header corrupt rather than "not an image".
_SUPPORTED_MAGIC = (b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1", b"\xff\xd8\xff\xdb", b"\xff\xd8\xff\xee",
                    b"\x89PNG", b"II*\x00", b"MM\x00*", b"RIFF")


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text and text[0] else type(error).__name__


def _upright_rgb(image: Image.Image, name: str) -> Image.Image:
    try:
        image.load()
        return _to_rgb(_exif_upright(image))
    except MemoryError:
        raise ImageReadError(name, "too large to decode", "too_many_pixels") from None
    except Exception as error:  # noqa: BLE001 - see _open_bytes
        raise ImageReadError(name, f"truncated or corrupt image ({_describe(error)})") from None


def _stored_upright(image: Image.Image) -> bool:
    return image.getexif().get(0x0112, 1) in (None, 1)  # EXIF orientation: 1 or absent


def _exif_upright(image: Image.Image) -> Image.Image:
    try:
        # Most images are stored upright; exif_transpose would still copy them.
        if _stored_upright(image):
            return image
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not cost the image: keep it as stored
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float32)
        # 16-bit samples arrive as 0..65535; scale to 8 bits rather than clip to white.
        if values.max(initial=0) > 255:
            values = values / 257.0
        return Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")


def _array_to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageReadError("array", f"must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}", "not_image")
    if array.dtype != np.uint8:
        if array.dtype == np.uint16:
            array = array / 257.0
        elif np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0:
            array = array * 255.0
        array = np.clip(np.asarray(array, dtype=np.float32) + 0.5, 0, 255).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def resize_pixels(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """The one resampling wherever pixels are scaled for the model (training, predict, scan),
    so all of them see alike pixels.

    Bilinear, as the origin's ``image_dataset_from_directory`` resizes; from a 2x shrink on,
    area averaging, where bilinear would skip pixels and alias fine cracks away.
    """
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    import cv2

    shrink = max(pixels.shape[1] / width, pixels.shape[0] / height)
    interpolation = cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(pixels), (width, height), interpolation=interpolation)


def load_for_model(source: ImageSource, size: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    return load_for_model_and_size(source, size, max_pixels)[0]


def load_for_model_and_size(source: ImageSource, size: int, max_pixels: int | None = DEFAULT_MAX_PIXELS
                            ) -> tuple[np.ndarray, tuple[int, int]]:
    """Model-ready pixels (size x size) and the image's own upright (width, height)."""
    pixels, true_size = read_for_shrinking(source, lambda w, h: (size, size), max_pixels)
    return resize_pixels(pixels, size, size), true_size


@dataclasses.dataclass(frozen=True)
class FileFacts:
    sha256: str
    width: int
    height: int


def load_file_for_model(path: Path, size: int) -> tuple[np.ndarray, FileFacts]:
    """Reads a file once: the model-ready pixels, the content hash and the (upright) size."""
    content = read_image_file(path)
    pixels, (width, height) = read_for_shrinking(content, lambda w, h: (size, size), name=str(path))
    facts = FileFacts(hashlib.sha256(content).hexdigest(), width, height)
    return resize_pixels(pixels, size, size), facts


@dataclasses.dataclass
class Batch:
    indices: list[int]
    images: np.ndarray
    extras: list[Any]
    failures: list[tuple[int, ImageReadError]]


def iter_batches(
    items: Sequence[Any],
    load: Callable[[Any], Any],
    batch_size: int,
    workers: int = 2,
    prefetch_batches: int = 2,
) -> Iterator[Batch]:
    """Loads items in a thread pool, ahead of the consumer, and yields them batched in order.

    ``load`` returns an HxWx3 array or a tuple (array, extra). Items that raise
    ImageReadError come back in ``failures`` with their error; the rest keep going.
    Decoding in threads overlaps the model's work because PIL and the runtimes release
    the GIL; prefetching a bounded number of batches keeps memory flat on big folders.
    """

    def guarded(item: Any) -> Any:
        try:
            return load(item)
        except ImageReadError as error:
            return error

    starts = range(0, len(items), batch_size)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[tuple[int, list]] = deque()

        def submit(start: int) -> None:
            chunk = range(start, min(start + batch_size, len(items)))
            pending.append((start, [pool.submit(guarded, items[i]) for i in chunk]))

        queue = iter(starts)
        for start in queue:
            submit(start)
            if len(pending) > prefetch_batches:
                break
        while pending:
            start, futures = pending.popleft()
            next_start = next(queue, None)
            if next_start is not None:
                submit(next_start)
            indices, arrays, extras, failures = [], [], [], []
            for offset, future in enumerate(futures):
                result = future.result()
                if isinstance(result, ImageReadError):
                    failures.append((start + offset, result))
                    continue
                array, extra = result if isinstance(result, tuple) else (result, None)
                indices.append(start + offset)
                arrays.append(array)
                extras.append(extra)
            images = np.stack(arrays) if arrays else np.zeros((0, 0, 0, 3), np.uint8)
            yield Batch(indices, images, extras, failures)
