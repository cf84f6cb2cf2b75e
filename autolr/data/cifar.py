"""CIFAR-10 and CIFAR-100 from the official *binary* archives, or from a hub copy: the classification
benchmarks of SILO (method.md 5). Train and test share the classes; the score is accuracy.

data.root may name the `.tar.gz` archive, the folder it was extracted into, the extracted folder itself,
or a folder holding the archive; the archive is read without extracting it. Each record is the label
byte(s) and 3,072 bytes of 32x32 RGB planes. The "python version" of the archives is refused: it is a
pickle, and loading a pickle runs whatever code it holds.

Images are stored in the split as uncompressed BMP bytes: lossless, and about 6x faster to build than
PNG (about 4 s for the 60,000 images on one core); `autolr data prepare NAME --size 0` saves the result.
"""

from __future__ import annotations

import io
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autolr.data.build import make_split
from autolr.data.protocol import DOWNLOADS, check_counts, split_counts
from autolr.errors import AutolrError

if TYPE_CHECKING:
    import datasets

    from autolr.recipe import DataConfig

log = logging.getLogger("autolr.data")
PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class Layout:
    folder: str  # the archive's top folder
    archive: str  # the official file name
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_bytes: int  # per record, before the pixels
    label_at: int  # which of them is the class (CIFAR-100: coarse, then fine)
    names: str  # class names, one a line
    classes: int
    pickled: str  # the python version's folder, refused


LAYOUTS = {
    "cifar10": Layout("cifar-10-batches-bin", "cifar-10-binary.tar.gz",
                      tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",), 1, 0,
                      "batches.meta.txt", 10, "cifar-10-batches-py"),
    "cifar100": Layout("cifar-100-binary", "cifar-100-binary.tar.gz", ("train.bin",), ("test.bin",), 2, 1,
                       "fine_label_names.txt", 100, "cifar-100-python"),
}
HUB_DEFAULTS = {"cifar10": "uoft-cs/cifar10", "cifar100": "uoft-cs/cifar100"}
HUB_SPLITS = ("train", "test")  # the official 50,000 / 10,000; any other split of a copy is ignored


def read_cifar(cfg: DataConfig) -> tuple[dict[str, datasets.Dataset], str]:
    """{"train", "test"} and where they were read from: data.root, else the hub (data.hub_id or the default)."""
    from autolr.data.hub import source_of

    if not cfg.root:
        hub_id = cfg.hub_id or HUB_DEFAULTS[cfg.name]
        return load_cifar_hub(cfg.name, hub_id, strict_counts=cfg.strict_counts), source_of(hub_id)
    if cfg.hub_id:
        log.warning("%s: data.hub_id = %r is ignored: data.root is set (%r) and is read instead;"
                    " remove one of them", cfg.name, cfg.hub_id, cfg.root)
    layout = LAYOUTS[cfg.name]
    files, source = _read_files(layout, Path(cfg.root).expanduser(), cfg.name)
    lines = files.get(layout.names, b"").decode().splitlines()
    names = [n.strip() for n in lines if n.strip()] or [str(i) for i in range(layout.classes)]
    splits = {
        split: _split([files[f] for f in members], layout, names, cfg.name)
        for split, members in (("train", layout.train), ("test", layout.test))
    }
    check_counts(cfg.name, split_counts(splits), cfg.strict_counts)
    log.info("%s: read from %s", cfg.name, source)
    return splits, source


def check_cifar(cfg: DataConfig) -> None:
    """An AutolrError if data.root holds neither the binary archive nor its extracted batch files (nothing read)."""
    from autolr.data.hub import local_copy

    if not cfg.root:
        local_copy(cfg.hub_id)  # a hub id is looked up by the run, which needs the network
        return
    _locate(LAYOUTS[cfg.name], Path(cfg.root).expanduser(), cfg.name)


def _locate(layout: Layout, root: Path, name: str) -> tuple[Path, bool]:
    """Where the data is: (the .tar.gz, True) or (the extracted folder, False); else the error with the fix."""
    if root.is_file():
        return root, True
    for folder in (root, root / layout.folder):
        if all((folder / f).is_file() for f in (*layout.train, *layout.test)):
            return folder, False
    if (root / layout.archive).is_file():
        return root / layout.archive, True
    if root.name == layout.pickled or (root / layout.pickled).is_dir():
        raise AutolrError(
            f"data.root = {str(root)!r} holds the python (pickled) version of {name}, which autolr does not"
            f" load (a pickle can run code): download it from {DOWNLOADS[name]}"
        )
    raise AutolrError(
        f"data.root = {str(root)!r}: no {layout.archive} and no {layout.folder}/ with"
        f" {', '.join((*layout.train, *layout.test))}; download it from {DOWNLOADS[name]}"
    )


def _read_files(layout: Layout, root: Path, name: str) -> tuple[dict[str, bytes], str]:
    """The archive's member files by name, from the .tar.gz or from the extracted folder."""
    wanted = {*layout.train, *layout.test, layout.names}
    path, packed = _locate(layout, root, name)
    if packed:
        return _from_tar(path, wanted, layout), str(path)
    return {f: (path / f).read_bytes() for f in wanted if (path / f).is_file()}, str(path.resolve())


def _from_tar(path: Path, wanted: set[str], layout: Layout) -> dict[str, bytes]:
    try:
        with tarfile.open(path) as tar:
            found = {Path(m.name).name: m for m in tar.getmembers() if m.isfile() and Path(m.name).name in wanted}
            files = {n: tar.extractfile(m).read() for n, m in found.items()}
    except (OSError, tarfile.TarError) as e:
        raise AutolrError(f"cannot read {path} ({e}): is the download complete?") from None
    missing = sorted({*layout.train, *layout.test} - set(files))
    if missing:
        raise AutolrError(f"{path} lacks {', '.join(missing)}: is it the binary version ({layout.archive})?")
    return files


def _split(blobs: list[bytes], layout: Layout, names: list[str], name: str) -> datasets.Dataset:
    import numpy as np

    size = layout.label_bytes + PIXELS
    for blob in blobs:
        if len(blob) % size:
            raise AutolrError(f"{name}: a batch file of {len(blob)} bytes is not made of {size}-byte records;"
                              f" is it the binary version ({layout.archive})?")
    records = np.concatenate([np.frombuffer(b, dtype=np.uint8).reshape(-1, size) for b in blobs])
    labels = records[:, layout.label_at].astype(int).tolist()
    if max(labels, default=0) >= len(names):
        raise AutolrError(f"{name}: label {max(labels)} in a batch file, but {len(names)} classes")
    images = records[:, layout.label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return make_split([{"bytes": _bmp(x), "path": None} for x in images], labels, names)


def _bmp(pixels) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "BMP")
    return out.getvalue()


def load_cifar_hub(name: str, hub_id: str, *, strict_counts: bool) -> dict[str, datasets.Dataset]:
    """The hub copy's train and test splits, reduced to image (RGB) and label (CIFAR-100: the fine label)."""
    import datasets

    from autolr.data.hub import download_splits, image_label_columns

    parts = download_splits(name, hub_id, HUB_SPLITS)
    image, label = image_label_columns(parts["train"].features, hub_id)
    label = "fine_label" if "fine_label" in parts["train"].features else label
    splits = {
        s: parts[s].select_columns([image, label])
        .rename_columns({c: n for c, n in ((image, "image"), (label, "label")) if c != n})
        .cast_column("image", datasets.Image(mode="RGB"))
        for s in HUB_SPLITS
    }
    check_counts(name, split_counts(splits), strict_counts)
    return splits
