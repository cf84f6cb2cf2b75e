"""Grad-CAM per block (the paper's Fig. 5 and 6): where the output of each block looks, after fine-tuning.

Grad-CAM (Selvaraju et al. 2017) at a block's output A (C x h x w): channel weights w_c = the mean over
h, w of d score / d A_c; map = ReLU(sum_c w_c A_c), upsampled to the input size and scaled to [0, 1] per
image. One forward and one backward pass give the maps of every chosen block.

Targets: "class" (default), the fine-tuned head's top logit, over the training classes; "embedding",
the embedding's L2 norm, whose gradient is that of the similarity to a fixed copy of the image's own
normalised embedding (what retrieval compares): it needs no head, so it also shows what the retrieval
features rely on for images of unseen classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from autolr.errors import AutolrError

TARGETS = ("class", "embedding")


def default_blocks(num_blocks: int, n: int = 4) -> list[int]:
    """`n` blocks spread evenly up to the last, 1-based: of 16 blocks 4, 8, 12, 16."""
    n = min(n, num_blocks)
    return [math.ceil(num_blocks * i / n) for i in range(1, n + 1)]


def check_blocks(blocks: list[int], num_blocks: int) -> list[int]:
    bad = [b for b in blocks if not 1 <= b <= num_blocks]
    if bad:
        raise AutolrError(f"--blocks {','.join(map(str, bad))}: the model has {num_blocks} kept blocks;"
                          f" give numbers from 1 to {num_blocks}")
    return blocks


def block_modules(backbone, model_name: str) -> list[torch.nn.Module]:
    """The module whose output is each kept block's output (the block's last member), low to high."""
    from autolr.model import block_outputs

    return [backbone.get_submodule(name) for name in block_outputs(backbone, model_name)]


@dataclass
class Cams:
    maps: list[torch.Tensor]  # per module: [B, H, W] in [0, 1], at the input's size
    grids: list[tuple[int, int]]  # per module: the (h, w) of the block's output that each map comes from
    top: torch.Tensor | None  # per image: the top training class (target "class")


def grad_cam(net, x: torch.Tensor, modules: list[torch.nn.Module], target: str = "class") -> Cams:
    """Grad-CAM of every module in one forward and one backward pass, for a batch of images."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    acts: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: acts.__setitem__(i, out)) for i, m in enumerate(modules)]
    try:
        with torch.enable_grad():
            f = net.embed(x)
            top = None
            if target == "class":
                logits = net.head(f)
                top = logits.argmax(1)
                score = logits.gather(1, top[:, None]).sum()  # images are independent in eval mode
            else:
                score = (f * F.normalize(f, dim=1).detach()).sum()
            outs = [acts[i] for i in range(len(modules))]
            grads = torch.autograd.grad(score, outs)
    finally:
        for h in hooks:
            h.remove()
    outs, grads = [_nchw(a.detach(), net.backbone) for a in outs], [_nchw(g, net.backbone) for g in grads]
    maps = [_cam(a, g, x.shape[-2:]) for a, g in zip(outs, grads, strict=True)]
    return Cams(maps, [tuple(a.shape[-2:]) for a in outs], top)


def _cam(a: torch.Tensor, g: torch.Tensor, size) -> torch.Tensor:
    cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = F.interpolate(cam.float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return cam / cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]  # an all-zero map stays zero


def _nchw(t: torch.Tensor, backbone) -> torch.Tensor:
    """A block's output as [B, C, h, w]: NCHW as is, NHWC (Swin) permuted, ViT tokens on their grid."""
    if t.dim() == 4:
        return t.permute(0, 3, 1, 2) if getattr(backbone, "output_fmt", "NCHW") == "NHWC" else t
    if t.dim() == 3:
        tokens = t[:, getattr(backbone, "num_prefix_tokens", 0):]
        side = math.isqrt(tokens.shape[1])
        if side * side == tokens.shape[1]:
            return tokens.transpose(1, 2).reshape(t.shape[0], -1, side, side)
    raise AutolrError(f"a block output of shape {tuple(t.shape)} has no spatial grid, so Grad-CAM cannot map it")


