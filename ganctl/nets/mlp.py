"""MLP generator and discriminator: the vanilla GAN, and the conditional GAN when num_classes > 0
(a label embedding concatenated to z in G and to the flattened image in D)."""
import math

import torch
from torch import nn

from ganctl.nets.layers import ConcatEmbedding, ProjectionHead, spectral_norm_all


class Generator(nn.Module):
    """z (B, z_dim) [+ label] -> image (B, C, H, W) in [-1, 1]."""

    def __init__(self, z_dim: int, img_channels: int, img_size: int, num_classes: int = 0, *,
                 hidden: list[int], norm: str, embed_dim: int):
        super().__init__()
        if norm not in ("batch", "none"):
            raise ValueError(f"MLP generator norm must be batch or none, got {norm!r}")
        self.z_dim, self.num_classes = z_dim, num_classes
        self.img_shape = (img_channels, img_size, img_size)
        self.cond = ConcatEmbedding(num_classes, embed_dim)
        layers, width = [], z_dim + self.cond.out_extra
        for h in hidden:
            layers += [nn.Linear(width, h)]
            layers += [nn.BatchNorm1d(h)] if norm == "batch" else []
            layers += [nn.LeakyReLU(0.2, inplace=True)]
            width = h
        layers += [nn.Linear(width, math.prod(self.img_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = self.net(self.cond(z, y))  # (B, C*H*W)
        return x.view(-1, *self.img_shape)


class Discriminator(nn.Module):
    """image (B, C, H, W) [+ label] -> logit (B,). norm: `none` or `layer` (LayerNorm after
    each hidden Linear); never BatchNorm, so it suits every loss."""

    def __init__(self, img_channels: int, img_size: int, num_classes: int = 0, *, hidden: list[int],
                 dropout: float, embed_dim: int, norm: str, projection: bool, spectral_norm: bool,
                 aux: bool = False, per_sample: bool = False, clipped: bool = False):
        """norm=auto: LayerNorm under weight clipping (`clipped`), none otherwise. Clipped weights
        shrink the activations of every unnormalised layer until the critic is nearly linear, and
        a linear critic teaches G only the mean image (a grey blob of a digit). `per_sample` (a
        gradient penalty) changes nothing here: no norm of this D mixes samples."""
        super().__init__()
        if norm == "auto":
            norm = "layer" if clipped else "none"
        if norm not in ("layer", "none"):
            raise ValueError(f"MLP discriminator norm must be layer or none, got {norm!r}")
        self.num_classes = num_classes
        # The label enters concatenated to the image (Mirza & Osindero) or, with projection, at the
        # output as in the conditional DCGAN.
        self.cond = ConcatEmbedding(0 if projection else num_classes, embed_dim)
        layers, width = [], img_channels * img_size * img_size + self.cond.out_extra
        for h in hidden:
            layers += [nn.Linear(width, h)]
            layers += [nn.LayerNorm(h)] if norm == "layer" else []
            layers += [nn.LeakyReLU(0.2, inplace=True)]
            layers += [nn.Dropout(dropout)] if dropout > 0 else []
            width = h
        self.features = nn.Sequential(*layers)  # (B, hidden[-1])
        self.head = ProjectionHead(width, num_classes, aux, projection)
        if spectral_norm:
            spectral_norm_all(self)

    def features_of(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden layer (B, hidden[-1]): what the head reads."""
        return self.features(self.cond(x.flatten(1), y))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """Logits (B,), or (logits, class logits (B, K)) with the auxiliary classifier."""
        return self.head(self.features_of(x, y), y)
