"""Walks through a generator's inputs: `ganctl sample interpolate=z|label`.

    interpolate=z       rows of random latent pairs z0 -> z1 (label fixed for conditional models)
    interpolate=label   rows of fixed z, the label embedding mixed from label[0] to label[1]

Writes a PNG (one row per path, `steps` columns) and a GIF of the same name that walks the
paths back and forth, all rows at once.
"""
import math
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from ganctl.errors import UserError
from ganctl.training.step import sample_noise


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of rows: stays near the shell where Gaussian latents live
    (White 2016); falls back to lerp for (nearly) parallel vectors."""
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)[..., None]
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    safe = so.abs() > 1e-6
    out = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.where(safe, so, 1.0)
    return torch.where(safe, out, lerp(a, b, t))


def paths(G, mode: str, rows: int, steps: int, labels: list[int] | None, num_classes: int, z_dim: int,
          noise: str, seed: int, spherical: bool, device) -> torch.Tensor:
    """Images (rows, steps, C, H, W) in [-1, 1]."""
    if steps < 2:
        raise UserError(f"steps={steps}: an interpolation needs at least 2 steps")
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, steps)[None, :, None]  # (1, steps, 1)
    if mode == "z":
        z0, z1 = sample_noise(rows, z_dim, noise, "cpu", g), sample_noise(rows, z_dim, noise, "cpu", g)
        z = (slerp if spherical else lerp)(z0[:, None], z1[:, None], t)  # (rows, steps, z_dim)
        if num_classes:  # a fixed label along each row: the given one(s), else class = row
            pool = labels if labels else list(range(num_classes))
            y = torch.tensor([pool[r % len(pool)] for r in range(rows)]).repeat_interleave(steps)
        else:
            y = None
    elif mode == "label":
        if not num_classes:
            raise UserError("interpolate=label needs a conditional model; this one is unconditional")
        if not labels or len(labels) != 2:
            raise UserError("interpolate=label walks between two labels: give label=[a,b]")
        z = sample_noise(rows, z_dim, noise, "cpu", g)[:, None].expand(rows, steps, z_dim)
        a, b = torch.eye(num_classes)[labels[0]], torch.eye(num_classes)[labels[1]]
        y = lerp(a, b, t.squeeze(-1)[..., None]).expand(rows, steps, num_classes).reshape(-1, num_classes)
    else:
        raise UserError(f"interpolate={mode}: choose z or label")
    with torch.no_grad():
        x = G(z.reshape(-1, z_dim).to(device), None if y is None else y.to(device)).float().cpu()
    return x.view(rows, steps, *x.shape[1:])


def write(images: torch.Tensor, out: Path) -> tuple[Path, Path]:
    """`out` as a PNG strip (a row per path) and out.with_suffix('.gif') (ping-pong over steps)."""
    from PIL import Image

    rows, steps = images.shape[:2]
    x = (images.clamp(-1, 1) + 1) / 2
    png, gif = out.with_suffix(".png"), out.with_suffix(".gif")
    png.parent.mkdir(parents=True, exist_ok=True)
    save_image(x.flatten(0, 1), png, nrow=steps, padding=2)
    nrow = math.ceil(math.sqrt(rows))
    frames = []
    for s in list(range(steps)) + list(range(steps - 2, 0, -1)):
        grid = make_grid(x[:, s], nrow=nrow, padding=2).mul(255).round().byte()
        frames.append(Image.fromarray(grid.permute(1, 2, 0).numpy()))
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=120, loop=0)
    return png, gif
