"""The exponential moving average of G's weights (Yazici et al. 2019) that draws the sample grids
and is what `ganctl sample` uses, with BatchNorm statistics of its own (BigGAN's standing statistics)."""
import copy

import torch

from ganctl.training.step import sample_noise


@torch.no_grad()
def ema_update(G_ema: torch.nn.Module, G: torch.nn.Module, decay: float, buffers: bool = True) -> None:
    """G_ema <- decay * G_ema + (1 - decay) * G for parameters; buffers (BatchNorm statistics) copied
    unless buffers=False, where standing_stats recomputes them before each use of G_ema."""
    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - decay)
    if buffers:
        for b_ema, b in zip(G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)


@torch.no_grad()
def standing_stats(G: torch.nn.Module, batches: int, batch_size: int, z_dim: int, noise: str,
                   num_classes: int, device, seed: int = 0) -> None:
    """BigGAN's standing statistics (Brock et al. 2019): G's BatchNorm running statistics become the
    average over `batches` batches of G's own activations, from fixed noise. ema_update copies the
    raw G's statistics, which belong to other weights: where G moves fast (the MLP models, Adam
    without momentum) the average then normalises with the wrong mean and scale. G ends in eval mode."""
    norms = [m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or batches < 1:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    g = torch.Generator(device=device).manual_seed(seed)
    G.train()
    for _ in range(batches):
        z = sample_noise(batch_size, z_dim, noise, device, g)
        y = torch.randint(num_classes, (batch_size,), device=device, generator=g) if num_classes else None
        G(z, y)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    G.eval()


def ema_decay_at(step: int, decay: float, warmup: bool) -> float:
    """With warm-up the average forgets the first, poor weights quickly: min(decay, (1+t)/(10+t))."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


class AveragedGenerator:
    """G_ema beside the G it follows: `update(G, step)` after each training step, `at(step)` before
    each use, which gives it BatchNorm statistics of its own weights (computed once per step).
    G's statistics are copied instead with bn_batches=0."""

    def __init__(self, G: torch.nn.Module, decay: float, warmup: bool, bn_batches: int, batch_size: int,
                 z_dim: int, noise: str, num_classes: int, seed: int):
        self.module = copy.deepcopy(G).eval().requires_grad_(False)
        self.decay, self.warmup, self.bn_batches, self.seed = decay, warmup, bn_batches, seed
        self.batch_size, self.z_dim, self.noise, self.num_classes = batch_size, z_dim, noise, num_classes
        self._stats_step = None  # the step whose weights the BatchNorm statistics belong to

    def update(self, G: torch.nn.Module, step: int) -> None:
        ema_update(self.module, G, ema_decay_at(step, self.decay, self.warmup), buffers=not self.bn_batches)

    def at(self, step: int) -> torch.nn.Module:
        if self._stats_step != step:
            device = next(self.module.parameters()).device
            standing_stats(self.module, self.bn_batches, self.batch_size, self.z_dim, self.noise,
                           self.num_classes, device, self.seed)
            self._stats_step = step
        return self.module
