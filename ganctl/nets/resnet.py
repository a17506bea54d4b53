"""Residual generator and discriminator in the style of SNGAN and BigGAN (Miyato et al. 2018,
Brock et al. 2019) for 32, 64 and 128 px images, conditional when num_classes > 0: G's
BatchNorms take their scale and shift from the label, D has a projection head.

From a 4x4 base, each residual block doubles the side in G and halves it in D, so a 32 px net has
three blocks and a 128 px net five. Widths are ch at full resolution, doubling at each lower one
up to 8 ch (a 32 px G: 8ch at 4x4 -> 4ch -> 2ch -> ch at 32x32).
"""
import torch
import torch.nn.functional as F
from torch import nn

from ganctl.nets.layers import ConditionalBatchNorm2d, ProjectionHead, spectral_norm_all

SIZES = (32, 64, 128)


def _blocks(img_size: int) -> int:
    if img_size not in SIZES:
        raise ValueError(f"model=resnet needs dataset.img_size {', '.join(map(str, SIZES))}, got {img_size} "
                         "(dataset=cifar10, or dataset=folder with dataset.img_size=64)")
    return {32: 3, 64: 4, 128: 5}[img_size]


def _width(ch: int, img_size: int, side: int) -> int:
    return ch * min(8, img_size // side)


class _Norm(nn.Module):
    """BatchNorm, class-conditional where the net has labels; called as norm(x, y) either way."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = ConditionalBatchNorm2d(channels, num_classes) if num_classes else nn.BatchNorm2d(channels)

    def forward(self, x, y):
        return self.bn(x, y) if isinstance(self.bn, ConditionalBatchNorm2d) else self.bn(x)


class GBlock(nn.Module):
    """norm-ReLU-up-conv3x3-norm-ReLU-conv3x3, plus an up-sampled 1x1 conv of the input."""

    def __init__(self, c_in: int, c_out: int, num_classes: int):
        super().__init__()
        self.norm1, self.norm2 = _Norm(c_in, num_classes), _Norm(c_out, num_classes)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x, y):
        h = F.interpolate(F.relu(self.norm1(x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """(ReLU)-conv3x3-ReLU-conv3x3-avgpool, plus a 1x1 conv of the pooled input. The first block
    reads the image, so it has no ReLU before its first conv (SNGAN's optimised block)."""

    def __init__(self, c_in: int, c_out: int, first: bool):
        super().__init__()
        self.first = first
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x):
        h = self.conv1(x if self.first else F.relu(x))
        h = F.avg_pool2d(self.conv2(F.relu(h)), 2)
        return h + self.skip(F.avg_pool2d(x, 2))


class Generator(nn.Module):
    """z (B, z_dim) [+ label] -> image (B, C, H, W) in [-1, 1]. y: int64 labels (B,) or float
    class weights (B, K) (interpolation between labels)."""

    def __init__(self, z_dim: int, img_channels: int, img_size: int, num_classes: int = 0, *, ch: int):
        super().__init__()
        n = _blocks(img_size)
        self.z_dim, self.num_classes, self.codes = z_dim, num_classes, 0
        widths = [_width(ch, img_size, 4 * 2 ** i) for i in range(n + 1)]  # at 4, 8, ..., img_size
        self.base = widths[0]
        self.linear = nn.Linear(z_dim, 4 * 4 * widths[0])
        self.blocks = nn.ModuleList(GBlock(a, b, num_classes) for a, b in zip(widths, widths[1:]))
        self.out_norm = _Norm(widths[-1], num_classes)
        self.out = nn.Conv2d(widths[-1], img_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.linear(z).view(z.shape[0], self.base, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out(F.relu(self.out_norm(h, y))))


class Discriminator(nn.Module):
    """image (B, C, H, W) [+ label] -> logit (B,): residual blocks down to 4x4, ReLU, a sum over
    positions, and a projection head (Miyato & Koyama 2018). No normalisation layer mixes samples,
    so it serves a gradient penalty as it is; spectral_norm: every weight spectrally normalised."""

    def __init__(self, img_channels: int, img_size: int, num_classes: int = 0, *, ch: int,
                 spectral_norm: bool, aux: bool = False, codes: int = 0, per_sample: bool = False,
                 clipped: bool = False):
        super().__init__()
        n = _blocks(img_size)
        widths = [img_channels] + [_width(ch, img_size, img_size // 2 ** (i + 1)) for i in range(n)]
        self.num_classes = num_classes
        self.blocks = nn.Sequential(*(DBlock(a, b, first=i == 0) for i, (a, b) in enumerate(zip(widths, widths[1:]))))
        self.head = ProjectionHead(widths[-1], num_classes, aux, codes=codes)
        if spectral_norm:
            spectral_norm_all(self)

    def features_of(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled last features (B, 8 ch): what the head reads."""
        return F.relu(self.blocks(x)).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features_of(x, y), y)
