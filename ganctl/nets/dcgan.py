"""DCGAN generator and discriminator (Radford et al. 2015), conditional when num_classes > 0:
G concatenates a label embedding to z (or multiplies one into it), D is a projection
discriminator (or reads the label as an extra input channel).

The depth follows the image size: halve it while it stays even and >= 4, so 28 -> 14 -> 7
(two up-sampling layers from a 7x7 base) and 32 -> 16 -> 8 -> 4 (three from 4x4).
"""
import logging
import math

import torch
from torch import nn

from ganctl.nets.layers import (ConcatEmbedding, ConditionalBatchNorm2d, LabelPlane, MinibatchStd,
                               MultiplyEmbedding, ProjectionHead, norm2d, spectral_norm_all)

log = logging.getLogger(__name__)


MAX_SIZE = 256  # its widths double at each lower resolution: 64 x ngf feature maps at 4x4 from 256 px


def base_size(img_size: int) -> tuple[int, int]:
    """(side of the lowest-resolution feature map, number of 2x up-samplings)."""
    if img_size > MAX_SIZE:
        raise ValueError(f"DCGAN is built for images up to {MAX_SIZE} px (its widths double at each lower "
                         f"resolution), got {img_size}; lower dataset.img_size")
    side, n = img_size, 0
    while side % 2 == 0 and side // 2 >= 4:
        side, n = side // 2, n + 1
    if n == 0:
        raise ValueError(f"DCGAN needs an even image size >= 8, got {img_size}")
    return side, n


UPSAMPLING = ("transposed", "nearest", "bilinear")
G_CONDITIONING = ("concat", "multiply")
D_CONDITIONING = ("projection", "channel")


def _choice(name: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def up2(c_in: int, c_out: int, mode: str, bias: bool) -> list[nn.Module]:
    """Twice the side: a 4x4 transposed convolution with stride 2 (DCGAN), or a resize by 2 and a
    3x3 convolution, which cannot leave the checkerboard of uneven overlaps (Odena et al. 2016)."""
    if mode == "transposed":
        return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)]
    return [nn.Upsample(scale_factor=2, mode=mode), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias)]


