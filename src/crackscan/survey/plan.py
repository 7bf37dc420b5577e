"""Where a survey's photos are: local paths (files, folders, globs) or URIs of any file
system pyarrow reads, each with what identifies its file, and the root their result
folders are named below."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from ..errors import CrackscanError, MissingDependencyError
from ..images import IMAGE_SUFFIXES, ImageReadError, list_image_files


def is_uri(text: str | os.PathLike) -> bool:
    return "://" in str(text)


def survey_root(photos: Sequence[Path], earlier: str | None = None) -> Path:
    """The folder photos' outputs are named from: the photos' common folder, or the survey's
    earlier root when every photo is under it (so scanning a part of a survey again lands
    in the same folders)."""
    absolute = [os.path.abspath(p) for p in photos]
    if earlier and all(os.path.commonpath([p, earlier]) == earlier for p in absolute):
        return Path(earlier)
    return Path(os.path.commonpath([os.path.dirname(p) for p in absolute])) if absolute else Path(os.getcwd())


def survey_photos(inputs: Sequence[str | os.PathLike], out: Path) -> list[Path]:
    """The photos named (files, folders, globs), once each, never any under ``out``: a survey
    folder inside the photo folder must not have its own overlays scanned on the next run."""
    out_absolute = os.path.abspath(out)
    photos, seen = [], set()
    for photo in list_image_files(inputs):
        absolute = os.path.abspath(photo)
        if absolute in seen or os.path.commonpath([absolute, out_absolute]) == out_absolute:
            continue
        seen.add(absolute)
        photos.append(photo)
    return photos


def locate_photos(inputs: Sequence[str | os.PathLike], out: Path, earlier_root: str | None
                   ) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """Every photo named, with what identifies its file (path, size, modification time), and
    the root its output folders are named below."""
    uris = [str(i) for i in inputs if is_uri(i)]
    if uris and len(uris) != len(inputs):
        raise CrackscanError("name photos either all as local paths or all as URIs (s3://..., file://...)")
    if uris:
        return _locate_uris(uris, earlier_root)
    photos = survey_photos(inputs, out)
    root = survey_root(photos, earlier_root)
    located = []
    for photo in photos:
        try:
            facts = photo.stat()
        except OSError:  # a link to nothing, or a loop of links: the scan reports it, the rest go on
            facts = photo.lstat()
        located.append((str(photo), {"photo_path": os.path.abspath(photo), "photo_bytes": facts.st_size,
                                     "photo_mtime_ns": facts.st_mtime_ns}))
    return located, str(root)


def relative_parts(path: str, root: str) -> tuple[str, ...]:
    if is_uri(path):
        return PurePosixPath(path.split("://", 1)[1]).relative_to(root.split("://", 1)[1]).parts
    return Path(path).relative_to(root).parts


def _locate_uris(uris: list[str], earlier_root: str | None) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    fs_module = import_pyarrow_fs()
    located, scheme = [], None
    for uri in uris:
        try:
            filesystem, path = fs_module.FileSystem.from_uri(uri)
            info = filesystem.get_file_info(path)
        except (OSError, ValueError) as error:
            raise CrackscanError(f"cannot list {uri}: {error}") from None
        this_scheme = uri.split("://", 1)[0]
        if scheme not in (None, this_scheme):
            raise CrackscanError("name photos on one file system at a time")
        scheme = this_scheme
        if info.type == fs_module.FileType.Directory:
            found = filesystem.get_file_info(fs_module.FileSelector(path, recursive=True))
        elif info.type == fs_module.FileType.File:
            found = [info]
        else:
            raise CrackscanError(f"no such file or folder: {uri}")
        for entry in sorted(found, key=lambda e: e.path):
            if entry.type == fs_module.FileType.File and PurePosixPath(entry.path).suffix.lower() in IMAGE_SUFFIXES:
                full = f"{scheme}://{entry.path}"
                located.append((full, {"photo_path": full, "photo_bytes": entry.size,
                                       "photo_mtime_ns": entry.mtime_ns}))
    unique = list(dict((photo, (photo, identity)) for photo, identity in located).values())
    if not unique:
        raise CrackscanError(f"no photos found in {' '.join(uris)}")
    paths = [photo.split("://", 1)[1] for photo, _ in unique]
    common = os.path.commonpath([str(PurePosixPath(p).parent) for p in paths]) if len(paths) > 1 \
        else str(PurePosixPath(paths[0]).parent)
    root = f"{scheme}://{common}"
    if earlier_root and is_uri(earlier_root) and all(photo.startswith(earlier_root.rstrip("/") + "/")
                                                     for photo, _ in unique):
        root = earlier_root
    return unique, root


def read_uri(uri: str, max_bytes: int | None = None) -> bytes:
    """A remote photo's bytes; refused (ImageReadError) before reading when it is larger than
    ``max_bytes``, as a local file is."""
    filesystem, path = import_pyarrow_fs().FileSystem.from_uri(uri)
    with filesystem.open_input_file(path) as handle:
        size = handle.size()
        if max_bytes is not None and size > max_bytes:
            raise ImageReadError(uri, f"{size:,} bytes, more than an image within the pixel limit can hold "
                                      f"({max_bytes:,}): not read", "too_large")
        return handle.readall()


def import_pyarrow_fs() -> Any:
    try:
        import pyarrow.fs
    except ImportError:
        raise MissingDependencyError("pyarrow", "reading photos from URIs", extra="ray") from None
    return pyarrow.fs
