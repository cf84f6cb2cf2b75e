"""Transforms (paper and timm presets, sized and normalised by the model) and class-balanced batches."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from PIL import Image

from autolr.data.transforms import build_transforms
from autolr.errors import AutolrError
from autolr.recipe import DataConfig


def pretrained(name: str) -> dict:
    import timm

    return timm.models.get_pretrained_cfg(name).to_dict()


def photo(width: int = 120, height: int = 90) -> Image.Image:
    x = torch.linspace(0, 255, width).repeat(height, 1)
    return Image.fromarray(torch.stack([x, x.flip(1), x * 0.5], -1).to(torch.uint8).numpy())


def steps(transform) -> list[str]:
    return [type(t).__name__ + getattr(t, "size", "").__repr__() for t in transform.transforms]


def test_paper_preset_follows_the_model():
    train, test, size = build_transforms(DataConfig(), pretrained("resnet50"))
    assert size == 224 and train(photo()).shape == test(photo()).shape == (3, 224, 224)
    assert steps(test)[:2] == ["Resize(256, 256)", "CenterCrop(224, 224)"]
    assert list(test.transforms[-1].mean) == [0.485, 0.456, 0.406]
    train, test, size = build_transforms(DataConfig(), pretrained("inception_v3"))
    assert size == 299 and steps(test)[:2] == ["Resize(342, 342)", "CenterCrop(299, 299)"]
    assert list(test.transforms[-1].mean) == list(train.transforms[-1].std) == [0.5, 0.5, 0.5]


def test_explicit_image_size_wins():
    train, test, size = build_transforms(DataConfig(image_size=64), pretrained("inception_v3"))
    assert size == 64 and train(photo()).shape == (3, 64, 64) and steps(test)[0] == "Resize(73, 73)"


@pytest.mark.parametrize("preset", ["paper", "timm"])
def test_augmentation_is_a_function_of_torch_rng(preset):
    train, test, _ = build_transforms(DataConfig(transform=preset, image_size=32), pretrained("resnet50"))
    random.seed(7)
    state = random.getstate()
    outputs = []
    for seed in (1, 1, 2, 3, 4):
        torch.manual_seed(seed)
        outputs.append(train(photo()))
    assert torch.equal(outputs[0], outputs[1])
    assert any(not torch.equal(outputs[0], o) for o in outputs[2:])
    assert random.getstate() == state  # python's RNG is neither used nor disturbed
    assert test(photo()).shape == (3, 32, 32)


# --- class-balanced batches -----------------------------------------------------------------------

LABELS = [c for c in range(10) for _ in range(c + 1)]  # class c has c + 1 images


def test_balanced_batches_have_p_classes_of_m_images():
    from autolr.data.sampler import ClassBalancedBatchSampler

    sampler = ClassBalancedBatchSampler(LABELS, m=2, batch_size=8, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(LABELS) // 8
    for batch in batches:
        assert {e for e, _ in batch} == {0}
        counts = Counter(LABELS[i] for _, i in batch)
        assert len(counts) == 4 and set(counts.values()) == {2}


def test_balanced_batches_depend_on_seed_and_epoch_only():
    from autolr.data.sampler import ClassBalancedBatchSampler

    a, b = (ClassBalancedBatchSampler(LABELS, 2, 8, seed=5) for _ in range(2))
    assert list(a) == list(b)
    a.set_epoch(1)
    assert [i for _, i in sum(list(a), [])] != [i for _, i in sum(list(b), [])]
    assert list(a)[0][0][0] == 1  # (epoch, index) pairs carry the epoch


def test_balanced_batches_are_sharded_by_rank():
    from autolr.data.sampler import ClassBalancedBatchSampler

    ranks = [ClassBalancedBatchSampler(LABELS, 2, 8, seed=0, rank=r, world=2) for r in (0, 1)]
    every = ranks[0].batches(0)
    assert len(every) == 6 and all(len(r) == 3 for r in ranks)
    assert [[i for _, i in b] for b in ranks[1]] == every[1::2]


def test_balanced_batch_errors():
    from autolr.data.sampler import ClassBalancedBatchSampler

    with pytest.raises(AutolrError, match="not a multiple of data.samples_per_class = 3"):
        ClassBalancedBatchSampler(LABELS, m=3, batch_size=8, seed=0)
    with pytest.raises(AutolrError, match="12 classes per batch, but the training split has 10"):
        ClassBalancedBatchSampler(LABELS, m=2, batch_size=24, seed=0)


# --- through the lead's loader --------------------------------------------------------------------


def test_fake_archive_through_the_loader(tmp_path, monkeypatch):
    from _fake_datasets import make_cub, write_cmyk
    from torch.utils.data import DataLoader

    from autolr.data import load_data, protocol
    from autolr.data.loader import TransformedSplit, make_loader
    from autolr.data.sampler import ClassBalancedBatchSampler

    fake = make_cub(tmp_path, classes=4, per_class=4, size=(40, 30))
    write_cmyk(fake.files[0], size=(40, 30))
    monkeypatch.setitem(protocol.KNOWN_SIZES, "cub200", fake.sizes)
    cfg = DataConfig(name="cub200", root=str(tmp_path), image_size=32, cache_dir=str(tmp_path / "cache"))
    data = load_data(cfg)
    train_tf, test_tf, _ = build_transforms(cfg, pretrained("resnet50"))
    images, labels = next(iter(make_loader(data.train, train_tf, batch_size=8, workers=0, seed=0, train=True)))
    assert images.shape == (8, 3, 32, 32) and labels.max() < 4
    sampler = ClassBalancedBatchSampler.for_split(data.train, m=4, batch_size=8, seed=0)
    loader = DataLoader(TransformedSplit(data.train, train_tf, 0), batch_sampler=sampler)
    _, labels = next(iter(loader))
    assert sorted(Counter(labels.tolist()).values()) == [4, 4]
