"""DeepFashion In-shop Clothes Retrieval from the official files: list_eval_partition.txt (a count
line, a header line "image_name item_id evaluation_status", then one image per line) and img/.

Train items are disjoint from the query/gallery items; query and gallery share one label space so that
a query's label matches its item's gallery images.
"""

from __future__ import annotations

import logging
from pathlib import Path

from autolr.data.build import Listing
from autolr.data.files import find_folder, marker_file, read_rows
from autolr.errors import AutolrError

log = logging.getLogger("autolr.data")
MARKERS = ("list_eval_partition.txt", "Eval/list_eval_partition.txt")
LAYOUT = "the In-shop folder with list_eval_partition.txt (or Eval/list_eval_partition.txt) and img/ (or Img/img/)"
SPLITS = ("train", "query", "gallery")


def list_inshop(root: str) -> Listing:
    """Paths and item ids per evaluation status."""
    folder = find_folder(root, MARKERS, LAYOUT)
    partition = marker_file(folder, MARKERS)
    rows = read_rows(partition, 3, skip=2)
    _check_count_line(partition, len(rows))
    base = _image_base(partition, folder)
    splits: dict = {s: [] for s in SPLITS}
    for path, item, status in rows:
        if status not in splits:
            raise AutolrError(f"{partition}: unknown evaluation_status {status!r} (expected train, query or gallery)")
        splits[status].append((str(base / path), item))
    return Listing("inshop", folder, splits, shared=("query", "gallery"))


def _check_count_line(partition: Path, found: int) -> None:
    first = partition.read_text(encoding="utf-8").split("\n", 1)[0].strip()
    if first.isdigit() and int(first) != found:
        log.warning("%s: its first line says %s images, but it lists %d", partition, first, found)


def _image_base(partition: Path, folder: Path) -> Path:
    """The folder holding img/: next to the list, one level up (Eval/), or in Img/ (the Drive layout)."""
    for base in (partition.parent, folder, folder / "Img", partition.parent.parent / "Img"):
        if (base / "img").is_dir():
            return base
    raise AutolrError(f"no img/ folder next to {partition} or in Img/: extract img.zip there")
