"""GAN objectives on discriminator logits. One class per formulation; the loop owns backward()
and step():

    loss = WGANGP(gp_weight=10.0, n_critic=5, label_smoothing=0.0, aux_weight=0.0, feature_matching=0.0,
                  r1=0.0, r1_every=1)
    d_loss, stats = loss.d_loss(D, real, fake.detach(), y)   # stats: "D/real", "D/fake", "Loss/GP"
    g_loss = loss.g_loss(D, fake, y)

`d_loss` calls D itself because a gradient penalty needs D at points between real and fake.
Every formulation works in fp32 on logits, never on Sigmoid outputs (numerically unsafe).
"""
import torch
import torch.nn.functional as F
from torch import nn


class Loss:
    """Base: `n_critic` D steps per G step; `per_sample_critic` asks for a critic without
    BatchNorm (a gradient penalty is defined per sample); `clipped_critic` says the critic's
    weights are clipped; `label_smoothing` (one-sided, real targets 1 - s) means something only
    where `uses_targets`. `aux_weight` weighs D's second head: AC-GAN's cross-entropy on labels,
    or InfoGAN's on G's categorical codes (a lower bound on their mutual information with x).
    `r1`: gamma of R1 (Mescheder et al. 2018), gamma/2 * E||grad_x D(x_real)||^2 in D's loss, every
    `r1_every` D updates with its weight times r1_every (StyleGAN2's lazy regularisation).
    `real_signs`: d_loss also reports E[sign(D(real))] ("D/real_sign"), ADA's overfitting signal."""

    per_sample_critic = False
    clipped_critic = False
    uses_targets = False

    # No defaults here: the values live in conf/ (loss.*, trainer.label_smoothing, model.aux_weight).
    def __init__(self, *, n_critic: int, label_smoothing: float, aux_weight: float, feature_matching: float,
                 r1: float, r1_every: int, real_signs: bool = False):
        self.n_critic = n_critic
        self.r1, self.r1_every = r1, r1_every
        self.d_updates = 0  # D updates so far (a resumed run sets it): which of them add R1
        self.real_signs = real_signs
        self.label_smoothing = label_smoothing
        self.aux_weight = aux_weight
        self.feature_matching = feature_matching

    def d_loss(self, D, real, fake, y=None, codes=None) -> tuple[torch.Tensor, dict]:
        """codes: G's categorical codes (B,) of `fake` (InfoGAN), else None."""
        r1_now = self.r1 > 0 and self.d_updates % self.r1_every == 0
        self.d_updates += 1
        if r1_now:  # the gradient of D's logits with respect to the real images themselves
            real = real.detach().requires_grad_(True)
        real_out, real_cls = split_output(D(real, y))
        fake_out, fake_cls = split_output(D(fake, y))
        stats = {"D/real": real_out.detach().mean(), "D/fake": fake_out.detach().mean()}
        if self.real_signs:
            stats["D/real_sign"] = real_out.detach().sign().mean()
        loss = self.d_objective(real_out, fake_out)
        if codes is not None and fake_cls is not None:  # D's code head reads the code back from fakes
            ce = F.cross_entropy(fake_cls, codes)
            stats["Loss/D_info"] = ce.detach()
            loss = loss + self.aux_weight * ce
        elif real_cls is not None:  # D's classifier learns the labels of real images only
            ce = F.cross_entropy(real_cls, y)
            stats["Loss/D_aux"] = ce.detach()
            loss = loss + self.aux_weight * ce
        if r1_now:
            r1 = r1_penalty(real_out, real)
            stats["Loss/R1"] = r1.detach()
            loss = loss + self.r1 / 2 * self.r1_every * r1
        return loss, stats

    @property
    def double_backward(self) -> bool:
        """D's loss differentiates a gradient (a gradient penalty, R1): torch.compile cannot."""
        return self.per_sample_critic or self.r1 > 0

    def g_loss(self, D, fake, y=None, codes=None, real=None) -> torch.Tensor:
        """real: a real batch, for feature matching (where its weight is not 0)."""
        if self.feature_matching and real is not None:
            features = D.features_of(fake, y)
            fake_out, fake_cls = split_output(D.head(features, y))
            with torch.no_grad():
                real_features = D.features_of(real, y)
            loss = self.g_objective(fake_out) + self.feature_matching * feature_matching(real_features, features)
        else:
            fake_out, fake_cls = split_output(D(fake, y))
            loss = self.g_objective(fake_out)
        if fake_cls is not None:  # G is rewarded when D's head reads the asked label or code
            loss = loss + self.aux_weight * F.cross_entropy(fake_cls, codes if codes is not None else y)
        return loss

    def after_d_step(self, D: nn.Module) -> None:
        """Called after each optimizer step of D (weight clipping lives here)."""

    def d_objective(self, real_out, fake_out):
        raise NotImplementedError

    def g_objective(self, fake_out):
        raise NotImplementedError


