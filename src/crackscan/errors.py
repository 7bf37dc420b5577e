"""The project's own error type: a user mistake with a one-line explanation.

The CLI prints the message and exits non-zero, the server answers 4xx with it; anything
else that escapes is a bug and keeps its traceback.
"""

import errno


class CrackscanError(Exception):
    """A problem with the user's input, reported as one line."""


class MissingDependencyError(CrackscanError):
    """An optional dependency is needed for what was asked."""

    def __init__(self, package: str, purpose: str, extra: str | None = None):
        install = f"pip install 'crackscan[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{purpose} needs the package '{package}': {install}")


class LimitExceeded(CrackscanError):
    """A request asks for more work or memory than a configured limit allows."""


class WriteError(CrackscanError):
    """A file could not be written: the disk is full, the folder is read-only or has gone."""


# What a write can meet that is the disk's or the folder's doing, not crackscan's.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


def write_error(path: object, error: OSError) -> WriteError:
    return WriteError(f"cannot write {path}: {error.strerror or error}")


class Cancelled(CrackscanError):
    """Work stopped because whoever asked for it has gone (a closed HTTP connection)."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line: libraries' errors can run to pages,
    and crackscan's messages are one line."""
    text = str(error).strip().splitlines()
    return text[0] if text and text[0] else type(error).__name__
