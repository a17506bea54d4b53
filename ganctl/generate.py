"""Images from a generator, in chunks, as `ganctl sample` writes them and `ganctl eval` scores them."""
import math

import torch
from tqdm import tqdm

from ganctl.data import to_uint8
from ganctl.errors import Aborted
from ganctl.step import sample_noise

CHUNK = 1024  # images per forward pass


def generate(G, n: int, labels: list[int] | None, z_dim: int, noise: str, seed: int, device,
             abort=lambda: False):
    """n images as uint8 (n, C, H, W), quantised as they are written, and their labels. With labels,
    each label gets ceil(n / len(labels)) images, label-major, with the same z for every label.
    A progress bar for large n; `abort()` is asked between chunks (a signal during an eval)."""
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        z, y = sample_noise(n, z_dim, noise, "cpu", g), None
    else:
        per = math.ceil(n / len(labels))
        z = sample_noise(per, z_dim, noise, "cpu", g).repeat(len(labels), 1)[:n]
        y = torch.tensor(labels).repeat_interleave(per)[:n].to(device)
    images = []
    with torch.no_grad():
        for i in tqdm(range(0, n, CHUNK), desc="generate", unit="chunk", disable=n < 20 * CHUNK, leave=False):
            if abort():
                raise Aborted
            images.append(to_uint8(G(z[i:i + CHUNK].to(device), None if y is None else y[i:i + CHUNK]).float()).cpu())
    return torch.cat(images), (y.cpu() if y is not None else torch.full((n,), -1))
