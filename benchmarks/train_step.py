"""Images/s of autolr's training step against a minimal hand-written PyTorch loop.

Same timm model, same synthetic batches, same SGD param groups, same precision; the loops are
interleaved in one process (plain, autolr, autolr without its progress bar, plain, ...) so that machine
noise hits all alike. Prints one JSON object with the ratio autolr / plain (goal: >= 0.97); the third
loop says how much of any gap is the rich progress bar (its refresh thread competes for the GIL and
the cores). Each number is the median over `--rounds` epochs.

    python benchmarks/train_step.py                       # resnet18 at 64 px on CPU
    python benchmarks/train_step.py --model resnet50 --size 224 --precision bf16 --channels-last  # on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from _common import stdout_to_stderr


class _Batches:
    """An in-memory stand-in for the loop's DataLoader: the same batches every epoch."""

    def __init__(self, batches):
        self.batches, self.batch_sampler = batches, None
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def build(args):
    import timm
    from accelerate import Accelerator

    from autolr.model import RetrievalNet, param_groups
    from autolr.recipe import parse_recipe
    from autolr.train.loop import Trainer, init_lrs

    recipe = parse_recipe({
        "model": {"name": args.model, "pretrained": False},
        "train": {"schedule": "constant", "precision": args.precision, "log_every": args.log_every},
    })
    torch.manual_seed(0)
    acc = Accelerator(mixed_precision=args.precision, cpu=args.device == "cpu")
    net = RetrievalNet(timm.create_model(args.model, pretrained=False, num_classes=0), args.classes)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(acc.device, memory_format=fmt)
    t = recipe.train
    opt = torch.optim.SGD(param_groups(net, args.model, t.lr, t.head_lr), lr=t.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(args.batch, 3, args.size, args.size, generator=g), torch.randint(0, args.classes, (args.batch,), generator=g))
        for _ in range(args.steps)
    ]
    net, opt = acc.prepare(net, opt)
    trainer = Trainer(recipe, acc, net, opt, _Batches(batches), {}, [1], rundir=None)
    init_lrs(trainer)
    return trainer, batches, fmt


def plain_epoch(trainer, batches, fmt) -> float:
    """The hand-written loop: forward, cross-entropy, backward, step. One host sync at the end."""
    net, opt, device = trainer.net, trainer.optimizer, trainer.accelerator.device
    net.train()
    start = time.perf_counter()
    total = torch.zeros((), device=device)
    for x, y in batches:
        x = x.to(device, non_blocking=True, memory_format=fmt)
        y = y.to(device, non_blocking=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        total += loss.detach()
    total.item()
    _sync(device)
    return len(batches) * len(batches[0][0]) / (time.perf_counter() - start)


def autolr_epoch(trainer) -> float:
    from autolr.train.loop import train_one_epoch

    start = time.perf_counter()
    stats = train_one_epoch(trainer, 0)
    _sync(trainer.accelerator.device)
    n = len(trainer.train_loader) * len(trainer.train_loader.batches[0][0])
    assert stats["loss"] == stats["loss"]  # a real loss came back
    return n / (time.perf_counter() - start)


def quiet_autolr_epoch(trainer) -> float:
    """`autolr_epoch` with the loop's progress bar replaced by a no-op."""
    from autolr.train import loop

    bar = loop.ProgressBar
    loop.ProgressBar = _NoBar
    try:
        return autolr_epoch(trainer)
    finally:
        loop.ProgressBar = bar


class _NoBar:
    def __init__(self, *args):
        pass

    def __enter__(self):
        return lambda step, text: None

    def __exit__(self, *exc):
        return False


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=8, help="batches per timed epoch")
    p.add_argument("--rounds", type=int, default=4, help="interleaved (plain, autolr, autolr without bar) triples")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    with stdout_to_stderr():
        trainer, batches, fmt = build(args)
        plain_epoch(trainer, batches[:2], fmt)  # warm-up both paths
        autolr_epoch(trainer)
        plain, ours, quiet = [], [], []
        for _ in range(args.rounds):
            plain.append(plain_epoch(trainer, batches, fmt))
            ours.append(autolr_epoch(trainer))
            quiet.append(quiet_autolr_epoch(trainer))
    result = {
        "benchmark": "train_step",
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "model": args.model, "size": args.size, "batch": args.batch, "precision": args.precision,
        "channels_last": args.channels_last,
        "plain_images_per_s": round(statistics.median(plain), 1),
        "autolr_images_per_s": round(statistics.median(ours), 1),
        "ratio": round(statistics.median(ours) / statistics.median(plain), 3),
        "autolr_without_progress_bar_images_per_s": round(statistics.median(quiet), 1),
        "ratio_without_progress_bar": round(statistics.median(quiet) / statistics.median(plain), 3),
        "goal_ratio": 0.97,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
