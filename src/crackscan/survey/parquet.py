"""The Ray engine's Parquet dataset of every tile of a survey: a part file per photo, named by
its output folder, for DuckDB or pandas."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

from ..files import atomic_path
from ..photo.result import PhotoSummary, Tile, read_tiles

CRACKS_DATASET = "cracks.parquet"  # a segmenter's survey on Ray: the measured cracks, beside tiles.parquet
TILE_COLUMNS = ("photo", "x", "y", "width", "height", "probability", "label")


def tiles_part_path(dataset: Path, folder: Path) -> Path:
    """The part file of a photo: named by its output folder, which no two photos share."""
    key = hashlib.sha256(str(folder.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return dataset / f"part-{key}.parquet"


def write_tiles_part(dataset: Path, folder: Path, photo: str, tiles: Sequence[Tile]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [(t.x, t.y, t.width, t.height, t.crack_probability, t.label) for t in tiles]
    columns = list(zip(*rows)) if rows else [[] for _ in range(6)]
    table = pa.table({
        # A name that is not UTF-8 is kept readable, its other bytes as \xNN escapes.
        "photo": pa.array([photo.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")] * len(rows),
                          pa.string()),
        "x": pa.array(columns[0], pa.int32()), "y": pa.array(columns[1], pa.int32()),
        "width": pa.array(columns[2], pa.int32()), "height": pa.array(columns[3], pa.int32()),
        "probability": pa.array(columns[4], pa.float32()), "label": pa.array(columns[5], pa.string()),
    })
    path = tiles_part_path(dataset, folder)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
    return path


def ensure_tiles_part(dataset: Path, folder: Path, summary: PhotoSummary) -> None:
    """A photo kept from an earlier run (perhaps by the local engine) gets its part file from
    its tiles.csv, so the dataset always holds every photo of the survey once."""
    if not tiles_part_path(dataset, folder).is_file():
        write_tiles_part(dataset, folder, summary.photo, read_tiles(folder))


def write_cracks_part(dataset: Path, folder: Path, photo: str, cracks: Sequence) -> Path:
    """A segmenter's survey on Ray: the photo's measured cracks (cracks.csv's columns) as a part
    file of the cracks dataset beside the tiles' (same naming), for DuckDB or pandas."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..measure.cracks import CRACK_FIELDS

    rows = [crack.row() for crack in cracks]
    name = photo.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    table = pa.Table.from_pylist([{"photo": name, **row} for row in rows]) if rows else \
        pa.table({"photo": pa.array([], pa.string()), **{field: pa.array([], pa.float64()) for field in CRACK_FIELDS}})
    path = tiles_part_path(dataset, folder)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
    return path
