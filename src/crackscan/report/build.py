"""`crackscan report SURVEY --out REPORT`: the survey as pages a client can read.

REPORT/index.html holds the header (what was surveyed, with which model and scale), the
summary, the findings table (worst first; sortable and filterable in the page) and the map;
each photo's card (overlay, crack table, EXIF time, position and camera) is on a cards page
of CARDS_PER_PAGE photos, so a survey of 10,000 photos is an index and 100 pages, not one
file. Overlays are copied into REPORT/images/, so the folder stands on its own. With GPS in
the photos, survey.geojson (one point per photo, findings as properties) sits beside it.
``pdf`` adds report.pdf (WeasyPrint): the summary first, then a card per photo with findings,
with page numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import CrackscanError, MissingDependencyError
from ..files import atomic_path, refuse_overwrite, write_text
from ..version import __version__
from ..measure.severity import AT_LIMIT, UNSCALED
from ..model.tasks import task_of
from ..photo.result import photo_verdict
from ..photo.vectors import CRACK_MAP_FILE
from ..survey.layout import TILES_DATASET
from .survey_data import PhotoFinding, SurveyData, class_order, read_survey

CARDS_PER_PAGE = 25  # a few dozen photos a page: a page of 93 cards was 79,000 px long
INDEX_FILE = "index.html"
GEOJSON_FILE = "survey.geojson"
# Every crack of the georeferenced photos as a line on the map (their cracks-wgs84.geojson, joined).
CRACK_LINES_FILE = "survey-cracks.geojson"
GEOPARQUET_FILE = "survey.geoparquet"  # beside the GeoJSON when the survey ran on Ray (it wrote Parquet)
PDF_FILE = "report.pdf"
IMAGES_FOLDER = "images"
CLASS_COLOURS = {"hairline": "#e6b800", "fine": "#ff8c00", "medium": "#e61e1e", "wide": "#c800c8",
                 "unscaled": "#e61e1e", AT_LIMIT: "#8a8a8a", "": "#2e7d32"}
REPORT_FILES = (INDEX_FILE, GEOJSON_FILE, CRACK_LINES_FILE, PDF_FILE)


@dataclasses.dataclass
class Report:
    folder: Path
    index: Path
    geojson: Path | None
    pdf: Path | None
    photos: int
    seconds: float


def build_report(survey: str | Path, out: str | Path, pdf: bool = False, force: bool = False) -> Report:
    started = time.perf_counter()
    data = read_survey(survey)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CrackscanError(f"--out {out} is a file: name a folder for the report")
    for name in REPORT_FILES:
        refuse_overwrite(out / name, force, "report file")
    if pdf:
        _require_weasyprint()
    environment = _templates()
    figures = survey_figures(data)
    pages = [data.photos[i:i + CARDS_PER_PAGE] for i in range(0, len(data.photos), CARDS_PER_PAGE)] or [[]]
    images = _copy_overlays(data.photos, out / IMAGES_FOLDER)
    page_of = {photo.number: index for index, group in enumerate(pages, start=1) for photo in group}
    common = {"figures": figures, "data": data, "images": images, "page_of": page_of, "colours": CLASS_COLOURS,
              "version": __version__, "built": time.strftime("%Y-%m-%d %H:%M")}
    for index, group in enumerate(pages, start=1):
        write_text(out / f"cards-{index:03d}.html", environment.get_template("cards.html").render(
            **common, cards=group, page=index, page_count=len(pages)))
    geojson = None
    written = {INDEX_FILE}
    if figures["with_gps"]:
        geojson = out / GEOJSON_FILE
        write_text(geojson, json.dumps(geojson_of(data), indent=1) + "\n")
        written.add(GEOJSON_FILE)
        if (data.folder / TILES_DATASET).is_dir():
            write_geoparquet(geojson_of(data), out / GEOPARQUET_FILE)
            written.add(GEOPARQUET_FILE)
        lines = crack_lines_of(data)
        if lines["features"]:
            write_text(out / CRACK_LINES_FILE, json.dumps(lines) + "\n")
            written.add(CRACK_LINES_FILE)
    write_text(out / INDEX_FILE, environment.get_template("index.html").render(
        **common, map=_map_points(data.photos), geojson=geojson is not None))
    pdf_path = None
    if pdf:
        pdf_path = out / PDF_FILE
        cards = [p for p in data.photos if p.has_findings]
        with tempfile.TemporaryDirectory(prefix="crackscan-print-") as scratch:
            _write_pdf(environment.get_template("print.html").render(
                **{**common, "images": _print_images(cards, Path(scratch))}, cards=cards), out, pdf_path)
        written.add(PDF_FILE)
    _remove_stale(out, len(pages), set(images.values()), written)
    return Report(out, out / INDEX_FILE, geojson, pdf_path, len(data.photos), time.perf_counter() - started)


def _remove_stale(out: Path, pages: int, images: set[str], written: set[str]) -> None:
    """A report written again over an earlier one (--force) leaves none of the earlier one's
    files behind: its later cards pages, its images, its PDF or GeoJSON of other photos. Only
    names the report itself writes are removed; anything else in the folder is left alone."""
    for path in out.glob("cards-*.html"):
        number = path.stem[len("cards-"):]
        if number.isdigit() and int(number) > pages:
            path.unlink(missing_ok=True)
    for path in (out / IMAGES_FOLDER).glob("*.jpg"):
        if path.stem.isdigit() and f"{IMAGES_FOLDER}/{path.name}" not in images:
            path.unlink(missing_ok=True)
    for name in (GEOJSON_FILE, CRACK_LINES_FILE, GEOPARQUET_FILE, PDF_FILE):
        if name not in written:
            (out / name).unlink(missing_ok=True)


def survey_figures(data: SurveyData) -> dict[str, Any]:
    """The figures of the summary: one definition, which the pages, the PDF and tests read."""
    photos = data.photos
    measured = [p.figures for p in photos if p.figures is not None]
    scaled = [f for f in measured if f.mm_per_pixel]
    classes_seen = [name for name in (*class_order(photos), UNSCALED) if any(
        c.get("width_class") == name for p in photos for c in p.cracks)]
    by_class = {}
    for name in classes_seen:
        cracks = [c for p in photos for c in p.cracks if c.get("width_class") == name]
        lengths_mm = [float(c["length_mm"]) for c in cracks if c.get("length_mm")]
        by_class[name] = {"cracks": len(cracks), "length_px": round(sum(float(c["length_px"]) for c in cracks), 1),
                          "length_m": round(sum(lengths_mm) / 1000, 3) if lengths_mm else None}
    widest = sorted(((float(c["max_width_px"]), p, c) for p in photos for c in p.cracks), key=lambda t: -t[0])[:5]
    taken = sorted(p.exif["taken_at"] for p in photos if p.exif.get("taken_at"))
    over = [f for f in measured if f.cracks_over_limit]
    return {
        "photos": len(photos) + len(data.unreadable),
        "scanned": len(photos),
        "with_findings": sum(p.has_findings for p in photos),
        "cracks": sum(len(p.cracks) for p in photos),
        "total_length_px": round(sum(float(c["length_px"]) for p in photos for c in p.cracks), 1),
        "total_length_m": _total_length_m([c for p in photos for c in p.cracks]),
        "by_class": by_class,
        "widest": [{"photo": p.name, "number": p.number, "crack_id": c["crack_id"], "width_px": w,
                    "width_mm": c.get("max_width_mm") or None} for w, p, c in widest],
        "over_limit_cracks": sum(f.cracks_over_limit for f in over),
        "over_limit_photos": len(over),
        "limit": next((f"{f.limit_mm} mm ({f.limit_source})" for f in measured if f.limit_mm), None),
        "unreadable": len(data.unreadable),
        "with_gps": sum(p.has_position for p in photos),
        "folders": sorted({str(Path(p.photo).parent) for p in photos}),
        "dates": (taken[0][:10], taken[-1][:10]) if taken else None,
        "scales": sorted({f"{f.mm_per_pixel:g} mm/px: {f.scale_source}" for f in scaled}) or
        sorted({f.scale_source or "none: pixels only" for f in measured}) or (["none: pixels only"] if photos else []),
        "width_classes": next((f.width_classes for f in measured if f.width_classes), None),
        "classes_resolved": sorted({f.classes_resolved for f in measured if f.classes_resolved}),
        "model": data.manifest.get("model") or next((p.summary.get("model") for p in photos), None),
        "threshold": data.manifest.get("threshold"),
        "model_reference": model_reference(data.manifest.get("model")),
        "measure_here": MEASURE_HERE,
        "site_figures": site_figures(data),
        "measured": any(task_of(p.summary).per_pixel for p in photos),
    }


def _total_length_m(cracks: list[dict[str, Any]]) -> float | None:
    """All cracks' length in metres: only when every crack has its length in mm (a scale)."""
    if not cracks or any(not c.get("length_mm") for c in cracks):
        return None
    return round(sum(float(c["length_mm"]) for c in cracks) / 1000, 3)


