"""Differentiable augmentation of what D sees (DiffAugment, Zhao et al. 2020): every real and
every generated image that reaches D, in D's update and in G's, is transformed at random, so D
cannot memorise a small training set and G's gradients flow back through the transform.

    D_seen = Augmented(D, policy=("color", "translation", "cutout"), ratios={"translation": 0.125, "cutout": 0.5})
    D_seen(x, y) == D(augment(x, policy, ratios), y)  # fresh random parameters per call and sample

With ADA (Karras et al. 2020) each op is applied to each sample with probability p, and p follows
the overfitting signal r_t = E[sign(D(real))] toward a target:

    ada = AdaptiveP(target=0.6, interval=4, kimg=100, batch_size=128, device="cuda")
    D_seen = Augmented(D, policy, ratios, p=ada.p)  # reads ada.p, which ada.observe() updates in place

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


def translation(x: torch.Tensor, ratio: float) -> torch.Tensor:
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


def cutout(x: torch.Tensor, ratio: float) -> torch.Tensor:
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


def augment(x: torch.Tensor, policy, ratios: dict, p: torch.Tensor | None = None) -> torch.Tensor:
    """Each op of `policy` in turn, those with a strength (translation, cutout) at `ratios[op]`; with
    `p` (a 0-dim tensor) each sample takes each op with probability p and is otherwise left as it
    was (p = 0: x itself)."""
    for name in policy:
        y = OPS[name](x, ratios[name]) if name in ratios else OPS[name](x)
        if p is not None:
            y = torch.where(torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p, y, x)
        x = y
    return x


class AdaptiveP:
    """ADA's probability p, on the device: every `interval` D updates, p moves by
    sign(r_t - target) * batch_size * interval / (kimg * 1000), clamped to [0, 1], where r_t is
    the mean of E[sign(D(real))] over those updates (so p can go from 0 to 1 in kimg thousand real
    images, StyleGAN2-ADA's ada_kimg). No host sync: the counters that need one are host ints."""

    def __init__(self, target: float, interval: int, kimg: float, batch_size: int, device, world_size: int = 1):
        self.target, self.interval, self.W = target, interval, world_size
        self.rate = batch_size * world_size * interval / (kimg * 1000)
        self.p = torch.zeros((), device=device)
        self.rt = torch.zeros((), device=device)  # the last interval's r_t, for the logs
        self.signs = torch.zeros((), device=device)  # the sum of E[sign(D(real))] since the last move
        self.count = 0

    def observe(self, real_sign: torch.Tensor) -> None:
        """One D update's E[sign(D(real))] (a 0-dim device tensor)."""
        self.signs += real_sign.float()
        self.count += 1
        if self.count == self.interval:
            if self.W > 1:  # every rank moves p the same way
                torch.distributed.all_reduce(self.signs)
                self.signs /= self.W
            self.rt.copy_(self.signs / self.interval)
            self.p.copy_((self.p + torch.sign(self.rt - self.target) * self.rate).clamp(0, 1))
            self.signs.zero_()
            self.count = 0

    def stats(self) -> dict:
        return {"Augment/p": self.p.clone(), "Augment/rt": self.rt.clone()}

    def state_dict(self) -> dict:
        return {"p": self.p.clone(), "rt": self.rt.clone(), "signs": self.signs.clone(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        for k in ("p", "rt", "signs"):
            getattr(self, k).copy_(state[k])
        self.count = int(state["count"])


class Augmented(nn.Module):
    """D that sees augmented images: the loss calls it like D (and its features_of/head, for
    feature matching). It holds no weights of its own: D's state_dict and optimizer are unchanged."""

    def __init__(self, D, policy, ratios: dict, p: torch.Tensor | None = None):
        super().__init__()
        unknown = [name for name in policy if name not in OPS]
        if unknown or not policy:
            raise ValueError(f"augment.policy must name some of {', '.join(OPS)}, got {list(policy)}")
        self.D, self.policy, self.p = D, tuple(policy), p  # p: None = every op on every sample
        self.ratios = dict(ratios)

    def forward(self, x, y=None):
        return self.D(augment(x, self.policy, self.ratios, self.p), y)

    def features_of(self, x, y=None):
        return _module(self.D).features_of(augment(x, self.policy, self.ratios, self.p), y)

    def head(self, features, y=None):
        return _module(self.D).head(features, y)


def _module(D):
    """The network under a DDP or torch.compile wrapper."""
    return getattr(D, "module", getattr(D, "_orig_mod", D))
