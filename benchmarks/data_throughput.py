"""Images per second through `make_loader`, raw archive vs prepared copy, at 0 and 2 workers.

Generates a CUB-like archive of photo-like 500x375 JPEGs (CUB's typical size) in a temporary folder,
reads it through the paper's training transform at 224 px, then prepares it (shorter side 256) and
reads it again. Prints one JSON object. Run: `python benchmarks/data_throughput.py [--images 600]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake-archive builders

from _fake_datasets import make_cub  # noqa: E402


def images_per_second(split, transform, workers: int, batch_size: int, epochs: int = 3) -> float:
    """The median over `epochs` training epochs; the first batch is not timed (worker start-up)."""
    import statistics

    from autolr.data.loader import make_loader

    loader = make_loader(split, transform, batch_size=batch_size, workers=workers, seed=0, train=True)
    rates = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        batches = iter(loader)
        next(batches)
        start, seen = time.perf_counter(), 0
        for images, _ in batches:
            seen += len(images)
        rates.append(seen / (time.perf_counter() - start))
    return round(statistics.median(rates), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600, help="images in the archive (half are training images)")
    parser.add_argument("--batch-size", type=int, default=30)
    args = parser.parse_args()

    import timm

    from autolr.data import load_data, protocol
    from autolr.data._build import quiet_progress
    from autolr.data.prepare import prepare_dataset
    from autolr.data.transforms import build_transforms
    from autolr.recipe import DataConfig

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fake = make_cub(Path(tmp), classes=10, per_class=max(1, args.images // 20), size=(500, 375))
        generate_s = time.perf_counter() - start
        protocol.KNOWN_SIZES["cub200"] = fake.sizes
        cfg = DataConfig(name="cub200", root=str(fake.folder), cache_dir=str(Path(tmp) / "cache"))
        train_tf, _, _ = build_transforms(cfg, timm.models.get_pretrained_cfg("resnet50").to_dict())
        result = {
            "images": sum(n for n, _ in fake.sizes.values()), "train_images": fake.sizes["train"][0],
            "image_size": [500, 375], "mean_jpeg_kb": round(sum(f.stat().st_size for f in fake.files) / len(fake.files) / 1024, 1),
            "transform": "paper train, 224 px", "batch_size": args.batch_size, "cpus": os.cpu_count(),
            "generate_s": round(generate_s, 1),
        }
        raw = load_data(cfg).train
        result["raw_images_per_s"] = {f"workers_{w}": images_per_second(raw, train_tf, w, args.batch_size) for w in (0, 2)}
        start = time.perf_counter()
        with quiet_progress():
            prepare_dataset(cfg, size=256, workers=2)
        result["prepare_s"] = round(time.perf_counter() - start, 1)
        prepared = load_data(cfg)
        assert prepared.source.endswith("cub200-256"), prepared.source
        result["prepared_images_per_s"] = {
            f"workers_{w}": images_per_second(prepared.train, train_tf, w, args.batch_size) for w in (0, 2)
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
