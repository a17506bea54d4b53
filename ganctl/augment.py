"""Differentiable augmentation of what D sees (DiffAugment, Zhao et al. 2020): every real and
every generated image that reaches D, in D's update and in G's, is transformed at random, so D
cannot memorise a small training set and G's gradients flow back through the transform.

    D_seen = Augmented(D, policy=("color", "translation", "cutout"))
    D_seen(x, y) == D(augment(x, policy), y)          # fresh random parameters per call and sample

Each op works on a batch in [-1, 1] (B, C, H, W), on its device, with parameters drawn per sample
on that device: no host sync, no per-sample Python.
"""
import torch
from torch import nn


def color(x: torch.Tensor) -> torch.Tensor:
    """Brightness +-0.5, saturation x[0, 2], contrast x[0.5, 1.5], each drawn per sample."""
    B = x.shape[0]
    x = x + (torch.rand(B, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    mean = x.mean(dim=1, keepdim=True)  # grey: a single channel is its own mean, so no change
    x = (x - mean) * (torch.rand(B, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(B, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each sample by up to ratio * side pixels along each axis, filling with zeros."""
    B, C, H, W = x.shape
    sh, sw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (B, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (B, 1), device=x.device)
    rows = (torch.arange(H, device=x.device) + dy + sh)[:, :, None]  # (B, H, 1) into the padded image
    cols = (torch.arange(W, device=x.device) + dx + sw)[:, None, :]  # (B, 1, W)
    padded = nn.functional.pad(x, (sw, sw, sh, sh))
    batch = torch.arange(B, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ratio * side per sample, centred anywhere in the image."""
    B, C, H, W = x.shape
    h, w = int(H * ratio + 0.5), int(W * ratio + 0.5)
    cy = torch.randint(0, H, (B, 1, 1), device=x.device)
    cx = torch.randint(0, W, (B, 1, 1), device=x.device)
    rows = torch.arange(H, device=x.device)[None, :, None]
    cols = torch.arange(W, device=x.device)[None, None, :]
    inside = ((rows - cy).abs() <= h // 2) & ((cols - cx).abs() <= w // 2)  # (B, H, W)
    return x * (~inside)[:, None].to(x.dtype)


OPS = {"color": color, "translation": translation, "cutout": cutout}


def augment(x: torch.Tensor, policy) -> torch.Tensor:
    for name in policy:
        x = OPS[name](x)
    return x


class Augmented(nn.Module):
    """D that sees augmented images: the loss calls it like D (and its features_of/head, for
    feature matching). It holds no weights of its own: D's state_dict and optimizer are unchanged."""

    def __init__(self, D, policy):
        super().__init__()
        unknown = [p for p in policy if p not in OPS]
        if unknown or not policy:
            raise ValueError(f"augment.policy must name some of {', '.join(OPS)}, got {list(policy)}")
        self.D, self.policy = D, tuple(policy)

    def forward(self, x, y=None):
        return self.D(augment(x, self.policy), y)

    def features_of(self, x, y=None):
        return _module(self.D).features_of(augment(x, self.policy), y)

    def head(self, features, y=None):
        return _module(self.D).head(features, y)


def _module(D):
    """The network under a DDP or torch.compile wrapper."""
    return getattr(D, "module", getattr(D, "_orig_mod", D))
