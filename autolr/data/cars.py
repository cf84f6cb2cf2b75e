"""Cars-196 from the official files: cars_annos.mat (all 16,185 annotations, read with scipy) and
car_ims/. Classes 1-98 train, 99-196 test (the `test` field is the classification split, not used)."""

from __future__ import annotations

from pathlib import Path

from autolr.data.build import Listing
from autolr.data.files import find_folder
from autolr.data.protocol import TRAIN_CLASSES
from autolr.errors import AutolrError

LAYOUT = "a folder with cars_annos.mat and car_ims/"
# The default hub copy, and the splits read from it: its card lists nine, `train` (8,144) and `test`
# (8,041), plus seven corrupted copies of the test images (contrast, gaussian_noise, impulse_noise,
# jpeg_compression, motion_blur, pixelate, spatter) that would put a copy of every test image next to it.
HUB_ID = "tanganke/stanford_cars"
HUB_SPLITS = ("train", "test")


def list_cars(root: str) -> Listing:
    """Paths and class ids of every image, split by class id."""
    folder = find_folder(root, ["cars_annos.mat"], LAYOUT)
    paths, classes, names = read_annos(folder / "cars_annos.mat")
    splits: dict = {"train": [], "test": []}
    for path, c in zip(paths, classes, strict=True):
        splits["train" if c <= TRAIN_CLASSES["cars196"] else "test"].append((str(folder / path), c))
    return Listing("cars196", folder, splits, names)


def read_annos(path: Path) -> tuple[list[str], list[int], dict[int, str]]:
    """(relative_im_path, class) per annotation and {class id: name} from cars_annos.mat."""
    import numpy as np

    try:
        from scipy.io import loadmat
    except ImportError:
        raise AutolrError("data.name = 'cars196' reads cars_annos.mat with scipy: pip install scipy") from None
    try:
        mat = loadmat(str(path), squeeze_me=True)
        annos = np.atleast_1d(mat["annotations"])
        paths = [str(p) for p in np.atleast_1d(annos["relative_im_path"])]
        classes = [int(c) for c in np.atleast_1d(annos["class"])]
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise AutolrError(f"{path}: not the official cars_annos.mat (annotations with relative_im_path and class): {e}") from None
    names = [str(n) for n in np.atleast_1d(mat.get("class_names", []))]
    return paths, classes, {i + 1: n for i, n in enumerate(names)}