def feature_matching(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """||E f(real) - E f(fake)||_2^2 over the batch (Salimans et al. 2016, section 3.1): G is asked to
    match the statistics of D's features on real data rather than to fool D's last layer."""
    return (real_features.float().mean(0) - fake_features.float().mean(0)).pow(2).sum()


def r1_penalty(real_out: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 over the real batch `real` (which requires grad) that gave `real_out`."""
    (grad,) = torch.autograd.grad(real_out.sum(), real, create_graph=True)
    return grad.float().flatten(1).pow(2).sum(1).mean()


def split_output(out) -> tuple[torch.Tensor, torch.Tensor | None]:
    """D's output as fp32 (logits (B,), class logits (B, K) or None): a D with an auxiliary
    classifier (AC-GAN) returns both."""
    if isinstance(out, tuple):
        return out[0].float(), out[1].float()
    return out.float(), None


class BCE(Loss):
    """Binary cross-entropy. G minimises -log D(G(z)) (non-saturating), or with
    saturating=True the original minimax log(1 - D(G(z)))."""

    uses_targets = True

    def __init__(self, *, saturating: bool, **kwargs):
        super().__init__(**kwargs)
        self.saturating = saturating

    def d_objective(self, real_out, fake_out):
        real_target = torch.full_like(real_out, 1.0 - self.label_smoothing)
        return (F.binary_cross_entropy_with_logits(real_out, real_target)
                + F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out)))

    def g_objective(self, fake_out):
        if self.saturating:
            return -F.softplus(fake_out).mean()  # log(1 - sigmoid(l)) = -softplus(l)
        return F.softplus(-fake_out).mean()  # -log(sigmoid(l)) = softplus(-l)


class LSGAN(Loss):
    """Least squares: D regresses real to 1 (1 - label_smoothing) and fake to 0; G pushes fake to 1.
    The 1/2 factors follow Mao et al."""

    uses_targets = True

    def d_objective(self, real_out, fake_out):
        real_target = 1.0 - self.label_smoothing
        return 0.5 * ((real_out - real_target) ** 2).mean() + 0.5 * (fake_out ** 2).mean()

    def g_objective(self, fake_out):
        return 0.5 * ((fake_out - 1.0) ** 2).mean()


class WGAN(Loss):
    """Wasserstein critic: D maximises E[D(real)] - E[D(fake)], kept Lipschitz by clipping its
    weights to [-clip, clip] after every step."""

    clipped_critic = True

    def __init__(self, *, clip: float, **kwargs):
        super().__init__(**kwargs)
        self.clip = clip

    def d_objective(self, real_out, fake_out):
        return fake_out.mean() - real_out.mean()

    def g_objective(self, fake_out):
        return -fake_out.mean()

    @torch.no_grad()
    def after_d_step(self, D):
        params = [p for p in D.parameters()]
        torch._foreach_clamp_min_(params, -self.clip)
        torch._foreach_clamp_max_(params, self.clip)


class WGANGP(Loss):
    """Wasserstein critic with gradient penalty gp_weight * E[(|grad_x D(x_hat)|_2 - 1)^2] at
    x_hat = eps * real + (1 - eps) * fake, one eps ~ U[0, 1] per sample."""

    per_sample_critic = True

    def __init__(self, *, gp_weight: float, **kwargs):
        super().__init__(**kwargs)
        self.gp_weight = gp_weight

    def d_loss(self, D, real, fake, y=None, codes=None):
        loss, stats = super().d_loss(D, real, fake, y, codes)
        gp = gradient_penalty(D, real, fake, y)
        stats["Loss/GP"] = gp.detach()
        return loss + self.gp_weight * gp, stats

    def d_objective(self, real_out, fake_out):
        return fake_out.mean() - real_out.mean()

    def g_objective(self, fake_out):
        return -fake_out.mean()


def gradient_penalty(D, real, fake, y=None) -> torch.Tensor:
    """E[(|grad_x D(x_hat)|_2 - 1)^2], x_hat on the line between each real and fake sample."""
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out, _ = split_output(D(x_hat, y))
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.float().flatten(1).norm(2, dim=1)
    return ((norm - 1.0) ** 2).mean()


class Hinge(Loss):
    """Hinge: D minimises E[relu(1 - D(real))] + E[relu(1 + D(fake))]; G minimises -E[D(fake)]."""

    def d_objective(self, real_out, fake_out):
        return F.relu(1.0 - real_out).mean() + F.relu(1.0 + fake_out).mean()

    def g_objective(self, fake_out):
        return -fake_out.mean()
