"""Image transforms: the paper's preset or timm's, sized and normalised from the model's pretrained config.

All randomness must come from torch's global RNG: the loader seeds it from (seed, epoch, sample index)
around each call, so every AutoLR trial of an epoch sees the same augmentation. timm's training
transforms draw from python's `random` (and RandAugment from numpy), so they are wrapped to seed those
from torch's RNG for the duration of the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autolr.recipe import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transforms(cfg: DataConfig, pretrained_cfg: dict[str, Any]) -> tuple[Callable, Callable, int]:
    """(train transform, test transform, image size) for data.transform = "paper" or "timm"."""
    size = resolve_image_size(cfg.image_size, pretrained_cfg)
    if cfg.transform == "timm":
        return (*timm_transforms(size, pretrained_cfg), size)
    return (*paper_transforms(size, pretrained_cfg), size)


def resolve_image_size(image_size: int | str, pretrained_cfg: dict[str, Any]) -> int:
    """`"auto"`: the model's pretrained input size (224 for ResNet-50, 299 for Inception-V3)."""
    if image_size == "auto":
        return int(pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    return int(image_size)


def test_resize(size: int) -> int:
    """The paper's test resize for a crop of `size`: 256 for 224, 342 for 299 (the 256/224 ratio)."""
    return round(size * 256 / 224)


def paper_transforms(size: int, pretrained_cfg: dict[str, Any]) -> tuple[Callable, Callable]:
    """Train: Resize((s, s)) bicubic + horizontal flip. Test: Resize((r, r)) + CenterCrop(s), r = s*256/224."""
    from torchvision import transforms as T

    mean = pretrained_cfg.get("mean", IMAGENET_MEAN)
    std = pretrained_cfg.get("std", IMAGENET_STD)
    bicubic = T.InterpolationMode.BICUBIC
    normalize = [T.ToTensor(), T.Normalize(mean, std)]
    train = T.Compose([T.Resize((size, size), interpolation=bicubic), T.RandomHorizontalFlip(), *normalize])
    r = test_resize(size)
    test = T.Compose([T.Resize((r, r), interpolation=bicubic), T.CenterCrop(size), *normalize])
    return train, test


def timm_transforms(size: int, pretrained_cfg: dict[str, Any]) -> tuple[Callable, Callable]:
    """timm's standard train/eval pipelines (`resolve_data_config` + `create_transform`) at `size`."""
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({"input_size": (3, size, size)}, pretrained_cfg=pretrained_cfg)
    train = create_transform(**config, is_training=True)
    return TorchSeeded(train), create_transform(**config, is_training=False)


class TorchSeeded:
    """Runs a transform with python's and numpy's RNGs seeded from torch's, then restores them.

    The result is then a function of torch's RNG state alone, like torchvision's own transforms.
    """

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, image):
        import random

        import numpy as np
        import torch

        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            return self.transform(image)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)

    def __repr__(self) -> str:
        return f"TorchSeeded({self.transform!r})"