# A photo's crack figures its GeoJSON point carries (a GIS attribute table's columns).
GEOJSON_FIGURES = ("cracks", "total_length_px", "total_length_mm", "max_width_mm", "max_width_px", "worst_class",
                   "cracks_over_limit")


def crack_lines_of(data: SurveyData) -> dict[str, Any]:
    """The cracks of the survey's georeferenced photos as lines in longitude and latitude: each
    photo's own cracks-wgs84.geojson (photo.vectors), read and joined; one that cannot be read
    is left out, and its photo keeps its point in survey.geojson."""
    features = []
    for photo in data.photos:
        path = photo.outputs / CRACK_MAP_FILE if photo.outputs else None
        if path is None or not path.is_file():
            continue
        try:
            found = json.loads(path.read_text())
            found_features = found["features"] if found.get("type") == "FeatureCollection" else []
        except (OSError, ValueError, KeyError, AttributeError):
            continue
        features.extend(f for f in found_features if isinstance(f, dict) and f.get("type") == "Feature"
                        and isinstance(f.get("geometry"), dict) and f["geometry"].get("type") == "MultiLineString")
    return {"type": "FeatureCollection", "features": features}


def geojson_of(data: SurveyData) -> dict[str, Any]:
    """A FeatureCollection of the photos with GPS (RFC 7946: longitude, latitude, WGS 84)."""
    features = []
    for p in data.photos:
        if not p.has_position:
            continue
        f = p.figures.to_dict() if p.figures else {}
        point = [p.exif["longitude"], p.exif["latitude"]]
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": point},
                         "properties": {"photo": p.photo, "finding": p.number,
                                        "verdict": photo_verdict(p.summary),
                                        **{name: f.get(name) for name in GEOJSON_FIGURES},
                                        "cracked_area_fraction": p.summary.get("cracked_area_fraction"),
                                        "taken_at": p.exif.get("taken_at")}})
    return {"type": "FeatureCollection", "features": features,
            "without_position": [p.photo for p in data.photos if not p.has_position]}


