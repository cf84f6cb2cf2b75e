"""`autolr data prepare`: build a dataset once, decode-check every image, optionally shrink it, and save
it with `save_to_disk`; `load_data` then memory-maps that copy instead of reading the archive.

Shrinking the shorter side to 256 px (what the paper's test transform resizes to) cuts JPEG decoding,
the usual bottleneck of fine-tuning on CPU-fed GPUs. The copy lives in
<data.cache_dir or ~/.cache/autolr/datasets>/<name>-<size or "full">, with a meta.json saying what it
was made from, so a copy of another folder is never used by mistake.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import time
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolr.data.files import describe_bad
from autolr.data.protocol import check_counts, split_counts
from autolr.errors import AutolrError

if TYPE_CHECKING:
    import datasets

    from autolr.recipe import DataConfig

log = logging.getLogger("autolr.data")
META = "autolr-meta.json"
JPEG_QUALITY = 95  # re-encoding loss stays well below what the 224 px resize removes anyway


def cache_root(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path.home() / ".cache" / "autolr" / "datasets"


def cache_folder(cfg: DataConfig, size: int) -> Path:
    """<cache root>/<name>-<size>, or <name>-full for original-size images."""
    return cache_root(cfg) / f"{cfg.name}-{size or 'full'}"


def find_prepared(cfg: DataConfig, min_side: int = 0) -> Path | None:
    """The prepared copy of this dataset from this source; None if there is none.

    Of several copies: the smallest with images of at least `min_side` px (the fastest that is big
    enough), or the largest when `min_side` is 0 (unknown).
    """
    found = []
    for folder in sorted(cache_root(cfg).glob(f"{cfg.name}-*")):
        meta = None if folder.suffix == ".tmp" else read_meta(folder)  # .tmp: an interrupted prepare
        if meta is None or meta.get("name") != cfg.name:
            continue
        if not _same_source(meta, cfg):
            log.info("%s: the prepared copy %s was made from %s, not from this recipe's source; not using it",
                     cfg.name, folder, meta.get("source"))
        elif meta["size"] and meta["size"] < min_side:
            log.info("%s: the prepared copy %s has %d px images, below the %d px needed; not using it",
                     cfg.name, folder, meta["size"], min_side)
        else:
            found.append((meta["size"] or float("inf"), folder))
    if not found:
        return None
    return min(found)[1] if min_side else max(found)[1]


def read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None


def _same_source(meta: dict[str, Any], cfg: DataConfig) -> bool:
    if cfg.root:  # data.root may name the dataset's folder or the folder it sits in (find_folder's rule)
        root, source = Path(cfg.root).expanduser().resolve(), Path(meta.get("source", ""))
        return str(root) == meta.get("root") or root in (source, source.parent)
    if cfg.hub_id:  # a local hub copy is recorded by its absolute path
        from autolr.data.hub import source_of

        return meta.get("hub_id") == source_of(cfg.hub_id).removeprefix("hub:")
    return True  # no source in the recipe: any prepared copy of this dataset


def load_prepared(folder: Path) -> dict[str, datasets.Dataset]:
    """The splits of a prepared copy, memory-mapped."""
    import datasets

    meta = read_meta(folder) or {}
    size = f"{meta['size']} px shorter side" if meta.get("size") else "original size"
    skipped = f", {meta['skipped']} unreadable images left out" if meta.get("skipped") else ""
    log.info("%s: loading the prepared copy %s (%s, made from %s%s)",
             meta.get("name"), folder, size, meta.get("source"), skipped)
    return dict(datasets.load_from_disk(str(folder)))


def prepare_dataset(cfg: DataConfig, size: int = 256, workers: int | None = None) -> Path:
    """Build `cfg`'s dataset from its source, check and shrink every image, save it; returns the folder."""
    import datasets

    from autolr.data import read_source

    if cfg.name == "digits":
        raise AutolrError("data.name = 'digits' is built in memory: it needs no preparation")
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    splits, source = read_source(cfg)
    processed = {s: _reencode(ds, size, workers, s) for s, ds in splits.items()}
    processed, bad = _drop_failures(processed)
    if bad and not cfg.skip_corrupt:
        raise AutolrError(f"{cfg.name}: {len(bad)} images cannot be decoded: {describe_bad(bad)}."
                          " Replace them, or prepare with --skip-corrupt to leave them out")
    if bad:
        log.warning("%s: left out %d images that cannot be decoded: %s", cfg.name, len(bad), describe_bad(bad))
    check_counts(cfg.name, split_counts(processed), cfg.strict_counts, len(bad))
    folder = cache_folder(cfg, size)
    _save(datasets.DatasetDict(processed), folder, _meta(cfg, size, source, processed, len(bad)))
    return folder


