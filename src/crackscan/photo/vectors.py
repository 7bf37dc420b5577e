"""A photo's cracks as vectors, for GIS and CAD: centrelines with their widths.

- **cracks.geojson**: one Feature per crack, its centreline a MultiLineString (a branched crack
  has several paths) in the photo's pixel coordinates (x right, y down, as QuPath and labelling
  tools write image GeoJSON), its figures (cracks.csv's row: widths and their uncertainty, px and
  mm, class, type) as properties.
- **cracks-wgs84.geojson**, only for a photo that is georeferenced: GPS position, a scale, and a
  camera looking straight down (a drone's gimbal pitch within NADIR_TOLERANCE_DEG of -90) with its
  heading (gimbal yaw). Each pixel's offset from the photo's centre is turned by the heading into
  metres east and north of the GPS position: RFC 7946 longitude and latitude, which QGIS and
  ArcGIS read as they are. An oblique or headless photo is left in pixels: placing it would be
  invented, not measured.
- **cracks.dxf**: the centrelines as LWPOLYLINEs on one layer per width class (ezdxf, DXF R2010),
  y up as CAD draws, in mm where the photo has a scale (``$INSUNITS`` millimetres), else in px;
  each crack's figures in an XDATA record beside it.

Centrelines are the skeleton's paths simplified to within SIMPLIFY_PX (0.5 px, Douglas-Peucker):
a vector of every skeleton pixel is ten times larger and no more exact.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..files import atomic_path, write_text
from ..measure.cracks import simplified

# The photo folder's vector files (photo.result lists them with the folder's other files).
CRACK_VECTORS_FILE = "cracks.geojson"
CRACK_DXF_FILE = "cracks.dxf"
CRACK_MAP_FILE = "cracks-wgs84.geojson"
SIMPLIFY_PX = 0.5
NADIR_TOLERANCE_DEG = 10.0
EARTH_RADIUS_M = 6_378_137.0  # WGS 84's semi-major axis
DXF_APP = "CRACKSCAN"


def centrelines(crack: Any) -> list[np.ndarray]:
    """A crack's centreline as few lines as its skeleton allows, each simplified: the traced
    paths (junction to junction) chained end to end where they meet. A branching crack of 12 MP
    photo was 18 paths on average, and each is an entity in the DXF, which ezdxf writes at
    ~0.2 ms an entity with its crack's data."""
    return [simplified(line, SIMPLIFY_PX) for line in chained(crack.polylines) if len(line) >= 2]


def chained(lines: Sequence[Sequence[tuple[float, float]]]) -> list[list[tuple[float, float]]]:
    """Polylines joined where one ends where another begins or ends (either way round), until
    none can be joined: the same points, as fewer lines."""
    lines = [list(map(tuple, line)) for line in lines if len(line)]
    ends: dict[tuple, list[int]] = {}
    for index, line in enumerate(lines):
        for end in {line[0], line[-1]}:
            ends.setdefault(end, []).append(index)
    used = [False] * len(lines)

    def take(end: tuple) -> list | None:
        for index in ends.get(end, ()):
            if not used[index]:
                used[index] = True
                line = lines[index]
                return line if line[0] == end else line[::-1]
        return None

    joined = []
    for index, line in enumerate(lines):
        if used[index]:
            continue
        used[index] = True
        chain = list(line)
        while (following := take(chain[-1])) is not None:
            chain.extend(following[1:])
        while (preceding := take(chain[0])) is not None:
            chain[:0] = preceding[::-1][:-1]
        joined.append(chain)
    return joined


def drawn(cracks: Sequence) -> list[tuple[dict[str, Any], list[np.ndarray]]]:
    """Each crack's cracks.csv row and simplified centrelines, made once for all of a photo's
    vector files (Douglas-Peucker is the costly part)."""
    return [(crack.row(), centrelines(crack)) for crack in cracks]


def image_geojson(cracks: list, photo: str, width: int, height: int, scale_source: str | None) -> dict:
    """The photo's cracks (``drawn``) in its pixel coordinates."""
    return {"type": "FeatureCollection",
            "crackscan": {"photo": photo, "width": width, "height": height, "coordinates": "image px, x right, y down",
                          "scale_source": scale_source},
            "features": [_feature(row, [np.round(line, 2).tolist() for line in lines]) for row, lines in cracks]}