def write_geoparquet(collection: dict[str, Any], path: Path) -> Path:
    """The GeoJSON's points as GeoParquet 1.0 (WKB points, WGS 84), for a survey that ran on Ray."""
    import struct

    import pyarrow as pa
    import pyarrow.parquet as pq

    features = collection["features"]
    columns: dict[str, list] = {key: [f["properties"].get(key) for f in features]
                                for key in (features[0]["properties"] if features else {})}
    geometry = [struct.pack("<BIdd", 1, 1, *f["geometry"]["coordinates"]) for f in features]  # little-endian Point
    table = pa.table({**{key: pa.array(values) for key, values in columns.items()},
                      "geometry": pa.array(geometry, pa.binary())})
    geo = {"version": "1.0.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"]}}}  # no crs: OGC:CRS84
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"geo": json.dumps(geo).encode()})
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
    return path


MEASURE_HERE = ("not measured on these photos: mask a few of them (255 crack, 0 background) and run crackscan "
                "evaluate MODEL PHOTOS --masks MASKS --out SURVEY, and the report shows that figure first")


def model_reference(model: str | None) -> str | None:
    """The model's own checked figure, labelled as measured on its own held-out photos: a figure
    of the photos it was made with, which says little of photos from another site."""
    if not model:
        return None
    from ..model.builtin import builtin_models

    for builtin in builtin_models().values():
        if Path(model).name == builtin.file:
            return f"{builtin.name}: {builtin.held_out_figure()} of the sets it was made with (its makers' test photos)"
    folder = Path(model).parent
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict):
        return None
    if task_of(metrics).per_pixel:
        val = (metrics.get("val") or {}).get("tolerance_2px") or {}
        return f"pixel F1 {val.get('f1')} within 2 px on the run's own validation photos" if val else None
    test = metrics.get("test") or {}
    if isinstance(test, dict) and "accuracy" in test:
        return f"test accuracy {100 * test['accuracy']:.2f}% of {test.get('count')} images of the run's own test split"
    return None


