"""Images from a generator, in chunks, as `ganctl sample` writes them and `ganctl eval` scores them."""
import math

import torch
from tqdm import tqdm

from ganctl.data import to_uint8
from ganctl.errors import Aborted
from ganctl.training.step import sample_noise

CHUNK = 1024  # images per forward pass


def latents(n: int, z_dim: int, noise: str, seed: int) -> torch.Tensor:
    """The latents (n, z_dim) of images 0..n-1 of a seeded grid: image i gets the same z whatever n
    is. (torch draws normal values on the CPU in blocks of 16, and a last, partial block differs
    from the same values of a longer draw; so the draw is padded to whole blocks.)"""
    g = torch.Generator().manual_seed(seed)
    total = n * z_dim
    return sample_noise(1, -(-total // 16) * 16, noise, "cpu", g)[0, :total].view(n, z_dim)


def generate(G, n: int, labels: list[int] | None, z_dim: int, noise: str, seed: int, device,
             abort=lambda: False):
    """n images as uint8 (n, C, H, W), quantised as they are written, and their labels. With labels,
    each label gets ceil(n / len(labels)) images, label-major, with the same z for every label.
    A progress bar for large n; `abort()` is asked between chunks (a signal during an eval)."""
    if labels is None:
        z, y = latents(n, z_dim, noise, seed), None
    else:
        per = math.ceil(n / len(labels))
        z = latents(per, z_dim, noise, seed).repeat(len(labels), 1)[:n]
        y = torch.tensor(labels).repeat_interleave(per)[:n].to(device)
    images = []
    with torch.no_grad():
        for i in tqdm(range(0, n, CHUNK), desc="generate", unit="chunk", disable=n < 20 * CHUNK, leave=False):
            if abort():
                raise Aborted
            images.append(to_uint8(G(z[i:i + CHUNK].to(device), None if y is None else y[i:i + CHUNK]).float()).cpu())
    return torch.cat(images), (y.cpu() if y is not None else torch.full((n,), -1))
