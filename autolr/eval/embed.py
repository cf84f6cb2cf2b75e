"""`autolr embed`: a saved model's retrieval embeddings, for a vector index or any other tool.

What is exported is what the run evaluated: the test transform, the horizontal flip summed in when the
run's `eval.flip` says so, then L2-normalised (so a dot product is the cosine similarity Recall@K
ranks by). One export is two files: `NAME.safetensors` (tensors `embeddings` [N, d] float32 and
`labels` [N] int64, -1 for an unlabelled image) and `NAME.json` beside it (the model, the dataset, the
row range of each split, class names, and each row's image file, or its row index where the images
live inside a dataset: a hub or prepared copy, digits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from autolr.errors import AutolrError

if TYPE_CHECKING:
    import datasets

FORMAT = "autolr-embeddings/1"


@dataclass
class Embeddings:
    """Rows of every embedded split, in order; `parts` names each split's [start, stop) rows."""

    embeddings: torch.Tensor  # [N, d] float32, L2-normalised
    labels: torch.Tensor  # [N] int64, -1 where an image has no label
    items: list[str | int]  # per row: the image file, or its row index in the split
    parts: dict[str, list[int]]
    meta: dict[str, Any] = field(default_factory=dict)

    def part(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings, labels) of one split."""
        if name not in self.parts:
            raise AutolrError(f"split {name!r} is not in these embeddings; they hold {', '.join(self.parts)}")
        start, stop = self.parts[name]
        return self.embeddings[start:stop], self.labels[start:stop]


def embed_splits(net, splits: dict[str, datasets.Dataset], test_tf, *, device: torch.device, flip: bool,
                 batch_size: int, workers: int = 0, seed: int = 0, progress: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each split's un-normalised embeddings and labels (what `recall_and_map` scores), on `device`."""
    from autolr.data.loader import make_loader
    from autolr.eval.saved import embed

    net = net.to(device).eval()
    out = {}
    for name, split in splits.items():
        loader = make_loader(split, test_tf, batch_size=batch_size, workers=workers, seed=seed, train=False,
                             pin_memory=device.type == "cuda")
        out[name] = embed(net, loader, device, flip, title=f"embed {name} ({len(split)} images)" if progress else "")
    return out


def image_files(paths: list[str | Path]) -> list[Path]:
    """Image files given one by one or as folders (searched recursively, sorted)."""
    from autolr.data.imagefolder import IMAGE_SUFFIXES

    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise AutolrError(f"{p}: a folder with no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in it")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise AutolrError(f"{p}: no such image file or folder")
    return files


def embed_saved(
    path: str | Path, images: list[str | Path] | None = None, *, data: str | None = None, root: str | None = None,
    hub_id: str | None = None, split: str = "test", flip: bool | None = None, batch_size: int | None = None,
    device: str | None = None,
) -> Embeddings:
    """A saved model's normalised embeddings of image files, or of a dataset's split (default: the
    run's own dataset, its evaluation split(s): In-shop's query then gallery)."""
    from autolr.data import load_data
    from autolr.data.transforms import test_resize
    from autolr.eval.saved import eval_data_recipe, eval_transform, load_saved, pick_device

    if images and (data or root or hub_id):
        raise AutolrError("give either image files/folders or --data/--root/--hub-id, not both")
    dev = pick_device(device)
    files = image_files(images) if images else None  # a bad path fails before the model loads
    saved = load_saved(path)
    recipe = eval_data_recipe(saved.recipe, data, root, hub_id)
    test_tf, size = eval_transform(saved.net, recipe)
    flip = saved.recipe.eval.flip if flip is None else flip
    if files is not None:
        splits, items, names, source = {"images": _file_split(files)}, {"images": [str(f) for f in files]}, [], "files"
    else:
        bundle = load_data(recipe.data, seed=recipe.train.seed, min_side=test_resize(size))
        splits = _pick_splits(bundle, split)
        items = {n: split_items(s) for n, s in splits.items()}
        names, source = _class_names(next(iter(splits.values()))), bundle.source or "built in"
    out = embed_splits(saved.net, splits, test_tf, device=dev, flip=flip,
                       batch_size=batch_size or saved.recipe.eval.batch_size, workers=recipe.data.workers,
                       seed=recipe.train.seed, progress=True)
    meta = {"model": saved.model_name, "run": str(saved.run_dir or Path(path)), "dataset": recipe.data.name if files is None else None,
            "source": source, "flip": flip, "image_size": size, "class_names": names}
    return _assemble(out, items, files is not None, meta)