def site_figures(data: SurveyData) -> list[str]:
    """Figures measured on this survey's own photos, each with its photo count and how it was
    measured: `crackscan evaluate --masks` on some of them (into the survey's evaluations/), and
    the cross-validation of a model adapted on this site. Empty: no figure of these photos exists."""
    from ..survey.layout import SurveyFolder

    found = []
    model_sha = data.manifest.get("model_sha256")
    for folder, m in SurveyFolder(data.folder).evaluations():
        if model_sha and m.get("model_sha256") and m["model_sha256"] != model_sha:
            continue  # another model's figure: not this survey's
        pixel = (m.get("pixel") or {}).get("tolerance_2px") or {}
        figure = (f"pixel F1 {pixel['f1']:.3f} within 2 px" if task_of(m).per_pixel and
                  isinstance(pixel.get("f1"), (int, float)) else
                  f"tile F1 {m['f1']:.3f}" if isinstance(m.get("f1"), (int, float)) else None)
        if figure:
            found.append(f"{figure} on {m['photos']} of these photos, against their masks "
                         f"(crackscan evaluate --masks, {folder.relative_to(data.folder).as_posix()})")
    model = data.manifest.get("model")
    if model:
        try:
            adapted = json.loads((Path(model).parent / "metrics.json").read_text())
        except (OSError, ValueError):
            adapted = None
        after = ((adapted or {}).get("site_cross_validated") or {}).get("after") if isinstance(adapted, dict) else None
        if isinstance(after, dict) and isinstance(after.get("f1"), (int, float)) and task_of(adapted).per_pixel:
            site = adapted["site_cross_validated"]
            found.append(f"pixel F1 {after['f1']:.3f} within 2 px ({adapted.get('adapted_from', 'its parent')}'s own: "
                         f"{(site.get('before') or {}).get('f1', float('nan')):.3f}), cross-validated on {site.get('photos')} "
                         "masked photos of this site, each scored by a decoder not taught on it (crackscan adapt --masks)")
        elif isinstance(after, dict) and isinstance(after.get("f1"), (int, float)):
            photos = (adapted.get("unlabelled_site_tiles") or {}).get("photos")
            found.append(f"tile F1 {after['f1']:.3f}, cross-validated on {after.get('tiles')} labelled tiles of this "
                         f"site{f' from {photos} photos' if photos else ''} (crackscan adapt)")
    return found