def georeference(exif: dict[str, Any] | None, mm_per_pixel: float | None) -> dict[str, float] | None:
    """What places a photo's pixels on the ground, or None when the photo does not say enough."""
    if not exif or mm_per_pixel is None:
        return None
    needed = ("latitude", "longitude", "gimbal_yaw_deg", "gimbal_pitch_deg")
    if any(not isinstance(exif.get(key), (int, float)) or not math.isfinite(exif[key]) for key in needed):
        return None
    if abs(exif["gimbal_pitch_deg"] + 90) > NADIR_TOLERANCE_DEG:
        return None
    return {"latitude": float(exif["latitude"]), "longitude": float(exif["longitude"]),
            "heading_deg": float(exif["gimbal_yaw_deg"]), "mm_per_pixel": float(mm_per_pixel)}


def to_wgs84(points: np.ndarray, width: int, height: int, place: dict[str, float]) -> np.ndarray:
    """Pixels (N x 2, x y) of a nadir photo as longitude, latitude (N x 2)."""
    heading = math.radians(place["heading_deg"])  # the photo's top, clockwise from north
    right = np.array([math.cos(heading), -math.sin(heading)])  # east, north of the photo's x axis
    up = np.array([math.sin(heading), math.cos(heading)])
    metres = place["mm_per_pixel"] / 1000
    dx = (points[:, 0] - width / 2) * metres
    dy = (height / 2 - points[:, 1]) * metres
    east = dx * right[0] + dy * up[0]
    north = dx * right[1] + dy * up[1]
    latitude = place["latitude"] + np.degrees(north / EARTH_RADIUS_M)
    longitude = place["longitude"] + np.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(place["latitude"]))))
    return np.stack([longitude, latitude], axis=1)


def map_geojson(cracks: list, photo: str, width: int, height: int, place: dict[str, float]) -> dict:
    """The photo's cracks (``drawn``) in longitude and latitude (RFC 7946)."""
    return {"type": "FeatureCollection",
            "crackscan": {"photo": photo, "placed_by": "GPS position, scale and gimbal heading of a nadir photo",
                          **place},
            "features": [_feature(row, [np.round(to_wgs84(line, width, height, place), 8).tolist() for line in lines],
                                  photo=photo)
                         for row, lines in cracks]}


def _feature(row: dict[str, Any], lines: list, **extra: Any) -> dict:
    return {"type": "Feature", "geometry": {"type": "MultiLineString", "coordinates": lines},
            "properties": {**extra, **row}}


def write_dxf(path: Path, cracks: list, height: int, mm_per_pixel: float | None) -> Path:
    """The photo's crack centrelines (``drawn``) as DXF, y up, in mm with a scale (else px)."""
    import ezdxf
    from ezdxf import units

    drawing = ezdxf.new("R2010", setup=False)
    drawing.units = units.MM if mm_per_pixel else 0  # 0: unitless ($INSUNITS), pixels
    drawing.appids.add(DXF_APP)
    space = drawing.modelspace()
    factor = mm_per_pixel or 1.0
    for row, lines in cracks:
        layer = f"cracks-{_layer_name(row['width_class'] or 'unclassed')}"
        if layer not in drawing.layers:
            drawing.layers.add(layer)
        for line in lines:
            polyline = space.add_lwpolyline([(x * factor, (height - y) * factor) for x, y in line],
                                            dxfattribs={"layer": layer})
            polyline.set_xdata(DXF_APP, [(1000, f"{key}={value}") for key, value in row.items()
                                         if value is not None and value != ""])
    with atomic_path(path) as temporary:
        drawing.saveas(temporary)
    return path


def _layer_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:60]


def write_vectors(folder: Path, cracks: Sequence, photo: str, width: int, height: int,
                  recorded: dict[str, Any]) -> list[Path]:
    """A photo's cracks.geojson, cracks.dxf, and cracks-wgs84.geojson where it is georeferenced."""
    import json

    mm_per_pixel = recorded.get("mm_per_pixel")
    vectors = drawn(cracks)
    written = [write_text(folder / CRACK_VECTORS_FILE, json.dumps(
        image_geojson(vectors, photo, width, height, recorded.get("scale_source"))) + "\n"),
        write_dxf(folder / CRACK_DXF_FILE, vectors, height, mm_per_pixel)]
    place = georeference(recorded.get("exif"), mm_per_pixel)
    if place is not None:
        written.append(write_text(folder / CRACK_MAP_FILE, json.dumps(
            map_geojson(vectors, photo, width, height, place)) + "\n"))
    elif (folder / CRACK_MAP_FILE).exists():
        (folder / CRACK_MAP_FILE).unlink()  # a rescan that can no longer place the photo
    return written