def read_image(path: str | Path):
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")  # as training reads them: grey, CMYK and palette become RGB
    except (OSError, ValueError, SyntaxError) as e:
        raise AutolrError(f"cannot read image {path} ({type(e).__name__}: {e}): give image files (JPEG, PNG, ...)") from None


def cam_images(
    path: str | Path, images: list[str | Path], *, blocks: list[int] | None = None, target: str = "class",
    output: str | Path | None = None, device: str | None = None, batch_size: int = 16,
) -> list[Path]:
    """Grad-CAM of a saved model over image files: one PNG per image (input, then one overlay per block)
    in `output` (default RUN_DIR/cam). Returns the files written."""
    from autolr.eval.saved import eval_transform, load_saved, pick_device

    if target not in TARGETS:
        raise AutolrError(f"--target {target!r}: choose one of {', '.join(TARGETS)}")
    dev = pick_device(device)
    pictures = [read_image(p) for p in images]  # a bad file fails before the model loads
    saved = load_saved(path)
    if target == "class" and getattr(saved.net, "head", None) is None:
        raise AutolrError(f"--target class needs the training head's logits, and {path} was trained with a"
                          " metric-learning loss (no classification head): use --target embedding")
    modules = block_modules(saved.net.backbone, saved.model_name)
    blocks = check_blocks(blocks, len(modules)) if blocks else default_blocks(len(modules))
    test_tf, _ = eval_transform(saved.net, saved.recipe)
    net = saved.net.to(dev).eval()
    out_dir = Path(output) if output else (saved.run_dir or Path(path).parent) / "cam"
    names = _file_names(images)
    written = []
    for start in range(0, len(pictures), batch_size):
        x = torch.stack([test_tf(p) for p in pictures[start : start + batch_size]]).to(dev)
        cams = grad_cam(net, x, [modules[b - 1] for b in blocks], target)
        shown = _denormalise(x, net.backbone.pretrained_cfg)
        labels = [f"block {b} ({h}x{w})" for b, (h, w) in zip(blocks, cams.grids, strict=True)]
        for i in range(len(x)):
            j = start + i
            about = f"training class {int(cams.top[i])}" if cams.top is not None else "embedding norm"
            write_png(out_dir / names[j], shown[i], [m[i] for m in cams.maps], labels, f"{Path(images[j]).name}: {about}")
            written.append(out_dir / names[j])
    return written


def _file_names(images: list[str | Path]) -> list[str]:
    """`<stem>.png`, numbered when two images share a stem."""
    names, seen = [], {}
    for p in images:
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}.png" if seen[stem] == 1 else f"{stem}-{seen[stem]}.png")
    return names


def _denormalise(x: torch.Tensor, pretrained_cfg: dict) -> torch.Tensor:
    """The transformed images as [B, H, W, 3] in [0, 1], for display under the maps."""
    from autolr.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(pretrained_cfg.get("mean", IMAGENET_MEAN), device=x.device)[:, None, None]
    std = torch.tensor(pretrained_cfg.get("std", IMAGENET_STD), device=x.device)[:, None, None]
    return (x * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu()


def write_png(path: Path, image: torch.Tensor, maps: list[torch.Tensor], labels: list[str], title: str) -> None:
    """One row: the input, then each block's map over it (jet, half transparent); written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from autolr.fileio import atomic_write

    fig = Figure(figsize=(2.2 * (len(maps) + 1), 2.6))  # no pyplot: leaves a user's backend alone
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(maps) + 1)
    axes[0].imshow(image.numpy(), interpolation="nearest")
    axes[0].set_title("input", fontsize=9)
    for ax, m, label in zip(axes[1:], maps, labels, strict=True):
        ax.imshow(image.numpy(), interpolation="nearest")
        ax.imshow(m.detach().cpu().numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
        ax.set_title(label, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100, bbox_inches="tight"))
