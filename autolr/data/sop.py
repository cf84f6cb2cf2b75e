"""Stanford Online Products from the official archive: `Stanford_Online_Products/` with Ebay_train.txt,
Ebay_test.txt (header "image_id class_id super_class_id path") and the <category>_final/ folders.
The two lists are already class-disjoint (11,318 and 11,316 products)."""

from __future__ import annotations

from pathlib import Path

from autolr.data.build import Listing
from autolr.data.files import find_folder, read_rows

LAYOUT = "Stanford_Online_Products/ with Ebay_train.txt, Ebay_test.txt and the <category>_final/ folders"


def list_sop(root: str) -> Listing:
    """Paths and product (class) ids of both lists."""
    folder = find_folder(root, ["Ebay_train.txt"], LAYOUT)
    splits = {split: _read(folder, f"Ebay_{split}.txt") for split in ("train", "test")}
    return Listing("sop", folder, splits)


def _read(folder: Path, name: str) -> list[tuple[str, int]]:
    rows = read_rows(folder / name, 4, skip=1, ints=(1,))  # image_id class_id super_class_id path
    return [(str(folder / path), class_id) for _, class_id, _, path in rows]