class Generator(nn.Module):
    """z (B, z_dim) [+ label] -> image (B, C, H, W) in [-1, 1].

    codes: an unconditional G with a categorical code of `codes` values read from z and embedded
    like a label (InfoGAN, Chen et al. 2016); D's code head and the loss's information term
    (model.aux_weight) make each code draw something D can tell apart: on MNIST, a digit.
    The code lives in z, so whatever draws z (samples, eval, interpolation) draws codes too.
    clusters: the sizes of the k-means clusters of the training images (self-conditioning,
    ganctl.training.clusters): G is conditioned on a cluster as on a label; given no label, z's
    first entry draws one as often as the data holds it and the net reads the rest of z, so it
    sees the same noise in training and in sampling. `noise` (normal | uniform) is z's law.

    cond: `concat` appends an embed_dim label embedding to z; `multiply` multiplies a z-sized one
    into z (the conditional DCGAN tutorial). noise_injection: tanh of a 1x1 convolution of z is
    added to the first feature map (the same tutorial), on top of z entering at the input."""

    def __init__(self, z_dim: int, img_channels: int, img_size: int, num_classes: int = 0, *,
                 ngf: int, embed_dim: int, cbn: bool, codes: int, upsample: str, cond: str,
                 noise_injection: bool, clusters: list[int] | None = None, noise: str = "normal"):
        super().__init__()
        k = len(clusters or ())
        if sum(map(bool, (codes, num_classes, k))) > 1:
            raise ValueError("labels, codes and clusters exclude each other: each conditions G on its own")
        _choice("upsample", upsample, UPSAMPLING)
        _choice("G.cond", cond, G_CONDITIONING)
        if cond == "multiply" and not (num_classes or codes or k):
            raise ValueError("G.cond=multiply needs labels: a conditional model (or codes)")
        self.z_dim, self.num_classes, self.codes, self.clusters, self.noise = z_dim, num_classes, codes, k, noise
        if k:  # where z[:, 0] falls among the clusters' cumulative shares picks one
            sizes = torch.tensor(clusters, dtype=torch.float32)
            self.register_buffer("cluster_edges", (sizes.cumsum(0) / sizes.sum())[:-1], persistent=False)
        side, n_up = base_size(img_size)
        width = ngf * 2 ** n_up
        net_z = z_dim - 1 if k else z_dim  # the z entries the net reads
        self.cond = (MultiplyEmbedding(num_classes or codes or k, net_z) if cond == "multiply"
                     else ConcatEmbedding(num_classes or codes or k, embed_dim))
        self.inject = nn.Conv2d(net_z, width, 1) if noise_injection else None  # (B, z_dim, 1, 1) -> (B, width, 1, 1)

        def bn(c):  # class-conditional BatchNorm where asked for (conditional models only)
            return ConditionalBatchNorm2d(c, num_classes) if cbn and num_classes else nn.BatchNorm2d(c)

        layers = [  # (B, z_dim [+ embed_dim], 1, 1) -> (B, ngf * 2^n_up, side, side)
            nn.ConvTranspose2d(net_z + self.cond.out_extra, width, side, 1, 0, bias=False),
            bn(width), nn.ReLU(inplace=True)]
        for _ in range(n_up - 1):  # each doubles the side and halves the width
            layers += [*up2(width, width // 2, upsample, bias=False), bn(width // 2), nn.ReLU(inplace=True)]
            width //= 2
        layers += [*up2(width, img_channels, upsample, bias=True), nn.Tanh()]  # (B, C, H, W)
        self.net = nn.Sequential(*layers)

    def code(self, z: torch.Tensor) -> torch.Tensor | None:
        """The categorical code (B,) that z carries: the argmax of its first `codes` entries, which is
        uniform over 0..codes-1 for i.i.d. normal or uniform noise. None without codes."""
        return z[:, :self.codes].argmax(1) if self.codes else None

    def cluster(self, z: torch.Tensor) -> torch.Tensor:
        """The cluster (B,) that z's first entry draws: its quantile under z's law, placed among the
        clusters' cumulative shares, so each is drawn as often as the data holds it."""
        z0 = z[:, 0].float()
        u = (z0 + 1) / 2 if self.noise == "uniform" else 0.5 * (1 + torch.erf(z0 / math.sqrt(2)))
        return (u[:, None] >= self.cluster_edges).sum(1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.codes:
            y = self.code(z)
        if self.clusters:
            y = self.cluster(z) if y is None else y
            z = z[:, 1:]
        h = self.cond(z, y)[:, :, None, None]  # (B, z_dim [+ embed_dim], 1, 1)
        for i, layer in enumerate(self.net):
            h = layer(h, y) if isinstance(layer, ConditionalBatchNorm2d) else layer(h)
            if i == 2 and self.inject is not None:  # after the first block's ReLU: (B, width, side, side)
                h = h + torch.tanh(self.inject(z[:, :, None, None]))
        return h


class Discriminator(nn.Module):
    """image (B, C, H, W) [+ label] -> logit (B,).

    norm: `batch` (DCGAN), `layer` or `instance` (per sample; needed with a gradient penalty), `none`,
    or `auto`: `per_sample_norm` where the loss penalises D's gradient per sample, else `batch`.
    The first layer is never normalised, as in DCGAN. spectral_norm: every conv and linear weight
    spectrally normalised (SNGAN), on top of `norm`. pack: D judges `pack` samples at once, stacked
    as channels, and returns one logit per pack (B / pack,): a G that draws few modes makes packs
    that look alike, which single samples cannot show (PacGAN, Lin et al. 2018). codes: a head that
    reads G's categorical code back (InfoGAN's Q), returned as the second output. cond: how the
    label enters, `projection` at the output or `channel`, an embedded plane beside the image.
    """

    def __init__(self, img_channels: int, img_size: int, num_classes: int = 0, *, ndf: int, norm: str,
                 per_sample_norm: str, mbstd: bool, spectral_norm: bool, pack: int, cond: str, aux: bool = False,
                 codes: int = 0, per_sample: bool = False, clipped: bool = False):
        """per_sample: the loss penalises per-sample gradients, so nothing may mix the samples of a
        batch: norm=auto is then `per_sample_norm` (else BatchNorm), mbstd and pack are off.
        clipped: the loss clips the weights (no effect here)."""
        super().__init__()
        _choice("D.per_sample_norm", per_sample_norm, ("layer", "instance"))
        if norm == "auto":
            norm = per_sample_norm if per_sample else "batch"
        elif norm == "batch" and per_sample:
            log.warning("model.D.norm=batch with a gradient penalty: the penalty is per sample and "
                        "BatchNorm mixes samples; model.D.norm=auto picks a per-sample norm")
        if mbstd and per_sample:
            log.warning("model.D.mbstd is off: it mixes the samples of a batch, and the loss's "
                        "gradient penalty is per sample")
            mbstd = False
        if pack > 1 and per_sample:
            log.warning("model.D.pack is off: the loss's gradient penalty is per sample, not per pack")
            pack = 1
        if pack > 1 and num_classes > 0:
            raise ValueError("pack > 1 needs an unconditional model: a pack has no single label")
        _choice("D.cond", cond, D_CONDITIONING)
        if cond == "channel" and not num_classes:
            raise ValueError("D.cond=channel needs labels: a conditional model")
        self.num_classes, self.pack = num_classes, pack
        self.plane = LabelPlane(num_classes, img_size) if cond == "channel" else None
        side, n_down = base_size(img_size)
        layers = [nn.Conv2d(img_channels * pack + int(cond == "channel"), ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        width = ndf  # (B, ndf, H/2, W/2)
        for _ in range(n_down - 1):  # each halves the side and doubles the width
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=norm == "none"),
                       norm2d(norm, width * 2), nn.LeakyReLU(0.2, inplace=True)]
            width *= 2
        if mbstd:  # (B, width + 1, side, side)
            layers += [MinibatchStd()]
        self.features = nn.Sequential(*layers, nn.Flatten())  # (B, (width [+ 1]) * side * side)
        self.head = ProjectionHead((width + int(mbstd)) * side * side, num_classes, aux,
                                   projection=cond == "projection", codes=codes)
        if spectral_norm:
            spectral_norm_all(self)

    def features_of(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The last feature map, flattened (B [/ pack], features): what the head reads."""
        if self.pack > 1:  # (B, C, H, W) -> (B / pack, pack * C, H, W): consecutive samples side by side
            B, C, H, W = x.shape
            if B % self.pack:
                raise ValueError(f"a batch of {B} does not split into packs of {self.pack}")
            x = x.reshape(B // self.pack, self.pack * C, H, W)
        if self.plane is not None:
            x = self.plane(x, y)
        return self.features(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features_of(x, y), y)
