"""Tiny fake copies of the official dataset archives, laid out and formatted like the real ones.

Each builder writes a few generated images per class and the real list-file formats, and returns a
`Fake` with the dataset folder and its split sizes (to monkeypatch `autolr.data.protocol.KNOWN_SIZES`).
CUB and Cars use class ids on both sides of the real train/test boundary (1.. and 101.. for CUB, 1.. and
99.. for Cars), so the real split rule applies unchanged. Reusable by any test:

    from _fake_datasets import make_cub
    fake = make_cub(tmp_path, classes=4, per_class=3)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Fake:
    folder: Path  # the dataset's own folder (what data.root may point at; its parent works too)
    sizes: dict[str, tuple[int, int]]  # split -> (images, classes), like KNOWN_SIZES
    files: list[Path] = field(default_factory=list)  # every image, in list-file order


def pixels(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like RGB array: smooth colour fields plus grain, so JPEG sizes are realistic."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    grain = rng.normal(0, 6, (height, width, 3))
    return np.clip(np.asarray(coarse, dtype=np.float64) + grain, 0, 255).astype(np.uint8)


def write_image(path: Path, size: tuple[int, int] = (24, 16), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels(*size, seed)).save(path, quality=90)
    return path


def make_cub(root: Path, classes: int = 4, per_class: int = 3, size=(24, 16)) -> Fake:
    """CUB_200_2011/ with images.txt, image_class_labels.txt, classes.txt, train_test_split.txt, images/."""
    folder = root / "CUB_200_2011"
    ids = [*range(1, classes + 1), *range(101, 101 + classes)]
    images, labels, files = [], [], []
    for c in ids:
        for j in range(per_class):
            rel = f"{_cub_class(c)}/{_cub_class(c)[4:]}_{j:04d}_{c * 100 + j}.jpg"
            files.append(write_image(folder / "images" / rel, size, seed=len(files)))
            images.append(f"{len(files)} {rel}")
            labels.append(f"{len(files)} {c}")
    _lines(folder / "images.txt", images)
    _lines(folder / "image_class_labels.txt", labels)
    _lines(folder / "classes.txt", [f"{c} {_cub_class(c)}" for c in ids])
    _lines(folder / "train_test_split.txt", [f"{i + 1} {i % 2}" for i in range(len(files))])
    n = classes * per_class
    return Fake(folder, {"train": (n, classes), "test": (n, classes)}, files)


def _cub_class(c: int) -> str:
    return f"{c:03d}.Bird_{c}"


def make_cars(root: Path, classes: int = 4, per_class: int = 3, size=(24, 16)) -> Fake:
    """cars_annos.mat (struct array `annotations`: relative_im_path, bbox_x1..y2, class, test) and car_ims/."""
    from scipy.io import savemat

    folder = root / "stanford_cars"
    ids = [*range(1, classes + 1), *range(99, 99 + classes)]
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annos = np.zeros((1, len(ids) * per_class), dtype=[(f, "O") for f in fields])
    files = []
    for c in ids:
        for j in range(per_class):
            k = len(files)
            rel = f"car_ims/{k + 1:06d}.jpg"
            files.append(write_image(folder / rel, size, seed=k))
            annos[0, k] = (rel, 1, 2, size[0] - 1, size[1] - 1, c, j % 2)
    names = np.array([[f"Car Make {c} Sedan 2012" for c in range(1, 197)]], dtype=object)
    savemat(str(folder / "cars_annos.mat"), {"annotations": annos, "class_names": names})
    n = classes * per_class
    return Fake(folder, {"train": (n, classes), "test": (n, classes)}, files)


def make_sop(root: Path, classes: int = 4, per_class: int = 3, size=(24, 16)) -> Fake:
    """Stanford_Online_Products/ with Ebay_train.txt, Ebay_test.txt (header "image_id class_id
    super_class_id path"), Ebay_info.txt and <category>_final/ folders."""
    folder = root / "Stanford_Online_Products"
    header = "image_id class_id super_class_id path"
    files, lists = [], {"train": [header], "test": [header]}
    for c in range(1, 2 * classes + 1):
        split, super_class = ("train" if c <= classes else "test"), 1 + c % 2
        category = ["bicycle", "cabinet"][super_class - 1]
        for j in range(per_class):
            rel = f"{category}_final/{111085122870 + c}_{j}.JPG"
            files.append(write_image(folder / rel, size, seed=len(files)))
            lists[split].append(f"{len(lists[split])} {c} {super_class} {rel}")
    _lines(folder / "Ebay_train.txt", lists["train"])
    _lines(folder / "Ebay_test.txt", lists["test"])
    _lines(folder / "Ebay_info.txt", ["image_id class_id super_class_id path", *lists["train"][1:], *lists["test"][1:]])
    n = classes * per_class
    return Fake(folder, {"train": (n, classes), "test": (n, classes)}, files)


def make_inshop(root: Path, items: int = 4, per_item: int = 4, size=(24, 16)) -> Fake:
    """In-shop/ with list_eval_partition.txt (a count line, a header line, padded rows) and img/.

    Train items get `per_item` images; each test item gets one query and `per_item - 1` gallery images.
    """
    folder = root / "In-shop"
    rows, files = [], []
    for k in range(1, 2 * items + 1):
        item = f"id_{k:08d}"
        for j in range(per_item):
            status = "train" if k <= items else ("query" if j == 0 else "gallery")
            rel = f"img/WOMEN/Dresses/{item}/{j + 1:02d}_{j % 4 + 1}_front.jpg"
            files.append(write_image(folder / rel, size, seed=len(files)))
            rows.append(f"{rel.ljust(72)}{item} {status}")
    _lines(folder / "list_eval_partition.txt", [str(len(rows)), "image_name item_id evaluation_status", *rows])
    return Fake(folder, {"train": (items * per_item, items), "query": (items, items),
                         "gallery": (items * (per_item - 1), items)}, files)


def make_imagefolder(root: Path, train=("a", "b", "c", "d"), test=("e", "f"), per_class: int = 3, size=(24, 16)) -> Fake:
    """root/train/<class>/*.jpg and root/test/<class>/*.jpg."""
    folder = root / "folder"
    files = [
        write_image(folder / split / c / f"{j}.jpg", size, seed=i * 10 + j)
        for split, classes in (("train", train), ("test", test))
        for i, c in enumerate(classes) for j in range(per_class)
    ]
    return Fake(folder, {"train": (len(train) * per_class, len(train)), "test": (len(test) * per_class, len(test))}, files)


def _lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# Broken and unusual images, as real archives contain them.

def truncate(path: Path) -> None:
    """Cut a file to half its size (an interrupted download)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_cmyk(path: Path, size=(24, 16)) -> None:
    Image.fromarray(pixels(*size, 1)).convert("CMYK").save(path, format="JPEG")


def write_palette(path: Path, size=(24, 16)) -> None:
    """A palette ('P') image with a transparent colour, saved as PNG under a .jpg name, as some archives have."""
    im = Image.fromarray(pixels(*size, 2)).convert("P", palette=Image.ADAPTIVE, colors=16)
    im.save(path, format="PNG", transparency=0)


def write_gray(path: Path, size=(24, 16)) -> None:
    Image.fromarray(pixels(*size, 3)).convert("L").save(path, format="JPEG")


# CIFAR's binary version: fixed 32x32 images, so the builders ignore `size` (kept for the common signature).

def make_cifar10(root: Path, classes: int = 4, per_class: int = 3, size=None, archive: bool = False) -> Fake:
    """cifar-10-batches-bin/ with data_batch_1..5.bin and test_batch.bin (records: 1 label byte, then the
    R, G and B planes of a 32x32 image) and batches.meta.txt; `archive`: packed as cifar-10-binary.tar.gz."""
    train = [f"data_batch_{i}.bin" for i in range(1, 6)]
    return _cifar(root / "cifar-10-batches-bin", train, "test_batch.bin", "batches.meta.txt", classes, per_class,
                  lambda c: bytes([c]), archive and "cifar-10-binary.tar.gz")


def make_cifar100(root: Path, classes: int = 4, per_class: int = 3, size=None, archive: bool = False) -> Fake:
    """cifar-100-binary/ with train.bin and test.bin (records: coarse and fine label bytes, then the
    pixels) and fine_label_names.txt; `archive`: packed as cifar-100-binary.tar.gz."""
    return _cifar(root / "cifar-100-binary", ["train.bin"], "test.bin", "fine_label_names.txt", classes, per_class,
                  lambda c: bytes([c // 5, c]), archive and "cifar-100-binary.tar.gz")


def _cifar(folder: Path, train: list[str], test: str, names: str, classes: int, per_class: int, label, archive) -> Fake:
    import shutil
    import tarfile

    folder.mkdir(parents=True, exist_ok=True)
    records: dict[str, list[bytes]] = {f: [] for f in [*train, test]}
    for c in range(classes):
        for j in range(per_class):
            for split, seed in ((train[(c * per_class + j) % len(train)], c * 100 + j), (test, 10_000 + c * 100 + j)):
                records[split].append(label(c) + pixels(32, 32, seed).transpose(2, 0, 1).tobytes())
    for f, rows in records.items():
        (folder / f).write_bytes(b"".join(rows))
    _lines(folder / names, [f"class_{c}" for c in range(classes)])
    n = classes * per_class
    fake = Fake(folder, {"train": (n, classes), "test": (n, classes)})
    if archive:  # only the archive is left
        with tarfile.open(folder.parent / archive, "w:gz") as tar:
            tar.add(folder, arcname=folder.name)
        shutil.rmtree(folder)
        fake.folder = folder.parent / archive
    return fake
