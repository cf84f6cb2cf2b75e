"""Finding a dataset's folder on disk and finding its unreadable images, cheaply, before training.

The up-front check runs on every raw load, so it must cost about a `stat` per file: it catches missing
and empty files, and truncated JPEG/PNG files by their missing end marker (only those suspects are then
decoded, so a valid file with trailing bytes is not rejected). `autolr data prepare` decodes every file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from autolr.errors import AutolrError

# A JPEG ends with the EOI marker, a PNG with its IEND chunk; some cameras append a few bytes after them.
_END_MARKERS = {".jpg": b"\xff\xd9", ".jpeg": b"\xff\xd9", ".png": b"IEND"}
_TAIL_BYTES = 64


def find_folder(root: str, markers: Sequence[str], what: str) -> Path:
    """The folder that holds `markers[i]`: `root` itself or a folder directly inside it.

    Users point data.root at the extracted folder or at the folder they extracted the archive into.
    """
    if not root:
        raise AutolrError(f"data.root is empty: set it to the folder that holds {what}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise AutolrError(f"data.root = {root!r} is not a folder: set it to the folder that holds {what}")
    children = sorted(p for p in base.iterdir() if p.is_dir())
    for folder in [base, *children]:
        if any((folder / m).is_file() for m in markers):
            return folder.resolve()
    raise AutolrError(f"data.root = {root!r}: no {' or '.join(markers)} in it or in a folder inside it; expected {what}")


def marker_file(folder: Path, markers: Sequence[str]) -> Path:
    """The first of `markers` that exists in `folder` (found by `find_folder`)."""
    return next(folder / m for m in markers if (folder / m).is_file())


def find_bad_files(paths: Sequence[str], threads: int = 4) -> dict[str, str]:
    """{path: reason} for missing, empty, truncated or undecodable images."""
    # Threads in chunks: a cold or network disk waits on I/O in parallel, a warm one pays ~20 us a file.
    chunks = [paths[i : i + 2048] for i in range(0, len(paths), 2048)]
    with ThreadPoolExecutor(threads) as pool:
        reasons = [r for chunk in pool.map(_check_chunk, chunks) for r in chunk]
    bad = {p: r for p, r in zip(paths, reasons, strict=True) if r}
    suspects = [p for p, r in bad.items() if r == "suspect"]
    for p, r in zip(suspects, map(decode_error, suspects), strict=True):
        if r:
            bad[p] = r
        else:
            del bad[p]
    return bad


def _check_chunk(paths: Sequence[str]) -> list[str]:
    return [_quick_check(p) for p in paths]


def _quick_check(path: str) -> str:
    try:
        size = os.stat(path).st_size
    except OSError:
        return "missing"
    if size == 0:
        return "empty"
    marker = _END_MARKERS.get(os.path.splitext(path)[1].lower())
    if marker is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, size - _TAIL_BYTES))
            return "" if marker in f.read() else "suspect"
    except OSError as e:
        return f"unreadable ({e.strerror})"


def decode_error(source: str | bytes) -> str:
    """'' if the image (a path or the file's bytes) decodes fully, else why not."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            im.load()
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError) for broken files
        return f"cannot decode ({e})"
    return ""


def describe_bad(bad: dict[str, str], limit: int = 10) -> str:
    """'path (reason), ...' for the first `limit` files, then how many more."""
    items = [f"{p} ({r})" for p, r in list(bad.items())[:limit]]
    more = len(bad) - limit
    return ", ".join(items) + (f" and {more} more" if more > 0 else "")


def absolute(folder: Path, relative: Iterable[str]) -> list[str]:
    """Absolute paths as strings: the `datasets` Image feature only opens absolute local paths."""
    return [str(folder / r) for r in relative]


def read_rows(path: Path, fields: int, skip: int = 0, ints: tuple[int, ...] = ()) -> list[list]:
    """The whitespace-separated rows of an archive's list file, `skip` header lines left out;
    the columns in `ints` are converted to int."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise AutolrError(f"cannot read {path} ({e.strerror}): is the archive fully extracted?") from None
    rows = []
    for number, line in enumerate(lines[skip:], start=skip + 1):
        if not line.strip():
            continue
        row = line.split(maxsplit=fields - 1)
        try:
            if len(row) != fields:
                raise ValueError
            rows.append([int(v) if i in ints else v for i, v in enumerate(row)])
        except ValueError:
            raise AutolrError(f"{path}:{number}: unexpected line {line!r}: is this the official file?") from None
    return rows
