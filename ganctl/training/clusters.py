"""Self-conditioning: k-means clusters of the training images stand in for labels that an
unconditional model does not have (Liu et al. 2020, "Diverse Image Generation via
Self-Conditioned GANs"). G and D are conditioned on the cluster as a conditional model is on
the class; G draws a cluster as often as the data holds it (ganctl.nets.dcgan.Generator.cluster).

    ids = kmeans(images, k=30, seed=0)         # uint8 (N, C, H, W) -> cluster of each image (N,)
    data, sizes = clustered(data, k=30, seed=0)

What it is worth (dcgan on MNIST, FID 3.7 against 20-22 at 936 steps): docs/results.md, "The
unconditional DCGAN against the conditional one".
"""
import logging
import time

import torch
import torch.nn.functional as F

from ganctl.data import InMemoryImages
from ganctl.errors import UserError

log = logging.getLogger(__name__)

MAX_SIDE = 32   # images are area-pooled to at most this side before clustering (memory: N x C x 32^2 floats)
CHUNK = 8192    # images per distance computation


def features(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, C * h * w) in [0, 1], h = w = min(H, MAX_SIDE)."""
    out = []
    for part in images.split(CHUNK):
        x = part.float() / 255
        if x.shape[-1] > MAX_SIDE:
            x = F.adaptive_avg_pool2d(x, MAX_SIDE)
        out.append(x.flatten(1))
    return torch.cat(out)


def _nearest(x: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest center of each row of x, and the squared distance to it."""
    ids, dists = [], []
    c2 = (centers * centers).sum(1)
    for part in x.split(CHUNK):
        d = (part * part).sum(1, keepdim=True) - 2 * part @ centers.T + c2
        best = d.min(1)
        ids.append(best.indices)
        dists.append(best.values.clamp_min(0))
    return torch.cat(ids), torch.cat(dists)


def kmeans(images: torch.Tensor, k: int, seed: int, iters: int = 50) -> torch.Tensor:
    """The cluster (N,) int64 of each image: Lloyd's k-means on pooled pixels, seeded by
    k-means++ (Arthur & Vassilvitskii 2007) from `seed`, until no image changes cluster. A
    cluster left empty keeps its center (and is never drawn). Computed on the CPU, so that a run
    gets the same clusters on any device (and resumes with them)."""
    x = features(images.cpu())
    n = len(x)
    g = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=g))
    centers = x[first:first + 1]
    dist = _nearest(x, centers)[1]
    for _ in range(1, k):  # each next center drawn with probability proportional to its squared distance
        pick = int(torch.multinomial(dist.double() + 1e-12, 1, generator=g))
        centers = torch.cat([centers, x[pick:pick + 1]])
        dist = torch.minimum(dist, _nearest(x, centers[-1:])[1])
    ids = _nearest(x, centers)[0]
    for _ in range(iters):
        sums = torch.zeros_like(centers).index_add_(0, ids, x)
        counts = torch.bincount(ids, minlength=k).to(x.dtype)
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled, None]
        new = _nearest(x, centers)[0]
        if torch.equal(new, ids):
            break
        ids = new
    return ids.to(images.device)


def clustered(data, k: int, seed: int) -> tuple[InMemoryImages, list[int]]:
    """`data` with each image's label replaced by its cluster, and the clusters' sizes."""
    if not isinstance(data, InMemoryImages):
        raise UserError(f"model.clusters={k} clusters the images in memory: set dataset.cache=true, "
                        f"or model.clusters=0")
    if len(data) < k:
        raise UserError(f"model.clusters={k} needs at least {k} images; the dataset has {len(data)}: "
                        f"set model.clusters=0 (the plain model) or fewer clusters")
    t0 = time.perf_counter()
    ids = kmeans(data.images, k, seed)
    sizes = torch.bincount(ids.cpu(), minlength=k).tolist()
    log.info("self-conditioning: %d k-means clusters of the images in %.1f s (sizes %d-%d)",
             k, time.perf_counter() - t0, min(sizes), max(sizes))
    # The dataset's own class names stay: the checkpoint records what the data holds, not the clusters.
    relabelled = InMemoryImages(data.images, ids, k, data.device, data.seed, data.rank, data.world_size,
                                data.class_names)
    return relabelled, sizes
