"""The one place a model name or path is resolved, for every command and the Python API.

A model is named by a path (a model file, or a run folder) or by a built-in model's name;
a path that exists wins over a built-in of the same name, as a path the user typed should.
``fastest`` picks a run folder's fastest checked export, as scan and serve want.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .. import runs
from ..errors import CrackscanError
from .builtin import BuiltinModel, builtin_models, builtin_path, known_names


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    file: Path  # the model file to open
    run: Path | None = None  # the run folder it belongs to
    builtin: BuiltinModel | None = None  # the built-in model it is


def resolve(model: str | os.PathLike, fastest: bool = False) -> ResolvedModel:
    """What ``model`` names. With ``fastest``, a run folder resolves to its fastest export
    that passed export's parity check (a failed check writes nothing) and is newer than the
    run's model; without one, or without ``fastest``, to its model.keras."""
    path = Path(model)
    if path.is_dir():
        if not runs.is_run(path):
            if (path / runs.MODEL_FILE).is_file():
                raise CrackscanError(f"{path} is an unfinished run (no {runs.MANIFEST}): train it again")
            raise CrackscanError(f"{path} is a folder without {runs.MODEL_FILE}: not a crackscan run")
        keras_file = path / runs.MODEL_FILE
        if fastest:
            for name in runs.EXPORTS_BY_SPEED:
                candidate = path / name
                if candidate.is_file() and candidate.stat().st_mtime >= keras_file.stat().st_mtime:
                    return ResolvedModel(candidate, path)
        return ResolvedModel(keras_file, path)
    if not path.exists():
        file = builtin_path(str(model))
        if file is None:
            raise CrackscanError(f"model not found: {path} is no file, run folder or built-in model ({known_names()})")
        return ResolvedModel(file, None, builtin_models()[str(model)])
    folder = path.parent
    builtin = next((m for m in builtin_models().values() if m.path.resolve() == path.resolve()), None)
    return ResolvedModel(path, folder if runs.is_run(folder) else None, builtin)
