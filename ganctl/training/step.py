"""One training step: `loss.n_critic` discriminator updates, each on its own real batch, then one
generator update. `ganctl train` and the benchmark run this same code.

    step = TrainStep(G, D, opt_G, opt_D, loss, z_dim=100, noise="normal", batch_size=128)
    stats = step([(real, y), ...])    # n_critic batches -> scalar tensors, still on the device

Nothing here reads a value back to the host: the returned scalars are detached tensors that the
caller averages and reads every log_every steps.
"""
import contextlib
import logging

import torch

log = logging.getLogger(__name__)


def sample_noise(n: int, z_dim: int, kind: str, device, generator=None) -> torch.Tensor:
    """Latents (n, z_dim): N(0, 1) for kind="normal", U(-1, 1) for kind="uniform"."""
    if kind == "uniform":
        return torch.rand(n, z_dim, device=device, generator=generator).mul_(2).sub_(1)
    return torch.randn(n, z_dim, device=device, generator=generator)


def compiled(G_train, D_train, D, mode: str = "none", double_backward: bool = False):
    """(G_train, D_train, D_g) under trainer.compile: the callables of G, of D in its own update,
    and of D in G's update. The modules keep their weights and state_dict keys; the compiled
    callables share them."""
    D_g = D
    if mode != "none":
        # A process that trains one configuration after another (a Hydra sweep's jobs, the
        # benchmark's rows) would pile their compilations of the same forward code onto one
        # cache, and past torch._dynamo's recompile_limit (8) that code silently runs eager. Each
        # run starts from an empty cache, as in a fresh process (inductor's disk cache remains).
        torch.compiler.reset()
        opts = {} if mode == "default" else {"mode": mode}
        G_train, D_g = torch.compile(G_train, **opts), torch.compile(D, **opts)
        if double_backward:
            log.warning("trainer.compile: D's own update stays eager under a gradient penalty or R1 "
                        "(torch.compile has no double backward); G and G's update are compiled")
        else:
            D_train = torch.compile(D_train, **opts)
    return G_train, D_train, D_g


class TrainStep:
    """G, D: the modules whose weights the optimizers hold. G_train, D_train: what the D update
    calls (their DDP wrappers under torchrun, compiled with trainer.compile, else G and D).
    D_g: D in the G update, never DDP-wrapped: D's weights take no gradient there, and a DDP
    wrapper would wait for them. channels_last: real batches go to D in NHWC. cudagraphs: the
    compiled callables replay CUDA graphs (trainer.compile=reduce-overhead), and each call of the
    step is marked as one iteration of them."""

    def __init__(self, G, D, opt_G, opt_D, loss, *, z_dim: int, noise: str, batch_size: int,
                 autocast=None, G_train=None, D_train=None, D_g=None, channels_last: bool = False,
                 cudagraphs: bool = False, rank: int = 0, world_size: int = 1, ada=None):
        self.G, self.D, self.opt_G, self.opt_D, self.loss = G, D, opt_G, opt_D, loss
        self.G_train = G if G_train is None else G_train  # (`or` would ask a compiled module its len)
        self.D_train = D if D_train is None else D_train
        self.D_g = D if D_g is None else D_g
        self.z_dim, self.noise_kind, self.B = z_dim, noise, batch_size
        self.autocast = autocast or contextlib.nullcontext()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.rank, self.W, self.cudagraphs = rank, world_size, cudagraphs
        self.ada = ada  # ganctl.training.augment.AdaptiveP or None: fed D's real signs after each D update

    def noise(self, device) -> torch.Tensor:
        """This rank's slice of the global batch's noise: the same draws as one process at B*W."""
        z = sample_noise(self.B * self.W, self.z_dim, self.noise_kind, device)
        return z[self.rank * self.B:(self.rank + 1) * self.B] if self.W > 1 else z

    def __call__(self, batches: list) -> list[dict]:
        """`batches`: n_critic (real, y) pairs, y None for unconditional models. Returns the
        scalars of each D update and of the G update, as detached device tensors."""
        loss, stats = self.loss, []
        if self.cudagraphs:
            # CUDA-graph trees otherwise guess where an iteration starts: at any compiled call made
            # with no backward pending, such as D's first call after a no-grad G in the critic
            # loop, and each guess copies out the outputs still alive (the fake batch). One mark
            # per step makes the whole step one iteration, replayed as one path of graphs.
            torch.compiler.cudagraph_mark_step_begin()
        # Discriminator: n_critic updates; the last one's fake also serves the G update.
        for i, (real, y) in enumerate(batches):
            real = real.contiguous(memory_format=self.memory_format)
            z = self.noise(real.device)
            codes = self.G.code(z) if getattr(self.G, "codes", 0) else None  # InfoGAN's codes, in z
            with self.autocast, torch.set_grad_enabled(i == len(batches) - 1):
                fake = self.G_train(z, y)
            with self.autocast:
                d_loss, d_stats = loss.d_loss(self.D_train, real, fake.detach(), y, codes)
            self.opt_D.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_D.step()
            loss.after_d_step(self.D)
            if self.ada is not None:
                self.ada.observe(d_stats["D/real_sign"])
            stats.append({"Loss/D": d_loss.detach(), **d_stats})

        # Generator.
        self.D.requires_grad_(False)
        with self.autocast:
            g_loss = loss.g_loss(self.D_g, fake, y, codes, real=real)
        self.opt_G.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_G.step()
        self.D.requires_grad_(True)
        stats.append({"Loss/G": g_loss.detach(), **(self.ada.stats() if self.ada is not None else {})})
        return stats
