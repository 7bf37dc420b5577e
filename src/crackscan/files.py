"""Writing files so that an interruption never leaves half of one.

Every file crackscan writes is first written under a temporary name in the same folder
and then renamed over its final name (``os.replace``, atomic on POSIX and Windows), so a
reader sees the old file or the new one, never a truncated one. Temporary names start
with a dot and end in ``.partial`` plus the real suffix, so savers that choose a format
by suffix (Keras, matplotlib, Pillow) still work, and a leftover is easy to recognise.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import IO, Iterator

from .errors import WRITE_ERRNOS, CrackscanError, write_error

PARTIAL_MARK = ".partial"
# CSV files hold file names; a name that is not valid UTF-8 (a Linux file system allows any
# bytes) round-trips through surrogate escapes instead of failing mid-write.
TEXT_ENCODING = dict(encoding="utf-8", errors="surrogateescape")


def partial_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}{PARTIAL_MARK}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; when the block ends without an error, the
    file written there replaces ``path``. On an error (or Ctrl-C) it is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path, error) from None
    temporary = partial_name(path)
    try:
        try:
            yield temporary
        except OSError as error:  # the disk's doing (full, read-only) is one line; anything else a bug
            if error.errno in WRITE_ERRNOS:
                raise write_error(path, error) from None
            raise
        if not temporary.is_file():
            raise FileNotFoundError(f"nothing was written to {temporary}")
        _fsync(temporary)
        try:
            os.replace(temporary, path)
        except OSError as error:  # the folder went away, or was made read-only, while writing
            raise write_error(path, error) from None
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """``open`` for writing, atomically: text modes use UTF-8 with surrogate escapes."""
    with atomic_path(path) as temporary:
        extra = TEXT_ENCODING if "b" not in mode else {}
        newline = {"newline": ""} if "b" not in mode else {}
        with open(temporary, mode, **extra, **newline) as handle:
            yield handle


def write_bytes(path: str | os.PathLike, content: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(content)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def refuse_overwrite(path: Path, force: bool, what: str = "file") -> None:
    """Nothing a user made is replaced unless they said --force."""
    if path.exists() and not force:
        raise CrackscanError(f"{what} {path} already exists: pass --force to replace it, or choose another --out")


def remove_partials(folder: Path, older_than_s: float = 0.0) -> None:
    """Clears temporary files an interrupted write left behind (only those older than
    ``older_than_s``, where another writer may be at work in the folder: its temporary file
    lives for the milliseconds of one write)."""
    if folder.is_dir():
        now = time.time()
        for leftover in folder.glob(f".*{PARTIAL_MARK}*"):
            with contextlib.suppress(OSError):
                if older_than_s <= 0 or now - leftover.stat().st_mtime > older_than_s:
                    leftover.unlink()


def _fsync(path: Path) -> None:
    # The rename is atomic, but without a flush a power cut can still leave an empty file
    # under the final name on some file systems.
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable(folder: str | os.PathLike, create: bool = True) -> Path:
    """``folder`` written to once, so a read-only or full folder is said before minutes of
    work, not after. With ``create`` it is made if missing; without, a missing folder is
    judged by the nearest folder above it that exists (where it would be made), and nothing
    is left behind when the work is later refused."""
    folder = Path(folder)
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise write_error(folder, error) from None
    probed = folder
    while not probed.exists() and probed != probed.parent:
        probed = probed.parent
    probe = probed / f".crackscan-write-check-{secrets.token_hex(4)}"
    try:
        write_text(probe, "crackscan checks it can write here\n")
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return folder