def _reencode(split: datasets.Dataset, size: int, workers: int, name: str) -> datasets.Dataset:
    """Every image decoded (the check), shrunk to `size` and re-encoded, or kept byte-exact (size 0)."""
    import datasets

    features = split.features.copy()
    features["image"] = datasets.Image(decode=False)
    features["_error"] = datasets.Value("string")
    raw = split.cast_column("image", datasets.Image(decode=False))
    return raw.map(
        _Shrink(size), input_columns="image", features=features, num_proc=workers if workers > 1 else None,
        desc=f"prepare {name}",
    )


class _Shrink:
    """map() function: {"image": {bytes, path}, "_error": ""} or the failure in "_error"."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: dict) -> dict:
        try:
            data = image["bytes"] or Path(image["path"]).read_bytes()
            new = shrink_jpeg(data, self.size) if self.size else _checked(data)
        except Exception as e:  # unreadable or undecodable: reported (or skipped) by the caller
            return {"image": image, "_error": f"{type(e).__name__}: {e}"}
        return {"image": {"bytes": new, "path": image["path"]}, "_error": ""}


def _checked(data: bytes) -> bytes:
    from PIL import Image

    with Image.open(BytesIO(data)) as im:
        im.load()  # a full decode: verify() alone misses truncated JPEG data
    return data


def shrink_jpeg(data: bytes, size: int) -> bytes:
    """The image with its shorter side at most `size` px, upright (EXIF) and RGB, as a JPEG."""
    from PIL import Image, ImageOps

    with Image.open(BytesIO(data)) as im:
        scale = size / min(im.size)
        if scale < 1:  # JPEG: let libjpeg decode at 1/2, 1/4 or 1/8 scale when that stays above `size`
            im.draft("RGB", (round(im.width * scale), round(im.height * scale)))
        im.load()
        im = ImageOps.exif_transpose(im).convert("RGB")
    scale = size / min(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
    out = BytesIO()
    im.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _drop_failures(splits: dict[str, datasets.Dataset]) -> tuple[dict[str, datasets.Dataset], dict[str, str]]:
    import datasets

    from autolr.data.build import quiet_progress

    bad, kept = {}, {}
    with quiet_progress():
        for s, ds in splits.items():
            errors = ds.select_columns(["_error"]).with_format("arrow")["_error"].to_pylist()
            for i in (i for i, e in enumerate(errors) if e):
                bad[ds.select_columns(["image"]).with_format("arrow")[i]["image"][0]["path"].as_py()] = errors[i]
            good = [i for i, e in enumerate(errors) if not e]
            ds = ds.select(good) if len(good) < len(ds) else ds
            kept[s] = ds.remove_columns("_error").cast_column("image", datasets.Image(mode="RGB"))
    return kept, bad


def _meta(cfg: DataConfig, size: int, source: str, splits: dict, skipped: int) -> dict[str, Any]:
    return {
        "name": cfg.name, "size": size, "source": source, "skipped": skipped,
        "root": str(Path(cfg.root).expanduser().resolve()) if cfg.root else "",
        "hub_id": source.removeprefix("hub:") if source.startswith("hub:") else "",
        "splits": {s: list(c) for s, c in split_counts(splits).items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _save(dd: datasets.DatasetDict, folder: Path, meta: dict[str, Any]) -> None:
    """Write to <folder>.tmp, then swap it in: an interrupted prepare never leaves a half copy behind."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    dd.save_to_disk(str(tmp))
    (tmp / META).write_text(json.dumps(meta, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    log.info("%s: prepared copy saved to %s", meta["name"], folder)


def dataset_info(cfg: DataConfig, sample: int = 200, seed: int = 0) -> tuple[str, list[dict[str, Any]]]:
    """(source, one row per split): images, classes, images per class, image sizes of a sample."""
    from autolr.data import load_data

    bundle = load_data(cfg)
    return bundle.source, [_split_info(n, ds, sample, seed) for n, ds in bundle.splits().items()]


def _split_info(name: str, split: datasets.Dataset, sample: int, seed: int) -> dict[str, Any]:
    import random
    from collections import Counter

    from autolr.data.build import labels_of

    labels = labels_of(split)
    per_class = list(Counter(labels).values())
    rows = random.Random(seed).sample(range(len(split)), min(sample, len(split)))
    sizes = [_image_size(split, i) for i in rows]
    return {
        "split": name, "images": len(split), "classes": len(set(labels)),
        "per_class": _stats(per_class), "width": _stats([w for w, _ in sizes]),
        "height": _stats([h for _, h in sizes]), "sampled": len(rows),
    }


def _image_size(split: datasets.Dataset, index: int) -> tuple[int, int]:
    """Width and height from the file header only (no decode)."""
    from PIL import Image

    cell = split.with_format("arrow")[index]["image"][0]
    data, path = cell["bytes"].as_py(), cell["path"].as_py()
    with Image.open(BytesIO(data) if data else path) as im:
        return im.size


def _stats(values: list[int]) -> tuple[int, int, int] | None:
    """(min, median, max), or None for no values."""
    return (min(values), int(statistics.median(values)), max(values)) if values else None
