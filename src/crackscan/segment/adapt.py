"""`crackscan adapt crackscan-seg PHOTOS --masks MASKS --out RUN`: the segmenter taught a
site from a few of its photos with crack masks, on a CPU, in a minute.

A site's errors are systematic (the same formwork joints called cracks on every photo, the
same hairline cracks missed), so a few masked photos fix most of them. The backbone is
frozen: each site window goes through it once, and only the decoder is fine-tuned, on the
cached maps, from the parent's own weights. Each epoch mixes the site's windows with a
replay of the parent's training windows (their cached maps ship with the built-in: its
``.adapt.npz``), half and half, so the decoder learns the site without forgetting cracks in
general.

Whether the site gained is measured before anything is written: each site photo is scored
by a decoder fine-tuned without it (folds of photos), against the parent's decoder on the
same windows; the adapted run is refused, with both figures, when it is not better. The
run is then a segmenter run like any other (scan, survey, export, the report), with its
int8 LiteRT export made and checked inside it, so scans run at the parent's speed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import _tf, runs
from ..errors import CrackscanError
from ..files import check_writable, file_sha256, write_text
from ..masks import ignore_value_of, pair_with_masks
from ..model.backbone import imagenet_weights_path
from ..model.builtin import MODELS_DIR
from ..model.info import ModelInfo
from ..model.keras_archive import load_keras_model, read_keras_metadata, save_keras_model
from ..model.registry import resolve
from ..model.tasks import task_of
from ..model.segmenter import (TAPS, backbone_taps, build_decoder, end_to_end, folded_weights,
                               weights_from_convolutions)
from ..progress import Progress, as_progress
from ..runtime.formats import litert_convolutions
from ..settings import ADAPT_STEPS, TrainConfig
from ..version import __version__
from .annotations import UNLABELLED, exported_sources, is_export, labelmap_of
from .masksets import MaskedImage, read_masked, scaled_up, windows
from .pixels import PixelCounts, pixel_counts
from .train import SEGMENT_CLASSES, SEGMENT_PATCH_SIZE, _FlippedBatches, _embed, _loss, _predict

MIN_PHOTOS = 2  # one photo scores nothing it was not trained on
CV_FOLDS = 4
WINDOWS_PER_PHOTO = 24  # at most, cracked ones first: a 12 MP photo has 190 windows
# Fine-tuning takes this many steps of BATCH_SIZE windows, however many the site gave: its
# time is set, not its epochs (8 small photos give 8 windows, 8 photos of 12 MP 192).
STEPS = ADAPT_STEPS.default
LEARNING_RATE = 5e-4
BATCH_SIZE = 8
# Fine-tuning steps see a random 128 px part of each window's cached maps: a quarter of the
# decoder's work a step, so cross-validation and the final fit keep to a minute on 2 cores.
CROP = 128
REPLAY_WINDOWS = 48  # of the parent's training windows: the built-in ships this many
REPLAY_CRACKED_SHARE = 0.75
# Windows of the site photos (in their flips and rotations where there are fewer) the int8
# export is calibrated on.
CALIBRATION_WINDOWS = 64


@dataclasses.dataclass
class Windows:
    """Windows of photos through the frozen backbone: their five tap maps (float16), masks
    (uint8 0/1) and pixel weights (0: not labelled), and for site windows, whose photo each
    is and where in it."""

    maps: list[np.ndarray]
    masks: np.ndarray
    weights: np.ndarray
    owners: np.ndarray
    corners: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.masks)

    def take(self, rows: np.ndarray) -> "Windows":
        return Windows([m[rows] for m in self.maps], self.masks[rows], self.weights[rows], self.owners[rows],
                       [self.corners[i] for i in rows])

    @staticmethod
    def joined(parts: Sequence["Windows"]) -> "Windows":
        return Windows([np.concatenate([p.maps[i] for p in parts]) for i in range(len(TAPS))],
                       np.concatenate([p.masks for p in parts]), np.concatenate([p.weights for p in parts]),
                       np.concatenate([p.owners for p in parts]), [c for p in parts for c in p.corners])


@dataclasses.dataclass
class Parent:
    name: str  # as the user named it
    file: Path  # the model file it was read from
    config: TrainConfig
    decoder_weights: list[np.ndarray]  # build_decoder(folded=True)'s
    replay: Windows | None
    taps: Any  # the frozen backbone: pixels -> its five TAPS maps

    @property
    def tap_channels(self) -> tuple[int, ...]:
        return tuple(int(output.shape[-1]) for output in self.taps.outputs)

    def decoder(self, weights: list[np.ndarray] | None = None) -> Any:
        """The folded decoder with ``weights`` (the parent's own when None)."""
        decoder = build_decoder(self.config, self.tap_channels, folded=True)
        decoder.set_weights(self.decoder_weights if weights is None else weights)
        return decoder


@dataclasses.dataclass
class SegmenterAdaptation:
    path: Path
    metrics: dict[str, Any]


def adapt_segmenter(parent: str | Path, photos: str | Path | Sequence[str | Path], masks: str | Path | None,
                    out: str | Path, ignore_value: int | None = None, force: bool = False,
                    progress: Progress | bool = False, steps: int = STEPS, int8: bool = True,
                    crack_label: str = "crack") -> SegmenterAdaptation:
    """A new segmenter run that knows the site of ``photos`` and their crack masks in ``masks``
    (0 background, any other value crack, ``ignore_value`` not labelled), or in a labelling
    tool's export (Label Studio JSON, CVAT XML, colour masks with a labelmap.txt: regions
    labelled ``crack_label`` are crack); or, with ``masks`` None, of a labels folder ``photos``
    (crackscan label, the web page): a clear tile teaches that all its pixels are clear, a
    crack tile that the parent's own mask inside it is right, a mark on the page what it marks;
    no other pixel counts. Refused, writing nothing, when cross-validation on the site's photos
    does not find it better than the parent. With ``int8`` (the CLI's way), its int8 LiteRT
    export is made and checked in it."""
    report = as_progress(progress)
    started = time.perf_counter()
    out = Path(out)
    if runs.is_run(out) and not force:
        raise CrackscanError(f"{out} already holds a run: pass --force to replace it")
    check_writable(out, create=False)
    # The site is read before the parent: a mistake in it is said at once.
    sources, skipped, sparse = _site_sources(photos, masks, ignore_value, crack_label, parent, report)
    if len(sources) < MIN_PHOTOS:
        raise CrackscanError(f"{len(sources)} photo(s) with {'masks' if masks is not None else 'labelled tiles'}: "
                             f"adapting needs at least {MIN_PHOTOS}, so each photo can be scored by a decoder that was "
                             "not taught on it")
    items = [item for item, _ in sources]
    found = read_parent(parent, report)
    config = found.config
    report.step(f"reading windows of {config.image_size} px from {len(items)} site photos")
    pixels, site, made_masks = _read_site(sources, config.image_size, skipped)
    if not len(site):
        raise CrackscanError("no readable photo with a mask to adapt on" + (f" ({skipped[0][0]}: {skipped[0][1]})"
                                                                              if skipped else ""))
    photos_read = sorted(set(site.owners.tolist()))
    if len(photos_read) < MIN_PHOTOS:
        raise CrackscanError(f"only {len(photos_read)} site photo could be read: adapting needs {MIN_PHOTOS}")
    report.step(f"the frozen backbone over {len(site)} site windows, once")
    site.maps = _embed(found.taps, pixels, config.embed_batch_size)

    report.step(f"cross-validating on the site's {len(photos_read)} photos ({min(CV_FOLDS, len(photos_read))} folds "
                f"of photos, {steps} steps each)")
    tuner = FineTuner(found)
    before, after, per_photo = _cross_validate(tuner, site, steps)
    if not gained(before, after, sparse):
        raise NotBetter(f"the adapted decoder is not better than {found.name} on the site's own photos ("
                        f"{site_figure(before, after, sparse)}, each photo scored by a decoder not taught on it, "
                        f"{len(photos_read)} photos): nothing written. More photos, masks drawn along every crack, or "
                        "more --steps may teach more", before, after,
                        {items[i].photo.name: pair for i, pair in per_photo.items()}, sparse)
    report.step(f"site {site_figure(before, after, sparse)} cross-validated; fine-tuning on all {len(photos_read)} photos")
    model = end_to_end(found.taps, found.decoder(tuner.fit(site, steps, config.seed)))
    info = ModelInfo(SEGMENT_CLASSES, "crack", config.image_size, SEGMENT_PATCH_SIZE, "MobileNetV2", config.alpha,
                     __version__, task="segment")
    metrics = {
        "task": "segment",
        "adapted_from": found.name,
        "parent_file": str(found.file),
        "photos": {"train": len(photos_read), "val": 0, "test": 0},
        "site": {"photos": len(photos_read), "windows": len(site),
                 "masks": str(Path(masks).resolve()) if masks is not None else None,
                 "labels": None if masks is not None else str(Path(photos).resolve()),
                 "skipped": [{"file": f, "reason": r} for f, r in skipped]},
        "site_cross_validated": {
            "folds": min(CV_FOLDS, len(photos_read)), "photos": len(photos_read), "tolerance_px": 2, "threshold": 0.5,
            "before": before.figures(), "after": after.figures(), "crack_pixels_labelled": before.truth,
            "pixels_called_crack": {"before": before.predicted, "after": after.predicted},
            "figure": site_figure(before, after, sparse),
            "per_photo": [{"photo": str(items[i].photo), "before": round(b.f1, 4), "after": round(a.f1, 4),
                           "figure": site_figure(b, a, sparse)} for i, (b, a) in per_photo.items()],
            "how": "each photo's windows scored by a decoder fine-tuned without its fold, float; counts summed"},
        "replay_windows": 0 if found.replay is None else len(found.replay),
        "method": {"trained": "the decoder (batch norms folded), from the parent's weights; backbone frozen",
                   "steps": steps, "crop_px": CROP, "learning_rate": LEARNING_RATE, "batch_size": BATCH_SIZE,
                   "mix": "a batch of site windows, then one of replay windows, in turn; random crops and flips"},
    }
    report.step("writing the new run")
    with runs.writing(out, force) as folder:
        save_keras_model(model, folder / runs.MODEL_FILE, info)
        config.save(folder / runs.CONFIG_FILE)
        if any(item.mask is None for item in items):
            # The masks labels, strokes or a tool's regions made, unlabelled pixels ignored:
            # what the run learnt, and its export's check.
            items = _write_label_masks(folder, items, made_masks)
        rows = [{"photo": str(items[i].photo.resolve()), "mask": str(items[i].mask.resolve()), "set": "site",
                 "split": "train", "sha256": items[i].sha256} for i in photos_read]
        write_text(folder / runs.SEGMENT_SPLIT_FILE, json.dumps(rows, indent=1) + "\n")
        metrics["seconds_before_export"] = round(time.perf_counter() - started, 1)
        runs.write_metrics(folder, metrics)
        runs.finish(folder, Path(masks if masks is not None else photos).resolve().parent,
                    {"task": "segment", "adapted_from": found.name})
    if int8:
        from ..export import export

        report.step("the int8 LiteRT export, calibrated and checked on the site's windows")
        try:
            exported = export(out, "litert", int8=True, force=True, calibration_images=CALIBRATION_WINDOWS)
            metrics["int8"] = {"file": exported.path.name, **exported.check}
        except CrackscanError as error:  # the run stands, in float; scans say which file they run
            metrics["int8"] = {"passed": False, "error": str(error)}
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    runs.write_metrics(out, metrics)
    return SegmenterAdaptation(out, metrics)


def read_parent(model: str | Path, report: Progress) -> Parent:
    """What adapting ``model`` starts from: its folded decoder weights, its settings and its
    replay windows. A built-in segmenter's decoder is read back from its int8 file (each
    weight within half a quantization step of the float one) and its replay ships beside it;
    a segmenter run's decoder is its model.keras', its replay windows of its own training
    photos."""
    resolved = resolve(model)
    if resolved.builtin is not None:
        builtin = resolved.builtin
        if not task_of(builtin.task).per_pixel:
            raise CrackscanError(f"{model} is a tile classifier: adapt it from labelled tiles (crackscan adapt {model} "
                                 "LABELS --out RUN), not masks")
        config = TrainConfig(**{k: v for k, v in builtin.settings.items() if k in TrainConfig.__dataclass_fields__})
        data = builtin.adaptation
        stored = MODELS_DIR / data.get("file", "")
        if not data or not stored.is_file():
            raise CrackscanError(f"built-in model {model} carries no adaptation data in this install (its replay "
                                 f"windows, {data.get('file', 'not listed in models.json')}): reinstall crackscan")
        weights = imagenet_weights_path(config).resolve()
        if file_sha256(weights) != data.get("imagenet_weights_sha256"):
            raise CrackscanError(f"{model} was built on other ImageNet weights than Keras' {weights} (SHA-256 differs), "
                                 "so its decoder does not fit this backbone")
        report.step(f"reading {model}'s decoder from its int8 file and its {data.get('windows', '')} replay windows")
        taps = backbone_taps(config)
        decoder = build_decoder(config, tuple(int(o.shape[-1]) for o in taps.outputs), folded=True)
        try:
            decoder_weights = weights_from_convolutions(
                litert_convolutions(builtin.path.read_bytes(), "crackscan_decoder"), decoder)
        except ValueError as error:
            raise CrackscanError(f"{builtin.path} is not the segmenter adapt knows ({error}): reinstall crackscan") from None
        return Parent(str(model), builtin.path, config, decoder_weights, read_replay(stored), taps)
    if resolved.run is None or resolved.file.suffix != ".keras":
        raise CrackscanError(f"adapt starts from a segmenter run folder or crackscan-seg, not {model}")
    info = read_keras_metadata(resolved.file)
    if not task_of(info).per_pixel:
        raise CrackscanError(f"{model} is a tile classifier: adapt it from labelled tiles (crackscan adapt {model} "
                             "LABELS --out RUN), not masks")
    metrics = runs.read_json(resolved.run, runs.METRICS_FILE)
    if metrics.get("adapted_from"):
        raise CrackscanError(f"{model} is itself adapted: adapt {metrics['adapted_from']} instead, with all the site's "
                             "photos together")
    config = TrainConfig.load(resolved.run / runs.CONFIG_FILE)
    keras_model, _ = load_keras_model(resolved.file)
    decoder = keras_model.get_layer("crackscan_decoder")
    decoder_weights = folded_weights(decoder) if any(layer.name.endswith("_bn") for layer in decoder.layers) \
        else decoder.get_weights()
    taps = keras_model.get_layer("crackscan_taps")
    report.step(f"embedding {REPLAY_WINDOWS} windows of {model}'s training photos to replay")
    return Parent(str(model), resolved.file, config, decoder_weights, _run_replay(resolved.run, config, taps), taps)


def _site_sources(photos: str | Path | Sequence[str | Path], masks: str | Path | None, ignore_value: int | None,
                  crack_label: str, parent: str | Path, report: Progress
                  ) -> tuple[list[tuple[MaskedImage, Callable[[], tuple]]], list[tuple[str, str]], bool]:
    """The site photos, each with a reader of its pixels, crack mask and pixel weights; the
    photos left out with why; and whether the labels are sparse (tiles: most of each photo
    unlabelled). From mask files, a labelling tool's export, a folder the web page marked
    (photos/ and masks/), or a labels folder of tiles."""
    if masks is None and not (Path(photos) / "labels.csv").is_file() and (Path(photos) / MARKED_PHOTOS).is_dir():
        photos, masks = Path(photos) / MARKED_PHOTOS, Path(photos) / MARKED_MASKS
    if masks is None:
        return _labelled_photos(Path(photos), parent, report), [], True
    if is_export(masks) or labelmap_of(masks) is not None:
        sources, skipped, tool = exported_sources(photos, masks, crack_label)
        report.step(f"{len(sources)} photos with {tool} annotations ({len(skipped)} left out)")
        return sources, skipped, False
    paired, missing = pair_with_masks(photos, masks)
    ignore = ignore_value_of(masks, ignore_value)
    items = [MaskedImage(p.photo, p.mask, "site", "train", file_sha256(p.photo)) for p in paired]
    return [(item, lambda item=item: read_masked(item, 0, ignore)) for item in items], list(missing), False


class NotBetter(CrackscanError):
    """The site's cross-validation says the adapted decoder is no better than its parent."""

    def __init__(self, message: str, before: PixelCounts, after: PixelCounts,
                 per_photo: dict[str, tuple[PixelCounts, PixelCounts]], sparse: bool = False):
        super().__init__(message)
        self.before, self.after, self.per_photo, self.sparse = before, after, per_photo, sparse


def gained(before: PixelCounts, after: PixelCounts, sparse: bool = False) -> bool:
    """Better on the site: a higher pixel F1 where the labels hold crack pixels; where they
    hold none, fewer pixels called crack. With ``sparse`` labels (tiles: most of each photo
    unlabelled), also a precision no lower: a few crack tiles could otherwise buy recall with
    the very joints the user marked clear, and still raise the F1 of so few pixels."""
    if not before.truth:
        return after.predicted < before.predicted
    if sparse and after.precision < before.precision:
        return False
    return after.f1 > before.f1


def false_crack_pixels(counts: PixelCounts) -> int:
    return counts.predicted - counts.predicted_hit


def site_figure(before: PixelCounts, after: PixelCounts, sparse: bool = False) -> str:
    if not before.truth:
        return f"pixels called crack where the labels say clear {before.predicted:,} -> {after.predicted:,}"
    figure = f"pixel F1 within 2 px {before.f1:.3f} -> {after.f1:.3f}"
    if sparse:
        figure += (f", precision {before.precision:.3f} -> {after.precision:.3f} (pixels called crack where the "
                   f"labels say clear {false_crack_pixels(before):,} -> {false_crack_pixels(after):,})")
    return figure


def _read_site(sources: list[tuple[MaskedImage, Callable[[], tuple]]], size: int, skipped: list[tuple[str, str]]
               ) -> tuple[np.ndarray, Windows, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """The windows of each site photo a scan would see (read at the scan's scale, on the grid,
    the last window flush with the edge) that hold labelled pixels: all of them, or
    WINDOWS_PER_PHOTO, three quarters cracked where there are, the rest drawn from the clear
    ones. Also each photo's crack mask and pixel weights at its own scale."""
    from ..images import ImageReadError

    rng = np.random.default_rng(0)
    pixels, masks, weights, owners, corners = [], [], [], [], []
    made = {}
    for index, (item, read) in enumerate(sources):
        try:
            native = read()
        except ImageReadError as error:
            skipped.append((str(error.source), error.reason))
            continue
        made[index] = native[1:]
        photo, crack, weight = scaled_up(*native, size)
        grid = [c for c in windows(photo.shape[1], photo.shape[0], size)
                if weight[c[1]:c[1] + size, c[0]:c[0] + size].any()]
        if len(grid) > WINDOWS_PER_PHOTO:
            cracked = [c for c in grid if crack[c[1]:c[1] + size, c[0]:c[0] + size].any()]
            clear = [c for c in grid if c not in cracked]
            take = min(len(cracked), max(WINDOWS_PER_PHOTO - len(clear), int(WINDOWS_PER_PHOTO * REPLAY_CRACKED_SHARE)))
            grid = [cracked[i] for i in sorted(rng.choice(len(cracked), take, replace=False))] + [
                clear[i] for i in sorted(rng.choice(len(clear), WINDOWS_PER_PHOTO - take, replace=False))]
        for x, y in grid:
            pixels.append(photo[y:y + size, x:x + size])
            masks.append(crack[y:y + size, x:x + size].astype(np.uint8))
            weights.append(weight[y:y + size, x:x + size].astype(np.float16))
            owners.append(index)
            corners.append((x, y))
    if not pixels:
        return np.zeros((0, size, size, 3), np.uint8), Windows([], np.zeros((0, size, size), np.uint8),
                                                               np.zeros((0, size, size), np.float16),
                                                               np.zeros(0, int), []), made
    return np.stack(pixels), Windows([], np.stack(masks), np.stack(weights), np.asarray(owners), corners), made


LABEL_MASKS_FOLDER = "site-masks"  # in an adapted run: the masks its labels, strokes or a tool's regions made
LABEL_MASK_IGNORED = UNLABELLED
# A folder the web page marks photos in: the photos as uploaded, and their masks (255 crack,
# 0 clear, UNLABELLED where nothing was marked).
MARKED_PHOTOS, MARKED_MASKS = "photos", "masks"


def _labelled_photos(folder: Path, parent: str | Path, report: Progress
                     ) -> list[tuple[MaskedImage, Callable[[], tuple]]]:
    """A labels folder's photos, each with a reader of its pixels, crack mask and weights: a
    clear tile's pixels all clear, a crack tile's the parent's own mask inside it (at 0.5), the
    rest of the photo unlabelled (weight 0)."""
    from ..images import read_pixels
    from ..photo.segment import crack_probability_map
    from ..runtime.predictor import load
    from ..site.labels import LABELS_FILE, LabelSet

    if not (folder / LABELS_FILE).is_file():
        raise CrackscanError(f"{folder} holds no {LABELS_FILE}: a segmenter adapts from photos with --masks MASKS, or "
                             "from a labels folder (crackscan label, the web page), whose labels name their photos")
    labels = LabelSet(folder)
    by_photo: dict[Path, list] = {}
    for label in labels.labels.values():
        path = Path(label.photo) if Path(label.photo).is_absolute() else folder / label.photo
        by_photo.setdefault(path, []).append(label)
    missing = [path for path in by_photo if not path.is_file()]
    if missing:
        report.step(f"{len(missing)} photo(s) labels.csv names are gone (e.g. {missing[0]}): their tiles are left out")
    predictor = load(parent, fastest=True)

    def reader(path: Path, tiles: list) -> Callable[[], tuple]:
        def read() -> tuple:
            pixels = read_pixels(path, name=str(path))
            height, width = pixels.shape[:2]
            crack, weight = np.zeros((height, width), bool), np.zeros((height, width), np.float32)
            said = None
            for tile in tiles:
                box = (slice(tile.y, tile.y + tile.height), slice(tile.x, tile.x + tile.width))
                weight[box] = 1
                if tile.label == labels.crack_class:
                    said = crack_probability_map(predictor, pixels) >= 0.5 if said is None else said
                    crack[box] = said[box]
            return pixels, crack, weight
        return read

    return [(MaskedImage(path, None, "site", "train", file_sha256(path)), reader(path, tiles))
            for path, tiles in sorted(by_photo.items()) if path.is_file()]


def _write_label_masks(folder: Path, items: list[MaskedImage], made: dict[int, tuple[np.ndarray, np.ndarray]]
                       ) -> list[MaskedImage]:
    """Each labelled photo's mask (255 crack, 0 clear, LABEL_MASK_IGNORED not labelled) in the
    run's LABEL_MASKS_FOLDER, with its masks.json; the items pointing at them."""
    from PIL import Image

    from ..files import atomic_path
    from ..masks import MASKS_SETTINGS_FILE

    target = folder / LABEL_MASKS_FOLDER
    target.mkdir(exist_ok=True)
    write_text(target / MASKS_SETTINGS_FILE, json.dumps({"ignore_value": LABEL_MASK_IGNORED}) + "\n")
    named = []
    for index, item in enumerate(items):
        mask = target / f"{index:03d}-{item.photo.stem[:60]}.png"
        if index in made:
            crack, weight = made[index]
            values = np.where(weight > 0, np.where(crack, 255, 0), LABEL_MASK_IGNORED).astype(np.uint8)
            with atomic_path(mask) as temporary:
                Image.fromarray(values).save(temporary, format="PNG")
        named.append(dataclasses.replace(item, mask=mask))
    return named


class FineTuner:
    """The parent's decoder fine-tuned on site windows and its replay windows, ``steps``
    batches in turn from each (only the site's when there is no replay), every one a random
    CROP px part of its windows, flipped at random. One decoder is compiled once and set back
    to the parent's weights, its optimizer to zero, for every fit: tracing the training step
    cost 6.5 s a fit, the 42 steps themselves as much (AMD EPYC, 2 cores)."""

    def __init__(self, parent: Parent) -> None:
        keras = _tf.keras()
        self.parent = parent
        self.decoder = build_decoder(parent.config, parent.tap_channels, folded=True, any_size=True)
        self.decoder.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=_loss)

    def fit(self, site: Windows, steps: int, seed: int) -> list[np.ndarray]:
        """The fine-tuned decoder's weights (build_decoder(folded=True)'s)."""
        keras = _tf.keras()
        keras.utils.set_random_seed(seed)
        self.decoder.set_weights(self.parent.decoder_weights)
        for variable in self.decoder.optimizer.variables:  # the step count and Adam's moments, not its rate
            if "learning_rate" not in variable.path:
                variable.assign(keras.ops.zeros_like(variable))
        pools = [site] if self.parent.replay is None else [site, self.parent.replay]
        streams = [_batches(pool, -(-steps // len(pools)), seed + index) for index, pool in enumerate(pools)]

        class Alternating(keras.utils.PyDataset):
            def __len__(self) -> int:
                return steps

            def __getitem__(self, index: int) -> tuple:
                stream = streams[index % len(streams)]
                return stream[(index // len(streams)) % len(stream)]

        self.decoder.fit(Alternating(), epochs=1, verbose=0)
        return self.decoder.get_weights()


def _batches(pool: Windows, count: int, seed: int) -> Any:
    """``count`` batches of ``pool``'s windows drawn at random, cropped and flipped."""
    size = pool.masks.shape[1]
    blank = np.broadcast_to(np.zeros((1, size, size, 3), np.uint8), (len(pool), size, size, 3))
    return _FlippedBatches((blank, pool.masks, pool.weights), pool.maps, BATCH_SIZE, seed, flips=True,
                           draw=np.full(len(pool), 1 / len(pool)), crop=min(CROP, size), draws=count * BATCH_SIZE)


def crack_maps(decoder: Any, maps: list[np.ndarray]) -> np.ndarray:
    """The decoder's crack maps of cached windows (its pixels input is unused: zeros)."""
    size = maps[0].shape[1] * TAPS[0][1]
    return _predict(decoder, np.broadcast_to(np.zeros((1, size, size, 3), np.uint8), (len(maps[0]), size, size, 3)),
                    maps)


def _cross_validate(tuner: FineTuner, site: Windows, steps: int
                    ) -> tuple[PixelCounts, PixelCounts, dict[int, tuple[PixelCounts, PixelCounts]]]:
    """Pixel counts within 2 px of the parent's decoder and of decoders fine-tuned without each
    fold of photos, on every site window; and each photo's two."""
    photos = sorted(set(site.owners.tolist()))
    folds = [photos[i::min(CV_FOLDS, len(photos))] for i in range(min(CV_FOLDS, len(photos)))]
    parent = tuner.parent
    before_maps = crack_maps(parent.decoder(), site.maps)
    after_maps = np.zeros_like(before_maps)
    for fold in folds:
        held = np.isin(site.owners, fold)
        decoder = parent.decoder(tuner.fit(site.take(np.flatnonzero(~held)), steps, parent.config.seed))
        after_maps[held] = crack_maps(decoder, [m[held] for m in site.maps])
    before, after, per_photo = PixelCounts(), PixelCounts(), {}
    for photo in photos:
        rows = np.flatnonzero(site.owners == photo)
        one_before, one_after = PixelCounts(), PixelCounts()
        for row in rows:
            counted = site.weights[row] > 0
            one_before += pixel_counts(before_maps[row] >= 0.5, site.masks[row] > 0, counted=counted)
            one_after += pixel_counts(after_maps[row] >= 0.5, site.masks[row] > 0, counted=counted)
        before += one_before
        after += one_after
        per_photo[photo] = (one_before, one_after)
    return before, after, per_photo


# ---- replay windows: the parent's own training windows, through the backbone ------------

def replay_payload(items: Sequence[MaskedImage], config: TrainConfig, count: int = REPLAY_WINDOWS,
                   seed: int = 0) -> tuple[bytes, dict[str, Any]]:
    """``count`` windows of a segmenter's training photos (``items``), three quarters with
    cracks, through the frozen backbone and cut to the CROP px part fine-tuning sees (where
    the window's crack pixels are most; the maps were made on the whole window, in context),
    as one compressed .npz: each tap map uint8 per channel (its own low and step), masks and
    labelled pixels bit-packed. About 0.1 MB a window."""
    replay = cropped(_windows_of(items, config, count, seed, backbone_taps(config)), min(CROP, config.image_size))
    buffer = io.BytesIO()
    arrays: dict[str, np.ndarray] = {}
    for index, tap in enumerate(replay.maps):
        low = tap.min(axis=(0, 1, 2)).astype(np.float32)
        step = np.maximum((tap.max(axis=(0, 1, 2)).astype(np.float32) - low) / 255, 1e-6).astype(np.float32)
        arrays[f"tap{index}"] = np.clip(np.round((tap.astype(np.float32) - low) / step), 0, 255).astype(np.uint8)
        arrays[f"tap{index}_low"], arrays[f"tap{index}_step"] = low, step
    arrays["masks"] = np.packbits(replay.masks > 0, axis=-1)
    arrays["labelled"] = np.packbits(replay.weights > 0, axis=-1)
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue(), {"windows": len(replay), "sets": sorted({i.dataset for i in items})}


def cropped(pool: Windows, crop: int) -> Windows:
    """Each window of ``pool`` cut to the crop x crop part (at a multiple of the coarsest
    map's stride) holding most of its crack pixels."""
    size, coarsest = pool.masks.shape[1], TAPS[-1][1]
    places = [(x, y) for y in range(0, size - crop + 1, coarsest) for x in range(0, size - crop + 1, coarsest)]
    maps: list[list[np.ndarray]] = [[] for _ in TAPS]
    masks, weights = [], []
    for row in range(len(pool)):
        x, y = max(places, key=lambda p: int(pool.masks[row, p[1]:p[1] + crop, p[0]:p[0] + crop].sum()))
        for cut, tap, (_, stride) in zip(maps, pool.maps, TAPS):
            cut.append(tap[row, y // stride:(y + crop) // stride, x // stride:(x + crop) // stride])
        masks.append(pool.masks[row, y:y + crop, x:x + crop])
        weights.append(pool.weights[row, y:y + crop, x:x + crop])
    return Windows([np.stack(m) for m in maps], np.stack(masks), np.stack(weights), pool.owners, pool.corners)


def read_replay(path: Path) -> Windows:
    try:
        with np.load(path, allow_pickle=False) as saved:
            maps = [(saved[f"tap{i}"].astype(np.float32) * saved[f"tap{i}_step"] + saved[f"tap{i}_low"]
                     ).astype(np.float16) for i in range(len(TAPS))]
            masks = np.unpackbits(saved["masks"], axis=-1)
            weights = np.unpackbits(saved["labelled"], axis=-1).astype(np.float16)
    except (OSError, ValueError, KeyError) as error:
        raise CrackscanError(f"cannot read {path} ({error}): reinstall crackscan") from None
    size = maps[0].shape[1] * TAPS[0][1]
    masks, weights = masks[..., :size], weights[..., :size]
    return Windows(maps, masks, weights, np.full(len(masks), -1), [(0, 0)] * len(masks))


def _run_replay(run: Path, config: TrainConfig, taps: Any) -> Windows | None:
    from .masksets import run_photos

    items = [item for item in run_photos(run, ("train",)) if item.mask is not None]
    return cropped(_windows_of(items, config, REPLAY_WINDOWS, 0, taps), min(CROP, config.image_size)) if items else None


def _windows_of(items: Sequence[MaskedImage], config: TrainConfig, count: int, seed: int, taps: Any) -> Windows:
    from .masksets import training_windows

    rng = np.random.default_rng(seed)
    chosen = [items[i] for i in sorted(rng.choice(len(items), min(len(items), count), replace=False))]
    pixels, masks, weights, _ = training_windows(chosen, config.image_size, 2, 0.5, rng, [])
    cracked = np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1))
    clear = np.flatnonzero(~masks.reshape(len(masks), -1).any(axis=1))
    take = min(len(cracked), int(round(count * REPLAY_CRACKED_SHARE)))
    rows = np.sort(np.concatenate([rng.choice(cracked, take, replace=False),
                                   rng.choice(clear, min(len(clear), count - take), replace=False)]).astype(int))
    return Windows(_embed(taps, pixels[rows], config.embed_batch_size), masks[rows], weights[rows],
                   np.full(len(rows), -1),
                   [(0, 0)] * len(rows))
