"""What the benchmark scripts share: the real data, an offline Keras home, a trained run."""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ozgenel-12k"


RESULTS = ROOT / "results"


def write_results(name: str, figures: dict[str, Any]) -> Path:
    """results/NAME.json: the figures with the command that made them, the CPU and the date,
    which the docs cite instead of retyping them."""
    import json
    import platform
    import shlex

    from crackscan.files import write_text
    from crackscan.runtime.runners import cpu_name

    record = {"command": "python " + " ".join(shlex.quote(a) for a in [f"benchmarks/{Path(sys.argv[0]).name}",
                                                                        *sys.argv[1:]]),
              "cpu": cpu_name(), "cpu_flags_vnni": "avx512_vnni" in _cpu_flags(), "machine": platform.machine(),
              "date": time.strftime("%Y-%m-%d"), **figures}
    path = RESULTS / f"{name}.json"
    write_text(path, json.dumps(record, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def _cpu_flags() -> str:
    try:
        return next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    except OSError:
        return ""


def link_subset(source: Path, target: Path, per_class: int) -> Path:
    """The first ``per_class`` images of each class, as links (the data is never copied)."""
    for name in ("Positive", "Negative"):
        (target / name).mkdir(parents=True)
        for path in sorted((source / name).iterdir())[:per_class]:
            (target / name / path.name).symlink_to(path.resolve())
    return target


def prepare_run(run: Path | None, data: Path, work: Path, per_class: int = 1500) -> Path:
    """``run`` if given, else a default-settings run trained on a real subset."""
    from crackscan.testing import use_offline_keras_home

    use_offline_keras_home(work / "keras-home")  # no-op where ../shared is absent: Keras downloads
    if run is not None:
        return run
    import crackscan

    return crackscan.train(link_subset(data, work / "subset", per_class), work / "run").path


def real_image_files(data: Path) -> list[Path]:
    return sorted((data / "Positive").iterdir()) + sorted((data / "Negative").iterdir())


def int8_model(run: Path | None, data: Path, work: Path) -> Path:
    """The int8 LiteRT export of ``run`` (or of a freshly trained run), checked as usual."""
    import crackscan

    run_dir = prepare_run(run, data, work)
    return crackscan.export(run_dir, "litert", int8=True, out=work / "model.int8.tflite").path


def photo_of_patches(files: list[Path], rng, width: int = 4032, height: int = 3024):
    """A survey-size photo (the size the Özgenel patches were cut from) tiled with real patches,
    or with real photos of any size at their own scale: left to right, each row as high as its
    first photo."""
    from PIL import Image

    photo = Image.new("RGB", (width, height))
    y = 0
    while y < height:
        x, row = 0, None
        while x < width:
            patch = Image.open(files[rng.integers(len(files))]).convert("RGB")
            row = row or patch.height
            photo.paste(patch.crop((0, 0, patch.width, row)), (x, y))
            x += patch.width
        y += row
    return photo


def patch_bytes(files: list[Path], rng, count: int = 64) -> list[bytes]:
    """The bytes of ``count`` real patches drawn without replacement: what clients upload."""
    return [files[i].read_bytes() for i in rng.choice(len(files), count, replace=False)]


def photo_jpeg(files: list[Path], rng, width: int = 4032, height: int = 3024) -> bytes:
    buffer = io.BytesIO()
    photo_of_patches(files, rng, width, height).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@contextlib.contextmanager
def serving(model: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`crackscan serve MODEL [OPTIONS]` in a process of its own on a free loopback port, up
    and answering /health; stopped on the way out. Yields its base URL and the process."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "crackscan.cli", "serve", str(model), "--port", str(port),
                               *options],
                              stderr=subprocess.DEVNULL)
    try:
        started = time.monotonic()
        while True:
            if server.poll() is not None:
                raise SystemExit("server exited at start-up")
            if time.monotonic() - started > 60:
                raise SystemExit("server did not answer /health within 60 s")
            try:
                if httpx.get(base + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base, server
    finally:
        server.terminate()
        server.wait(timeout=20)


def folder_of_photos(data: Path, folder: Path, count: int, seed: int = 0) -> tuple[Path, list[Path], Any]:
    """``count`` survey-size photos of real patches in ``folder``; the patch files and the
    generator, for more photos from the same draw."""
    import numpy as np

    files = real_image_files(data)
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for i in range(count):
        photo_of_patches(files, rng).save(folder / f"photo{i:02d}.jpg", quality=92)
    return folder, files, rng
