"""How long work tells its caller what it is doing: one interface for every command.

A ``Progress`` carries four channels, each optional: progress bars (for steps that take more
than a few seconds), steps (a line as each stage starts: "converting the backbone"),
result lines (a survey's line per photo) and skipped inputs (a file that cannot be read,
with the reason). Functions take ``progress=`` as a Progress, or True / False for bars only;
the CLI passes one that prints, the Python API's default is silence.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Progress:
    bars: bool = False
    on_step: Callable[[str], None] | None = None
    on_line: Callable[[str], None] | None = None
    on_skipped: Callable[[str, str], None] | None = None

    def bar(self, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True) -> Any:
        """A tqdm bar, shown when bars are on and ``enabled``; otherwise one that does nothing."""
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
