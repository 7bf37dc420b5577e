"""Helpers for tests and benchmarks that use the workplace's ../shared material offline.

../shared/keras-home/models holds Keras' MobileNetV2 weight files; where one size is a
copy of another, the file may hold just the other file's name (a symbolic link flattened
by a checkout). ``offline_keras_home`` builds a KERAS_HOME whose files all resolve.
"""

from __future__ import annotations

import os
from pathlib import Path

_LINK_MAX_BYTES = 512


def shared_dir(start: Path | None = None) -> Path | None:
    """The ../shared folder beside the project root, if there is one."""
    here = (start or Path(__file__)).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared"
        if (parent / "pyproject.toml").is_file() and candidate.is_dir():
            return candidate
    env = os.environ.get("CRACKSCAN_SHARED")
    return Path(env) if env and Path(env).is_dir() else None


def offline_keras_home(shared: Path, destination: Path) -> Path:
    """Makes ``destination`` a KERAS_HOME whose models/ point at the shared weight files."""
    source = shared / "keras-home" / "models"
    models = destination / "models"
    models.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        target = entry.resolve()
        if target.stat().st_size <= _LINK_MAX_BYTES:
            named = target.read_text().strip()
            if named and "/" not in named and (source / named).is_file():
                target = (source / named).resolve()
        link = models / entry.name
        if not link.exists():
            link.symlink_to(target)
    return destination


def use_offline_keras_home(destination: Path) -> Path | None:
    """Points KERAS_HOME at an offline copy of ../shared's weights; None if there is no shared/."""
    shared = shared_dir()
    if shared is None or not (shared / "keras-home" / "models").is_dir():
        return None
    home = offline_keras_home(shared, destination)
    os.environ["KERAS_HOME"] = str(home)
    return home
