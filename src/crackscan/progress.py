"""Progress bars for steps that take more than a few seconds; silent when disabled."""

from __future__ import annotations

from typing import Any


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, leave=False)
