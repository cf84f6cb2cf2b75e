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


# Hub copies as `hf download --repo-type dataset ID --local-dir DIR` leaves them: a README.md whose YAML
# has dataset_info (features, splits) and configs, and parquet files data/<split>-00000-of-00001.parquet
# written by `datasets` (so the schema carries the features, ClassLabel names included, as on the hub).

@dataclass(frozen=True)
class HubCard:
    """What a repository's dataset card says: its splits, its columns and where its files are."""

    repo: str
    splits: tuple[str, ...]  # every split on the card, in its order
    image: str  # the image column
    label: str  # the class-label column
    extra: tuple[str, ...] = ()  # other columns: "bbox" (4 numbers) or "coarse_label" (CIFAR-100's 20)
    folder: str = "data"  # where the parquet files are
    copies_test: tuple[str, ...] = ()  # splits that are altered copies of the test images


# tanganke/stanford_cars: nine splits; train (8,144), test (8,041) and seven corrupted copies of the test
# images (8,041 each); columns image and label (class_label, 196 names in the official class order).
CARS_CARD = HubCard(
    "tanganke/stanford_cars",
    ("train", "test", "contrast", "gaussian_noise", "impulse_noise", "jpeg_compression", "motion_blur",
     "pixelate", "spatter"),
    "image", "label",
    copies_test=("contrast", "gaussian_noise", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate",
                 "spatter"),
)
# bentrevett/caltech-ucsd-birds-200-2011: train (5,994) and test (5,794), the classification split;
# columns image, label (class_label, 200 names "001.Black_footed_Albatross" ...) and bbox (4 numbers).
CUB_CARD = HubCard("bentrevett/caltech-ucsd-birds-200-2011", ("train", "test"), "image", "label", ("bbox",))
# uoft-cs/cifar10: config plain_text, files plain_text/{train,test}-00000-of-00001.parquet; columns img
# and label (class_label, 10 names). uoft-cs/cifar100 has img, fine_label (100) and coarse_label (20).
CIFAR10_CARD = HubCard("uoft-cs/cifar10", ("train", "test"), "img", "label", folder="plain_text")
CIFAR100_CARD = HubCard("uoft-cs/cifar100", ("train", "test"), "img", "fine_label", ("coarse_label",),
                        folder="cifar100")


def make_hub_copy(root: Path, card: HubCard, classes: int = 4, per_class: int = 2, size=(16, 12)) -> Path:
    """A local copy of `card`'s repository with `classes` classes and `per_class` images of each per split.

    Images are PNGs; a test image i is one pattern, and each of the card's corrupted copies holds the same
    image with a split-specific tint, so a pooled copy would show as near-duplicates.
    """
    folder = root / card.repo.replace("/", "--")
    names = [f"{c + 1:03d}.Class_{c + 1}" for c in range(classes)]
    for split in card.splits:
        split_seed = {"train": 0}.get(split, 1)  # "test" and its copies share the images
        tint = 0 if split in ("train", "test") else 1 + card.splits.index(split)
        _hub_split(card, names, per_class, size, split_seed, tint).to_parquet(
            str(folder / card.folder / f"{split}-00000-of-00001.parquet"))
    (folder / "README.md").write_text(_card_yaml(card, names, classes * per_class))
    return folder


def _hub_split(card: HubCard, names: list[str], per_class: int, size, seed: int, tint: int):
    import io

    import datasets

    rows = [(c, j) for c in range(len(names)) for j in range(per_class)]
    images = []
    for c, j in rows:
        out = io.BytesIO()
        array = pixels(*size, seed * 10_000 + c * 100 + j)
        Image.fromarray(np.clip(array.astype(int) + 8 * tint, 0, 255).astype(np.uint8)).save(out, format="PNG")
        images.append({"bytes": out.getvalue(), "path": None})
    features = {card.image: datasets.Image(), card.label: datasets.ClassLabel(names=names)}
    columns = {card.image: images, card.label: [c for c, _ in rows]}
    if "bbox" in card.extra:
        features["bbox"] = datasets.Sequence(datasets.Value("float32"), length=4)
        columns["bbox"] = [[1.0, 2.0, size[0] - 1.0, size[1] - 1.0]] * len(rows)
    if "coarse_label" in card.extra:
        features["coarse_label"] = datasets.ClassLabel(num_classes=2)
        columns["coarse_label"] = [c % 2 for c, _ in rows]
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _card_yaml(card: HubCard, names: list[str], rows: int) -> str:
    """The card's YAML header: features, splits and the configs' data_files, as the hub's parquet bot writes them."""
    label = "\n".join(f"          '{i}': {n}" for i, n in enumerate(names))
    extra = "".join(
        "  - name: bbox\n    sequence: float32\n" if c == "bbox" else f"  - name: {c}\n    dtype:\n      class_label:\n"
        "        names:\n          '0': a\n          '1': b\n" for c in card.extra)
    splits = "".join(f"  - name: {s}\n    num_bytes: {rows * 500}\n    num_examples: {rows}\n" for s in card.splits)
    files = "".join(f"  - split: {s}\n    path: {card.folder}/{s}-*\n" for s in card.splits)
    config = "default" if card.folder == "data" else card.folder
    return (f"---\ndataset_info:\n  features:\n  - name: {card.image}\n    dtype: image\n  - name: {card.label}\n"
            f"    dtype:\n      class_label:\n        names:\n{label}\n{extra}  splits:\n{splits}configs:\n"
            f"- config_name: {config}\n  data_files:\n{files}---\n# {card.repo} (a tiny fake)\n")
