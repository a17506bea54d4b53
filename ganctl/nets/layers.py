"""Pieces several network families share: norms, weight init and label conditioning."""
import torch
from torch import nn
from torch.nn.utils import parametrize

NORMS = ("batch", "layer", "instance", "none")


def norm2d(kind: str, channels: int) -> nn.Module:
    """BatchNorm mixes samples; `layer` (GroupNorm with one group) and `instance` are per sample,
    as a critic trained with a gradient penalty needs."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "instance":  # per sample and per channel: the WGAN-GP tutorial's critic
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")


def dcgan_init(module: nn.Module) -> None:
    """DCGAN paper init: conv and linear weights N(0, 0.02), norm scales N(1, 0.02), biases 0.
    A spectrally normalised weight is initialised through its stored original."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = (m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight")
                      else m.weight)
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def spectral_norm_all(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every conv and linear weight: each layer's
    largest singular value is held at 1 by a power iteration per training forward, which keeps
    D Lipschitz-bounded without a penalty (its weights are stored as `...weight.original`)."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(m)
    return module


def class_rows(table: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-class rows of `table` (K, D) for int64 labels y (B,), or their mix for float class
    weights y (B, K) (interpolation between labels): (B, D)."""
    return y.to(table.dtype) @ table if y.is_floating_point() else table[y]


class ConcatEmbedding(nn.Module):
    """Appends a learned label embedding to a flat input: (B, n) -> (B, n + embed_dim).
    With num_classes=0 it is the identity, so one network class serves both cases.
    y is int64 labels (B,), or float class weights (B, K) whose embedding is the weighted mix of
    the class embeddings (interpolation between labels)."""

    def __init__(self, num_classes: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes > 0 else None
        self.out_extra = embed_dim if num_classes > 0 else 0

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.embed is None:
            return x
        return torch.cat([x, class_rows(self.embed.weight, y).to(x.dtype)], dim=1)


class MultiplyEmbedding(nn.Module):
    """z * embed(y): the conditional DCGAN tutorial's conditioning, an embedding of z's own size
    multiplied in element-wise (B, n) -> (B, n). y as in ConcatEmbedding."""
    out_extra = 0

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x * class_rows(self.embed.weight, y).to(x.dtype)


class LabelPlane(nn.Module):
    """The label as one more input channel of D: an embedding of H*W values reshaped to an image
    plane, (B, C, H, W) -> (B, C + 1, H, W) (the conditional DCGAN tutorial's discriminator)."""

    def __init__(self, num_classes: int, img_size: int):
        super().__init__()
        self.side = img_size
        self.embed = nn.Embedding(num_classes, img_size * img_size)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        plane = class_rows(self.embed.weight, y).to(x.dtype).view(-1, 1, self.side, self.side)
        return torch.cat([x, plane], dim=1)


class ProjectionHead(nn.Module):
    """Discriminator output from features h (B, F): w.h + embed(y).h (Miyato & Koyama 2018).
    The projection term measures how well the features match the class; with num_classes=0
    (or projection=False, where the label entered elsewhere) only the linear term is left.
    aux: also class logits (B, K) from h, AC-GAN's auxiliary classifier; codes > 0 (unconditional
    D): logits (B, codes) of G's categorical code instead, InfoGAN's Q head."""

    def __init__(self, features: int, num_classes: int, aux: bool = False, projection: bool = True,
                 codes: int = 0):
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if projection and num_classes > 0 else None
        outputs = codes or (num_classes if aux else 0)
        self.classifier = nn.Linear(features, outputs) if outputs > 0 else None
        if self.embed is not None:
            # Same scale as the linear term; N(0, 1) would swamp it with F-dimensional dot products.
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, h: torch.Tensor, y: torch.Tensor | None):
        """Logits (B,), or (logits, class logits (B, K)) with the auxiliary classifier."""
        out = self.linear(h).squeeze(1)  # (B,)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(dim=1)
        if self.classifier is not None:
            return out, self.classifier(h)
        return out


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift come from the label (de Vries et al. 2017; BigGAN):
    gamma = 1 + embed_g(y), beta = embed_b(y), so the class steers every layer of G, not only
    its input. y: int64 labels (B,) or float class weights (B, K)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Parameter(torch.zeros(num_classes, channels))
        self.bias = nn.Parameter(torch.zeros(num_classes, channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gamma, beta = 1 + class_rows(self.gain, y), class_rows(self.bias, y)  # (B, C)
        return self.bn(x) * gamma[:, :, None, None].to(x.dtype) + beta[:, :, None, None].to(x.dtype)


class MinibatchStd(nn.Module):
    """Appends one feature map: the std of each feature over groups of `group` samples, averaged
    (Karras et al. 2018). D then sees how varied a batch is, which penalises a G that draws few
    modes. It mixes samples, so it is off for per-sample gradient penalties."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        g = next(d for d in range(min(self.group, B), 0, -1) if B % d == 0)  # largest group <= self.group
        if g == 1:
            return torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
        s = x.float().view(g, B // g, C, H, W).var(0, unbiased=False).add(1e-8).sqrt().mean([1, 2, 3])  # (B/g,)
        s = s.repeat(g)[:, None, None, None].expand(B, 1, H, W).to(x.dtype)
        return torch.cat([x, s], dim=1)
