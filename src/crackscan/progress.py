"""How long work tells its caller what it is doing: one interface for every command.

A ``Progress`` carries four channels, each optional: progress bars (for steps that take more
than a few seconds), steps (a line as each stage starts: "converting the backbone"),
result lines (a survey's line per photo) and skipped inputs (a file that cannot be read,
with the reason). Functions take ``progress=`` as a Progress, or True / False for bars only;
the CLI passes one that prints, the Python API's default is silence.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Progress:
    bars: bool = False
    on_step: Callable[[str], None] | None = None
    on_line: Callable[[str], None] | None = None
    on_skipped: Callable[[str, str], None] | None = None
    # Where bars cannot be drawn (a log file, CI): a line every LOG_EVERY_S seconds instead.
    on_log: Callable[[str], None] | None = None

    def bar(self, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True) -> Any:
        """A tqdm bar, shown when bars are on and ``enabled``; else, with ``on_log``, a bar
        that writes a line now and then; otherwise one that does nothing."""
        if not self.bars and self.on_log is not None and enabled:
            return LogLines(self.on_log, total, desc, unit)
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, disable=not (self.bars and enabled), dynamic_ncols=True,
                    leave=False)

    def step(self, text: str) -> None:
        if self.on_step is not None:
            self.on_step(text)

    def line(self, text: str) -> None:
        if self.on_line is not None:
            self.on_line(text)

    def skipped(self, source: str, reason: str) -> None:
        if self.on_skipped is not None:
            self.on_skipped(source, reason)


SILENT = Progress()


def as_progress(progress: Progress | bool | None) -> Progress:
    """A Progress from what a caller passed: itself, or bars on (True) or off."""
    if isinstance(progress, Progress):
        return progress
    return Progress(bars=bool(progress))


LOG_EVERY_S = 15.0


class LogLines:
    """A progress bar for logs: "reading and embedding: 4,200 of 12,535 img (34%) in 31 s",
    at most every LOG_EVERY_S seconds, and once at the end."""

    def __init__(self, write: Callable[[str], None], total: int | None, desc: str, unit: str):
        self.write, self.total, self.desc, self.unit = write, total, desc, unit
        self.done, self.started = 0, time.monotonic()
        self.last = self.started
        self.postfix = ""

    def update(self, count: int = 1) -> None:
        self.done += count
        if time.monotonic() - self.last >= LOG_EVERY_S:
            self._say()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def clear(self) -> None:
        pass

    def close(self) -> None:
        if self.done:
            self._say()

    def _say(self) -> None:
        self.last = time.monotonic()
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        of = f" of {self.total:,}" if self.total else ""
        extra = f"; {self.postfix}" if self.postfix else ""
        self.write(f"{self.desc}: {self.done:,}{of} {self.unit}{share} in {self.last - self.started:.0f} s{extra}")
