"""What a photo's EXIF says: where, when and with what it was taken (``photo_facts``, read at
scan time into its summary, so a report needs no second pass over thousands of photos), and its
lens and drone height (``lens_facts``, for the scale). One reader for both, of a path or of
bytes (a photo read from a URI), and one rule for its numbers (images.exif_number)."""

from __future__ import annotations

import io
import os
import re
import threading
from pathlib import Path
from typing import Any

from .images import exif_number

GPS_IFD, EXIF_IFD = 0x8825, 0x8769


# The last photo read, per thread: a scan asks for its lens (the scale) and its survey for its
# facts straight after, and each would otherwise open the photo again.
_last = threading.local()


def _read(source: Any) -> tuple[Any, dict, dict, int, str] | None:
    """The photo's EXIF, its Exif and GPS directories, its width and its XMP text; None when
    the source is no image crackscan can open (then it has no facts). Read once for the last
    photo asked about (the same bytes object, or the same path unchanged on disk)."""
    key = _identity(source)
    if key is not None and getattr(_last, "key", None) == key and (
            not isinstance(source, (bytes, bytearray)) or _last.source is source):
        return _last.read
    read = _read_file(source)
    # The bytes are held with their identity, so their id cannot be another object's while cached.
    _last.key, _last.source, _last.read = key, source, read
    return read


def _identity(source: Any) -> tuple | None:
    if isinstance(source, (bytes, bytearray)):
        return ("bytes", id(source), len(source))
    if isinstance(source, (str, Path)):
        try:
            status = os.stat(source)
        except OSError:
            return None
        return ("file", os.fspath(source), status.st_mtime_ns, status.st_size, status.st_ino)
    return None


def _read_file(source: Any) -> tuple[Any, dict, dict, int, str] | None:
    from PIL import Image

    if not isinstance(source, (bytes, bytearray, str, Path)):
        return None
    try:
        opened = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else Path(source))
    except (OSError, ValueError, TypeError):
        return None
    with opened as image:
        try:
            exif = image.getexif()
            detail, gps = exif.get_ifd(EXIF_IFD), exif.get_ifd(GPS_IFD)
            xmp = image.info.get("xmp") or b""
        except (OSError, ValueError, SyntaxError, KeyError):
            return None
        return exif, detail, gps, image.width, xmp.decode("utf-8", "ignore") if isinstance(xmp, bytes) else str(xmp)


def lens_facts(source: Any) -> dict[str, Any]:
    """Focal length, its 35 mm equivalent, focal-plane resolution and image width from EXIF,
    and a DJI drone's relative altitude from XMP, of a path or bytes; what is missing (or is no
    positive number: "fifty", 0/0) is left out."""
    read = _read(source)
    if read is None:
        return {}
    _, detail, _, width, xmp = read
    facts: dict[str, Any] = {"image_width": width}
    for key, tag in (("focal_length_mm", 0x920A), ("focal_length_35mm", 0xA405), ("focal_plane_x_resolution", 0xA20E),
                     ("focal_plane_unit", 0xA210), ("exif_image_width", 0xA002)):
        value = exif_number(detail.get(tag))
        if value is not None and value > 0:
            facts[key] = value
    altitude = xmp_number(xmp, "RelativeAltitude")
    if altitude is not None:
        facts["drone_relative_altitude_m"] = altitude
    return facts


def xmp_number(xmp: str, name: str) -> float | None:
    """A DJI drone's XMP number ``name`` (drone-dji:NAME, as an attribute or an element), or None."""
    found = re.search(name + r'\s*=\s*"([+-]?[0-9.]+)"', xmp) or re.search(rf"<drone-dji:{name}>([+-]?[0-9.]+)<", xmp)
    if not found:
        return None
    try:
        return exif_number(float(found.group(1)))
    except ValueError:
        return None


def photo_facts(source: Any) -> dict[str, Any]:
    """Time taken, GPS position, camera and lens of a photo (a path or bytes); what the photo
    does not carry is left out, and a photo without EXIF gives {}."""
    read = _read(source)
    if read is None:
        return {}
    exif, detail, gps, _, xmp = read
    facts: dict[str, Any] = {}
    taken = detail.get(0x9003) or exif.get(0x0132)  # DateTimeOriginal, else DateTime
    if isinstance(taken, str) and len(taken) >= 19:
        facts["taken_at"] = taken[:10].replace(":", "-") + "T" + taken[11:19]
    camera = " ".join(str(exif.get(tag, "")).strip() for tag in (0x010F, 0x0110)).strip()  # make, model
    if camera:
        facts["camera"] = camera
    lens = detail.get(0xA434)
    if lens:
        facts["lens"] = str(lens).strip()
    focal = exif_number(detail.get(0x920A))
    if focal is not None and focal > 0:
        facts["focal_length_mm"] = round(focal, 2)
    position = _position(gps)
    if position is not None:
        facts.update(position)
        # Where the camera looked, for placing the photo's cracks on the map (photo.vectors).
        for key, name in (("gimbal_yaw_deg", "GimbalYawDegree"), ("gimbal_pitch_deg", "GimbalPitchDegree")):
            value = xmp_number(xmp, name)
            if value is not None and abs(value) <= 360:
                facts[key] = value
    return facts


def _position(gps: dict) -> dict[str, float] | None:
    try:
        latitude = _degrees(gps[2]) * (-1 if str(gps.get(1, "N")).upper().startswith("S") else 1)
        longitude = _degrees(gps[4]) * (-1 if str(gps.get(3, "E")).upper().startswith("W") else 1)
    except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180) or (latitude == 0 and longitude == 0):
        return None
    found = {"latitude": round(latitude, 7), "longitude": round(longitude, 7)}
    altitude = exif_number(gps.get(6))
    if altitude is not None:
        found["altitude_m"] = round(altitude * (-1 if gps.get(5) in (1, b"\x01") else 1), 2)
    return found


def _degrees(value: Any) -> float:
    """Degrees, minutes and seconds as degrees; ValueError for anything else (minutes and
    seconds each under 60, every part a finite number)."""
    parts = [exif_number(part) for part in value]
    if len(parts) != 3 or any(p is None or p < 0 for p in parts):
        raise ValueError("not degrees, minutes and seconds")
    d, m, s = parts
    if m >= 60 or s >= 60:
        raise ValueError("minutes or seconds of 60 or more")
    return d + m / 60 + s / 3600