def _assemble(out, items, unlabelled: bool, meta: dict[str, Any]) -> Embeddings:
    import torch.nn.functional as F

    parts, start = {}, 0
    for name, (f, _) in out.items():
        parts[name] = [start, start + len(f)]
        start += len(f)
    emb = F.normalize(torch.cat([f for f, _ in out.values()]).cpu(), dim=1)
    labels = torch.cat([y for _, y in out.values()]).cpu().long()
    if unlabelled:
        labels = torch.full_like(labels, -1)
    return Embeddings(emb, labels, [i for name in out for i in items[name]], parts,
                      {**meta, "dim": emb.shape[1], "normalized": True})


def _pick_splits(bundle, split: str) -> dict[str, datasets.Dataset]:
    """`test`: the evaluation split(s) (In-shop's query and gallery); else the named split."""
    if split == "test":
        return bundle.eval_splits()
    present = bundle.splits()
    if split not in present:
        names = ["test", *(s for s in present if s != "test")]
        raise AutolrError(f"--split {split!r}: {bundle.name} has the splits {', '.join(names)}; give one of them")
    return {split: present[split]}


def _file_split(files: list[Path]) -> datasets.Dataset:
    """Image files as a split that decodes to RGB on access (as every dataset's), labelled 0."""
    import datasets

    features = datasets.Features({"image": datasets.Image(mode="RGB"), "label": datasets.ClassLabel(names=["unlabelled"])})
    return datasets.Dataset.from_dict({"image": [str(f) for f in files], "label": [0] * len(files)}, features=features)


def split_items(split: datasets.Dataset) -> list[str | int]:
    """Each row's image file where the split reads files, else its row index (images stored inside)."""
    import pyarrow.compute as pc

    items: list[str | int] = []
    for batch in split.select_columns(["image"]).with_format("arrow").iter(batch_size=4096):  # bytes stay in arrow
        cells = batch.column("image")
        paths = pc.struct_field(cells, "path").to_pylist()
        stored = pc.is_valid(pc.struct_field(cells, "bytes")).to_pylist()
        items += [i if inside or not p else p for i, (p, inside) in enumerate(zip(paths, stored, strict=True), start=len(items))]
    return items


def _class_names(split: datasets.Dataset) -> list[str]:
    return list(getattr(split.features["label"], "names", None) or [])


def sidecar(path: str | Path) -> Path:
    """The JSON file beside an export: `e.safetensors` -> `e.json`."""
    return Path(path).with_suffix(".json")


def write_embeddings(emb: Embeddings, output: str | Path) -> list[Path]:
    """`output` (.safetensors) and its JSON side file, each written atomically; returns both."""
    from safetensors.torch import save_file

    from autolr.fileio import atomic_write, write_json

    output = Path(output)
    if output.suffix != ".safetensors":
        raise AutolrError(f"--output {output}: name a .safetensors file (the JSON side file goes beside it)")
    tensors = {"embeddings": emb.embeddings.contiguous(), "labels": emb.labels.contiguous()}
    atomic_write(output, lambda p: save_file(tensors, str(p), metadata={"format": FORMAT}))
    write_json(sidecar(output), {"format": FORMAT, **emb.meta, "rows": len(emb.labels), "parts": emb.parts,
                                 "items": emb.items})
    return [output, sidecar(output)]


def read_embeddings(path: str | Path) -> Embeddings:
    """An export written by `write_embeddings` (or `autolr embed`)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file() or not sidecar(path).is_file():
        raise AutolrError(f"{path}: needs the .safetensors file and its .json side file, as `autolr embed` writes them")
    tensors, meta = load_file(str(path)), json.loads(sidecar(path).read_text())
    items, parts = meta.pop("items"), meta.pop("parts")
    return Embeddings(tensors["embeddings"], tensors["labels"], items, parts, meta)


def score_embeddings(emb: Embeddings, recall_at: list[int]) -> dict[str, float]:
    """Recall@K and MAP@R of an export, as the run scores them: query vs gallery, else all-vs-all."""
    from autolr.eval.metrics import recall_and_map

    if -1 in emb.labels:
        raise AutolrError("these embeddings are of unlabelled image files: Recall@K needs a labelled dataset")
    if "query" in emb.parts and "gallery" in emb.parts:
        (q, ql), (g, gl) = emb.part("query"), emb.part("gallery")
    else:
        (q, ql), g, gl = emb.part(next(iter(emb.parts))), None, None
    recalls, mapr = recall_and_map(q, ql, recall_at, g, gl)
    return {**{f"recall@{k}": round(v, 6) for k, v in recalls.items()}, "map@r": round(mapr, 6)}
