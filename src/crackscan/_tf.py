"""Imports TensorFlow and Keras on first use, without native start-up log lines.

TF 2.21 writes absl log lines (oneDNN notices, "All log messages before
absl::InitializeLog()...") straight to file descriptor 2 while it loads, ignoring
TF_CPP_MIN_LOG_LEVEL; they would bury the CLI's one-line messages. Only the import is
muted: an import error still raises as usual.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any, Iterator

_lock = threading.Lock()


def keras() -> Any:
    tensorflow()
    import keras as keras_module

    return keras_module


def tensorflow() -> Any:
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with _lock:
        if "tensorflow" not in sys.modules:
            _import_muted()
    return sys.modules["tensorflow"]


def _import_muted() -> None:
    with muted_native_stderr():
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def muted_native_stderr() -> Iterator[None]:
    """Silences what native code writes to fd 2 (TF's and LiteRT's start-up notices).

    Python exceptions still propagate; CRACKSCAN_TF_LOGS=1 turns the muting off.
    """
    if os.environ.get("CRACKSCAN_TF_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
