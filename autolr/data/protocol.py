"""The benchmarks' protocol as data: known split sizes, standard Recall@K sets, the task of each dataset.

The retrieval sizes are the class-disjoint splits of method.md section 2; CIFAR's are its official
train/test splits (the same classes on both sides, scored by accuracy). They are module-level tables so that
tests (which build tiny fake archives) can replace them with `monkeypatch.setitem`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from autolr.errors import AutolrError

if TYPE_CHECKING:
    import datasets

log = logging.getLogger("autolr.data")

STANDARD_KS: dict[str, list[int]] = {
    "cub200": [1, 2, 4, 8],
    "cars196": [1, 2, 4, 8],
    "sop": [1, 10, 100, 1000],
    "inshop": [1, 10, 20, 30],
}
DEFAULT_KS = [1, 2, 4, 8]

# split -> (images, classes). In-shop's query and gallery share one label space of 3,985 items.
KNOWN_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "cub200": {"train": (5864, 100), "test": (5924, 100)},
    "cars196": {"train": (8054, 98), "test": (8131, 98)},
    "sop": {"train": (59551, 11318), "test": (60502, 11316)},
    "inshop": {"train": (25882, 3997), "query": (14218, 3985), "gallery": (12612, 3985)},
    "cifar10": {"train": (50000, 10), "test": (10000, 10)},
    "cifar100": {"train": (50000, 100), "test": (10000, 100)},
}

# Datasets scored by classification accuracy on their test split; every other one is retrieval.
CLASSIFICATION = {"cifar10", "cifar100"}

# The class-disjoint split of CUB and Cars: class ids 1..N train, the rest test (also used to rebuild
# it from hub copies, which carry the classification split instead).
TRAIN_CLASSES = {"cub200": 100, "cars196": 98}

# Where the archives come from; named in errors and in docs_data.md.
DOWNLOADS = {
    "cub200": "https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz)",
    "cars196": "the Stanford Cars page (cars_annos.mat + car_ims.tgz; mirrors exist since the original went offline)",
    "sop": "https://cvgl.stanford.edu/projects/lifted_struct/ (Stanford_Online_Products.zip)",
    "inshop": "the DeepFashion In-shop Clothes Retrieval Benchmark (Eval/list_eval_partition.txt + Img/img.zip)",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html (the binary version, cifar-10-binary.tar.gz)",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar.html (the binary version, cifar-100-binary.tar.gz)",
}


def recall_ks(name: str) -> list[int]:
    """The dataset's standard K set (CUB/Cars 1,2,4,8; SOP 1,10,100,1000; In-shop 1,10,20,30)."""
    return list(STANDARD_KS.get(name, DEFAULT_KS))


def task_of(name: str) -> str:
    """"classification" (accuracy of the training head) or "retrieval" (Recall@K of the embedding)."""
    return "classification" if name in CLASSIFICATION else "retrieval"


def split_counts(splits: dict[str, datasets.Dataset]) -> dict[str, tuple[int, int]]:
    """(images, classes) per split; classes is the size of the split's label space."""
    return {s: (len(ds), ds.features["label"].num_classes) for s, ds in splits.items()}


def check_counts(name: str, found: dict[str, tuple[int, int]], strict: bool, skipped: int = 0) -> None:
    """Compare split sizes with the benchmark's; a mismatch is an error unless `strict` is off."""
    expected = KNOWN_SIZES.get(name)
    if not expected:
        return
    wrong = [s for s in expected if found.get(s) != expected[s]]
    if not wrong:
        return
    detail = "; ".join(f"{s}: expected {_fmt(expected[s])}, found {_fmt(found.get(s))}" for s in wrong)
    why = f" ({skipped} unreadable images were skipped)" if skipped else " (a partial download or the wrong folder?)"
    message = f"{name}: split sizes differ from the benchmark's: {detail}{why}"
    if strict:
        raise AutolrError(message + "; set data.strict_counts = false to use these splits anyway")
    log.warning("%s; using them because data.strict_counts = false", message)


def _fmt(count: tuple[int, int] | None) -> str:
    return "no split" if count is None else f"{count[0]:,} images in {count[1]:,} classes"
