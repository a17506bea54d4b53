"""DCGAN generator and discriminator (Radford et al. 2015), conditional when num_classes > 0:
G concatenates a label embedding to z, D is a projection discriminator.

The depth follows the image size: halve it while it stays even and >= 4, so 28 -> 14 -> 7
(two up-sampling layers from a 7x7 base) and 32 -> 16 -> 8 -> 4 (three from 4x4).
"""
import torch
from torch import nn

from ganctl.nets.layers import ConcatEmbedding, ConditionalBatchNorm2d, MinibatchStd, ProjectionHead, norm2d


def base_size(img_size: int) -> tuple[int, int]:
    """(side of the lowest-resolution feature map, number of 2x up-samplings)."""
    side, n = img_size, 0
    while side % 2 == 0 and side // 2 >= 4:
        side, n = side // 2, n + 1
    if n == 0:
        raise ValueError(f"DCGAN needs an even image size >= 8, got {img_size}")
    return side, n


class Generator(nn.Module):
    """z (B, z_dim) [+ label] -> image (B, C, H, W) in [-1, 1]."""

    def __init__(self, z_dim: int, img_channels: int, img_size: int, num_classes: int = 0,
                 ngf: int = 64, embed_dim: int = 32, cbn: bool = False):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        side, n_up = base_size(img_size)
        width = ngf * 2 ** n_up
        self.cond = ConcatEmbedding(num_classes, embed_dim)

        def bn(c):  # class-conditional BatchNorm where asked for (conditional models only)
            return ConditionalBatchNorm2d(c, num_classes) if cbn and num_classes else nn.BatchNorm2d(c)

        layers = [  # (B, z_dim [+ embed_dim], 1, 1) -> (B, ngf * 2^n_up, side, side)
            nn.ConvTranspose2d(z_dim + self.cond.out_extra, width, side, 1, 0, bias=False),
            bn(width), nn.ReLU(inplace=True)]
        for _ in range(n_up - 1):  # each doubles the side and halves the width
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       bn(width // 2), nn.ReLU(inplace=True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, img_channels, 4, 2, 1), nn.Tanh()]  # (B, C, H, W)
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.cond(z, y)[:, :, None, None]  # (B, z_dim [+ embed_dim], 1, 1)
        for layer in self.net:
            h = layer(h, y) if isinstance(layer, ConditionalBatchNorm2d) else layer(h)
        return h


class Discriminator(nn.Module):
    """image (B, C, H, W) [+ label] -> logit (B,).

    norm: `batch` (DCGAN), `layer` (per sample; needed with a gradient penalty) or `none`.
    The first layer is never normalised, as in DCGAN.
    """

    @staticmethod
    def auto_norm(per_sample: bool, clipped: bool) -> str:
        """model.D.norm=auto: BatchNorm, except under a per-sample gradient penalty."""
        return "layer" if per_sample else "batch"

    def __init__(self, img_channels: int, img_size: int, num_classes: int = 0, ndf: int = 64,
                 norm: str = "batch", mbstd: bool = False, aux: bool = False):
        super().__init__()
        self.num_classes = num_classes
        side, n_down = base_size(img_size)
        layers = [nn.Conv2d(img_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        width = ndf  # (B, ndf, H/2, W/2)
        for _ in range(n_down - 1):  # each halves the side and doubles the width
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=norm == "none"),
                       norm2d(norm, width * 2), nn.LeakyReLU(0.2, inplace=True)]
            width *= 2
        if mbstd:  # (B, width + 1, side, side)
            layers += [MinibatchStd()]
        self.features = nn.Sequential(*layers, nn.Flatten())  # (B, (width [+ 1]) * side * side)
        self.head = ProjectionHead((width + int(mbstd)) * side * side, num_classes, aux)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x), y)