def _map_points(photos: list[PhotoFinding]) -> list[dict[str, Any]]:
    """Photo positions on an equirectangular plot of the survey's extent (0-1000 x 0-600)."""
    placed = [p for p in photos if p.has_position]
    if not placed:
        return []
    lats = [p.exif["latitude"] for p in placed]
    lons = [p.exif["longitude"] for p in placed]
    span = max(max(lats) - min(lats), max(lons) - min(lons), 1e-5)
    points = []
    for p in placed:
        x = 40 + 920 * (p.exif["longitude"] - min(lons)) / span
        y = 560 - 520 * (p.exif["latitude"] - min(lats)) / span
        points.append({"x": round(x, 1), "y": round(y, 1), "photo": p})
    return points


def _copy_overlays(photos: list[PhotoFinding], folder: Path) -> dict[int, str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for photo in photos:
        if photo.overlay is None:
            continue
        name = f"{photo.number:05d}.jpg"
        with atomic_path(folder / name) as temporary:
            try:
                os.link(photo.overlay, temporary)
            except OSError:
                shutil.copyfile(photo.overlay, temporary)
        names[photo.number] = f"{IMAGES_FOLDER}/{name}"
    return names


# A card's crack map on an A4 page is at most 182 x 150 mm: 600 px on its long side is ~85 dpi, a
# map to find the crack by (its pixels are in the HTML's 1,600 px overlay). 93 DeepCrack photos'
# maps made a 32 MB PDF at full size, 11.6 MB at 1,000 px and q 80, 5.3 MB at 640 px and q 70.
PRINT_IMAGE_PX = 600
PRINT_JPEG_QUALITY = 70


def _print_images(photos: list[PhotoFinding], folder: Path) -> dict[int, str]:
    """The PDF's crack maps: each overlay sized for the page (decoded at a reduced DCT scale where
    the JPEG allows), for the PDF alone; the HTML keeps the full overlays."""
    from PIL import Image

    names = {}
    for photo in photos:
        if photo.overlay is None:
            continue
        target = folder / f"{photo.number:05d}.jpg"
        try:
            with Image.open(photo.overlay) as image:
                # The size it will have, not a square: a square's short side would refuse the DCT scale.
                scale = PRINT_IMAGE_PX / max(image.size)
                image.draft("RGB", (round(image.width * scale), round(image.height * scale)))
                small = image.convert("RGB")
        except (OSError, ValueError):
            continue  # an unreadable overlay leaves its card without a picture, as in the HTML
        small.thumbnail((PRINT_IMAGE_PX, PRINT_IMAGE_PX), Image.Resampling.LANCZOS)
        small.save(target, quality=PRINT_JPEG_QUALITY, optimize=True)
        names[photo.number] = target.as_uri()
    return names


def _templates() -> Any:
    try:
        import jinja2
    except ImportError:
        raise MissingDependencyError("jinja2", "the report", extra="report") from None
    return jinja2.Environment(loader=jinja2.PackageLoader("crackscan.report", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def _import_weasyprint() -> Any:
    """WeasyPrint, imported without its side effect: it sets Pillow's global LOAD_TRUNCATED_IMAGES,
    which would make every later decode in the process accept a truncated photo as whole."""
    from PIL import ImageFile

    before = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        import weasyprint
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before
    return weasyprint


def _require_weasyprint() -> None:
    try:
        _import_weasyprint()
    except (ImportError, OSError) as error:  # OSError: the package is there, its Pango library is not
        if isinstance(error, OSError):
            raise CrackscanError(f"--pdf needs WeasyPrint's system libraries (Pango): {error}") from None
        raise MissingDependencyError("weasyprint", "the PDF report (--pdf)", extra="report") from None


def _write_pdf(html: str, base: Path, path: Path) -> None:
    import logging

    weasyprint = _import_weasyprint()
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    with atomic_path(path) as temporary:
        weasyprint.HTML(string=html, base_url=str(base.resolve()) + "/").write_pdf(str(temporary))
