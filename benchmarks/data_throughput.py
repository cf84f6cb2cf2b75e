"""Images per second through `make_loader`, raw archive vs prepared copy, at 0 and 2 workers.

Generates a CUB-like archive of photo-like 500x375 JPEGs (CUB's typical size) in a temporary folder,
prepares it (shorter side 256), and reads both through the paper's training transform at 224 px.
Prints one JSON object. Run: `python benchmarks/data_throughput.py [--images 600] [--repeats 5]`.

Fair by construction: torch uses one thread in the main process, as it does in each DataLoader worker
(otherwise `workers=0` gets every core for its tensor ops and the comparison mixes thread counts); raw
and prepared epochs alternate (raw, prepared, raw, ...) so that load from other processes hits both
alike; each number is the median over `--repeats` epochs, the first batch of each not timed (worker
start-up and prefetch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake-archive builders

from _fake_datasets import make_cub  # noqa: E402


def epoch_rate(loader, epoch: int) -> float:
    """Images/s over one epoch, its first batch not timed."""
    loader.sampler.set_epoch(epoch)
    batches = iter(loader)
    next(batches)
    start, seen = time.perf_counter(), 0
    for images, _ in batches:
        seen += len(images)
    return seen / (time.perf_counter() - start)


def compare(splits: dict, transform, workers: int, batch_size: int, repeats: int) -> dict[str, float]:
    """Median images/s per split, the splits' epochs interleaved."""
    from autolr.data.loader import make_loader

    loaders = {
        name: make_loader(split, transform, batch_size=batch_size, workers=workers, seed=0, train=True)
        for name, split in splits.items()
    }
    rates = {name: [] for name in loaders}
    for epoch in range(repeats):
        for name, loader in loaders.items():
            rates[name].append(epoch_rate(loader, epoch))
    return {name: round(statistics.median(r), 1) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600, help="images in the archive (half are training images)")
    parser.add_argument("--batch-size", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5, help="epochs per measurement (the median is reported)")
    args = parser.parse_args()

    import timm
    import torch

    from autolr.data import load_data, protocol
    from autolr.data.build import quiet_progress
    from autolr.data.prepare import prepare_dataset
    from autolr.data.transforms import build_transforms
    from autolr.recipe import DataConfig

    torch.set_num_threads(1)  # what every DataLoader worker uses
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fake = make_cub(Path(tmp), classes=10, per_class=max(1, args.images // 20), size=(500, 375))
        generate_s = time.perf_counter() - start
        jpeg_kb = sum(f.stat().st_size for f in fake.files) / len(fake.files) / 1024
        protocol.KNOWN_SIZES["cub200"] = fake.sizes
        cfg = DataConfig(name="cub200", root=str(fake.folder), cache_dir=str(Path(tmp) / "cache"))
        train_tf, _, _ = build_transforms(cfg, timm.models.get_pretrained_cfg("resnet50").to_dict())
        raw = load_data(cfg).train
        start = time.perf_counter()
        with quiet_progress():
            prepare_dataset(cfg, size=256, workers=2)
        prepare_s = time.perf_counter() - start
        prepared = load_data(cfg)
        assert prepared.source.endswith("cub200-256"), prepared.source
        splits = {"raw": raw, "prepared": prepared.train}
        rates = {w: compare(splits, train_tf, w, args.batch_size, args.repeats) for w in (0, 2)}
    result = {
        "images": sum(n for n, _ in fake.sizes.values()), "train_images": fake.sizes["train"][0],
        "image_size": [500, 375], "prepared_size": 256,
        "mean_jpeg_kb": round(jpeg_kb, 1),
        "transform": "paper train, 224 px", "batch_size": args.batch_size, "repeats": args.repeats,
        "torch_threads": 1, "cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
        "generate_s": round(generate_s, 1), "prepare_s": round(prepare_s, 1),
        "raw_images_per_s": {f"workers_{w}": r["raw"] for w, r in rates.items()},
        "prepared_images_per_s": {f"workers_{w}": r["prepared"] for w, r in rates.items()},
        "speedup": {f"workers_{w}": round(r["prepared"] / r["raw"], 2) for w, r in rates.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
