"""One training step: `loss.n_critic` discriminator updates, each on its own real batch, then one
generator update. `ganctl train` and the benchmark run this same code.

    step = TrainStep(G, D, opt_G, opt_D, loss, z_dim=100, noise="normal", batch_size=128)
    stats = step([(real, y), ...])    # n_critic batches -> scalar tensors, still on the device

Nothing here reads a value back to the host: the returned scalars are detached tensors that the
caller averages and reads every log_every steps.
"""
import contextlib

import torch


def sample_noise(n: int, z_dim: int, kind: str, device, generator=None) -> torch.Tensor:
    """Latents (n, z_dim): N(0, 1) for kind="normal", U(-1, 1) for kind="uniform"."""
    if kind == "uniform":
        return torch.rand(n, z_dim, device=device, generator=generator).mul_(2).sub_(1)
    return torch.randn(n, z_dim, device=device, generator=generator)


class TrainStep:
    """G, D: the modules whose weights the optimizers hold. G_train, D_train: what the D update
    calls (their DDP wrappers under torchrun, else G and D). The G update calls D itself: D's
    weights take no gradient there, and a DDP wrapper would wait for them."""

    def __init__(self, G, D, opt_G, opt_D, loss, *, z_dim: int, noise: str, batch_size: int,
                 autocast=None, G_train=None, D_train=None, rank: int = 0, world_size: int = 1):
        self.G, self.D, self.opt_G, self.opt_D, self.loss = G, D, opt_G, opt_D, loss
        self.G_train, self.D_train = G_train or G, D_train or D
        self.z_dim, self.noise_kind, self.B = z_dim, noise, batch_size
        self.autocast = autocast or contextlib.nullcontext()
        self.rank, self.W = rank, world_size

    def noise(self, device) -> torch.Tensor:
        """This rank's slice of the global batch's noise: the same draws as one process at B*W."""
        z = sample_noise(self.B * self.W, self.z_dim, self.noise_kind, device)
        return z[self.rank * self.B:(self.rank + 1) * self.B] if self.W > 1 else z

    def __call__(self, batches: list) -> list[dict]:
        """`batches`: n_critic (real, y) pairs, y None for unconditional models. Returns the
        scalars of each D update and of the G update, as detached device tensors."""
        loss, stats = self.loss, []
        # Discriminator: n_critic updates; the last one's fake also serves the G update.
        for i, (real, y) in enumerate(batches):
            with self.autocast, torch.set_grad_enabled(i == len(batches) - 1):
                fake = self.G_train(self.noise(real.device), y)
            with self.autocast:
                d_loss, d_stats = loss.d_loss(self.D_train, real, fake.detach(), y)
            self.opt_D.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_D.step()
            loss.after_d_step(self.D)
            stats.append({"Loss/D": d_loss.detach(), **d_stats})

        # Generator.
        self.D.requires_grad_(False)
        with self.autocast:
            g_loss = loss.g_loss(self.D, fake, y)
        self.opt_G.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_G.step()
        self.D.requires_grad_(True)
        stats.append({"Loss/G": g_loss.detach()})
        return stats
