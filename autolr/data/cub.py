"""CUB-200-2011 from the official archive: `CUB_200_2011/` with images.txt, image_class_labels.txt,
classes.txt and images/. Classes 1-100 train, 101-200 test (the archive's train_test_split.txt is the
classification split and is not used)."""

from __future__ import annotations

from autolr.data.build import Listing
from autolr.data.files import find_folder, read_rows
from autolr.data.protocol import TRAIN_CLASSES
from autolr.errors import AutolrError

LAYOUT = "CUB_200_2011/ with images.txt, image_class_labels.txt, classes.txt and images/"
# The default hub copy (image, label in the official class order, bbox) and the splits read from it:
# its classification split, `train` (5,994) and `test` (5,794), pooled and re-cut by class.
HUB_ID = "bentrevett/caltech-ucsd-birds-200-2011"
HUB_SPLITS = ("train", "test")


def list_cub(root: str) -> Listing:
    """Paths and class ids of every image, split by class id."""
    folder = find_folder(root, ["images.txt"], LAYOUT)
    paths = dict(read_rows(folder / "images.txt", 2, ints=(0,)))  # "<image_id> <path under images/>"
    labels = dict(read_rows(folder / "image_class_labels.txt", 2, ints=(0, 1)))  # "<image_id> <class_id>"
    names = dict(read_rows(folder / "classes.txt", 2, ints=(0,)))  # "<class_id> <name>"
    unlabelled = sorted(set(paths) - set(labels))
    if unlabelled:
        raise AutolrError(f"{folder / 'image_class_labels.txt'}: no class for image ids {unlabelled[:10]}")
    splits: dict = {"train": [], "test": []}
    for image_id, path in paths.items():
        c = labels[image_id]
        splits["train" if c <= TRAIN_CLASSES["cub200"] else "test"].append((str(folder / "images" / path), c))
    return Listing("cub200", folder, splits, names)
