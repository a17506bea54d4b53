"""Each loss against values computed by hand from its formula, its signs, and the gradient penalty."""
import copy
import functools
import math

import pytest
import torch
from torch import nn

from hydra import compose, initialize_config_module

from ganctl.cli import registry
from ganctl.config.build import build
from ganctl.training.losses import gradient_penalty



@functools.cache
def loss_config(name: str):
    """conf/loss/<name>.yaml as `ganctl train loss=<name>` composes it (once per name: 0.2 s each)."""
    registry.register()
    with initialize_config_module("ganctl.conf", version_base="1.3"):
        return compose("train", overrides=[f"loss={name}"]).loss


def shipped(name: str, **kwargs):
    """The loss `ganctl train loss=<name>` builds, with `kwargs` on top."""
    return build(copy.deepcopy(loss_config(name)), "loss", **{"label_smoothing": 0.0, "aux_weight": 0.0, **kwargs})


REAL, FAKE = [2.0, -1.0], [0.5, -3.0]  # logits D gives to two real and two fake samples


class FirstPixel(nn.Module):
    """A 'discriminator' whose logit is the first value of its input, so tests choose the logits."""

    def forward(self, x, y=None):
        return x.flatten(1)[:, 0]


def softplus(v: float) -> float:
    return math.log(1.0 + math.exp(v))


def mean(values) -> float:
    return sum(values) / len(values)


def losses_of(loss):
    real, fake = torch.tensor(REAL)[:, None], torch.tensor(FAKE)[:, None]
    d, stats = loss.d_loss(FirstPixel(), real, fake)
    g = loss.g_loss(FirstPixel(), fake)
    return d.item(), g.item(), stats


def test_bce_non_saturating_by_hand():
    d, g, stats = losses_of(shipped("bce"))
    # -log sigmoid(r) = softplus(-r);  -log(1 - sigmoid(f)) = softplus(f)
    assert d == pytest.approx(mean([softplus(-r) for r in REAL]) + mean([softplus(f) for f in FAKE]), rel=1e-6)
    assert g == pytest.approx(mean([softplus(-f) for f in FAKE]), rel=1e-6)
    assert stats["D/real"].item() == pytest.approx(mean(REAL))
    assert stats["D/fake"].item() == pytest.approx(mean(FAKE))


def test_bce_saturating_minimax_by_hand():
    _, g, _ = losses_of(shipped("bce", saturating=True))
    # G minimises log(1 - sigmoid(f)) = -softplus(f)
    assert g == pytest.approx(mean([-softplus(f) for f in FAKE]), rel=1e-6)


def test_bce_one_sided_label_smoothing_by_hand():
    d, g, _ = losses_of(shipped("bce", label_smoothing=0.1))
    t = 0.9  # real target; fake targets stay 0
    real_term = mean([t * softplus(-r) + (1 - t) * softplus(r) for r in REAL])
    assert d == pytest.approx(real_term + mean([softplus(f) for f in FAKE]), rel=1e-6)
    assert g == pytest.approx(mean([softplus(-f) for f in FAKE]), rel=1e-6)  # G is unaffected


def test_lsgan_by_hand():
    d, g, _ = losses_of(shipped("lsgan"))
    assert d == pytest.approx(0.5 * mean([(r - 1) ** 2 for r in REAL]) + 0.5 * mean([f ** 2 for f in FAKE]))
    assert g == pytest.approx(0.5 * mean([(f - 1) ** 2 for f in FAKE]))
    d_smooth, _, _ = losses_of(shipped("lsgan", label_smoothing=0.2))
    assert d_smooth == pytest.approx(0.5 * mean([(r - 0.8) ** 2 for r in REAL]) + 0.5 * mean([f ** 2 for f in FAKE]))


def test_wgan_by_hand_and_clipping():
    d, g, _ = losses_of(shipped("wgan"))
    assert d == pytest.approx(mean(FAKE) - mean(REAL))
    assert g == pytest.approx(-mean(FAKE))
    critic = nn.Linear(3, 2)
    nn.init.constant_(critic.weight, 0.5)
    nn.init.constant_(critic.bias, -0.3)
    shipped("wgan", clip=0.01).after_d_step(critic)
    assert critic.weight.max().item() == pytest.approx(0.01)
    assert critic.bias.min().item() == pytest.approx(-0.01)


def test_hinge_by_hand():
    d, g, _ = losses_of(shipped("hinge"))
    assert d == pytest.approx(mean([max(0, 1 - r) for r in REAL]) + mean([max(0, 1 + f) for f in FAKE]))
    assert g == pytest.approx(-mean(FAKE))


@pytest.mark.parametrize("loss", [shipped("bce"), shipped("lsgan"), shipped("wgan"), shipped("hinge"),
                                  shipped("bce", saturating=True)],
                         ids=["bce", "lsgan", "wgan", "hinge", "bce_saturating"])
def test_signs_a_better_discriminator_has_lower_loss_and_fooling_it_lowers_g_loss(loss):
    # An undecided discriminator (logits between the LSGAN targets 0 and 1), nudged by 0.3:
    # towards real=1 / fake=0 is a better D; fake logits up is a G that fools D more.
    real, fake = torch.tensor([0.2, -0.3])[:, None], torch.tensor([0.6, 0.9])[:, None]
    d0, _ = loss.d_loss(FirstPixel(), real, fake)
    d1, _ = loss.d_loss(FirstPixel(), real + 0.3, fake - 0.3)
    assert d1 < d0
    assert loss.g_loss(FirstPixel(), fake + 0.1) < loss.g_loss(FirstPixel(), fake)


class FirstPixelWithClasses(nn.Module):
    """A 'discriminator' with an auxiliary classifier: logit = first value, class logits = the
    next two values of its input."""

    def forward(self, x, y=None):
        v = x.flatten(1)
        return v[:, 0], v[:, 1:3]


def cross_entropy(logits, label) -> float:
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


@pytest.mark.parametrize("name", ["bce", "wgan_gp"])
def test_auxiliary_classifier_adds_weighted_cross_entropy_by_hand(name):
    loss = shipped(name, aux_weight=0.5)
    # Real rows: logit, two class logits; D's classifier learns from real images, G from fakes.
    real, fake = torch.tensor([[2.0, 1.0, -1.0], [-1.0, 0.0, 3.0]]), torch.tensor([[0.5, 2.0, 0.0], [-3.0, 0.0, 0.0]])
    y = torch.tensor([0, 1])
    d, stats = loss.d_loss(FirstPixelWithClasses(), real, fake, y)
    g = loss.g_loss(FirstPixelWithClasses(), fake, y)
    base = shipped(name)
    d0, stats0 = base.d_loss(FirstPixel(), real, fake)
    g0 = base.g_loss(FirstPixel(), fake)
    ce_real = mean([cross_entropy([1.0, -1.0], 0), cross_entropy([0.0, 3.0], 1)])
    ce_fake = mean([cross_entropy([2.0, 0.0], 0), cross_entropy([0.0, 0.0], 1)])
    assert stats["Loss/D_aux"].item() == pytest.approx(ce_real, rel=1e-6)
    # (The first-pixel critic's gradient has norm 1: no gradient penalty in either.)
    assert d.item() == pytest.approx(d0.item() + 0.5 * ce_real, rel=1e-6)
    assert g.item() == pytest.approx(g0.item() + 0.5 * ce_fake, rel=1e-6)


class ScaledNorm(nn.Module):
    """D(x) = c * |x|_2: its input gradient has norm c everywhere (away from 0)."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, x, y=None):
        return self.c * x.flatten(1).norm(dim=1)


def test_gradient_penalty_is_zero_for_unit_gradient_norm_and_grows_away_from_it():
    torch.manual_seed(0)
    real, fake = torch.randn(64, 1, 8, 8) + 3, torch.randn(64, 1, 8, 8) - 3
    gp = {c: gradient_penalty(ScaledNorm(c), real, fake).item() for c in (0.2, 0.5, 1.0, 1.5, 2.0, 3.0)}
    assert gp[1.0] < 1e-8
    for c, value in gp.items():
        assert value == pytest.approx((c - 1) ** 2, rel=1e-4, abs=1e-8)
    assert gp[1.0] < gp[1.5] < gp[2.0] < gp[3.0]
    assert gp[1.0] < gp[0.5] < gp[0.2]


def test_wgan_gp_adds_weighted_penalty_and_draws_one_coefficient_per_sample():
    seen = []

    class Recorder(ScaledNorm):
        def forward(self, x, y=None):
            seen.append(x.detach().clone())
            return super().forward(x)

    torch.manual_seed(0)
    real, fake = torch.randn(16, 1, 4, 4), torch.randn(16, 1, 4, 4)
    d, stats = shipped("wgan_gp", gp_weight=10.0).d_loss(Recorder(2.0), real, fake)
    wgan_part = 2.0 * (fake.flatten(1).norm(dim=1).mean() - real.flatten(1).norm(dim=1).mean())
    assert stats["Loss/GP"].item() == pytest.approx(1.0, rel=1e-4)  # (2 - 1)^2
    assert d.item() == pytest.approx(wgan_part.item() + 10.0 * 1.0, rel=1e-4)
    x_hat = seen[-1]  # the penalty's input: eps_i * real_i + (1 - eps_i) * fake_i
    eps = (x_hat - fake) / (real - fake)
    per_sample = eps.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample), atol=1e-4)
    assert per_sample[:, 0].std() > 0.05 and 0 <= per_sample.min() and per_sample.max() <= 1


@pytest.mark.parametrize("name", ["bce", "hinge", "wgan_gp"])
def test_r1_adds_half_gamma_times_the_squared_gradient_norm_at_the_reals_by_hand(name):
    torch.manual_seed(0)
    real, fake = torch.randn(16, 1, 4, 4), torch.randn(16, 1, 4, 4)
    torch.manual_seed(1)  # wgan_gp's interpolation coefficients: the same draws in both
    plain, _ = shipped(name).d_loss(ScaledNorm(2.0), real, fake)
    torch.manual_seed(1)
    with_r1, stats = shipped(name, r1=0.5).d_loss(ScaledNorm(2.0), real, fake)
    assert stats["Loss/R1"].item() == pytest.approx(4.0, rel=1e-5)  # |grad_x 2|x|| = 2 at every sample
    assert with_r1.item() == pytest.approx(plain.item() + 0.5 / 2 * 4.0, rel=1e-5)
    assert shipped(name, r1=0.5).double_backward and shipped(name).double_backward == (name == "wgan_gp")


def test_lazy_r1_comes_every_r1_every_updates_with_its_weight_scaled_by_it():
    real, fake = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    plain = shipped("bce").d_loss(ScaledNorm(2.0), real, fake)[0].item()
    loss, added = shipped("bce", r1=1.0, r1_every=3), []
    for _ in range(7):
        d, stats = loss.d_loss(ScaledNorm(2.0), real, fake)
        added.append(d.item() - plain)
    assert added == pytest.approx([1.0 / 2 * 3 * 4.0, 0, 0] * 2 + [6.0], abs=1e-5)


def test_r1_penalises_the_gradient_at_the_real_images_not_elsewhere():
    class Quadratic(nn.Module):  # D(x) = sum x^2 / 2: grad_x = x, so R1 = E |x_real|^2
        def forward(self, x, y=None):
            return x.flatten(1).pow(2).sum(1) / 2
    real, fake = torch.full((4, 1, 2, 2), 3.0), torch.zeros(4, 1, 2, 2)
    _, stats = shipped("hinge", r1=1.0).d_loss(Quadratic(), real, fake)
    assert stats["Loss/R1"].item() == pytest.approx(4 * 9.0)


def test_only_the_penalised_critic_asks_for_per_sample_normalisation():
    assert shipped("wgan_gp").per_sample_critic
    assert not any(shipped(name).per_sample_critic for name in ("bce", "lsgan", "wgan", "hinge"))


@pytest.mark.parametrize("name", ["bce", "wgan_gp"])
def test_information_term_adds_cross_entropy_on_the_codes_of_fakes_by_hand(name):
    loss = shipped(name, aux_weight=0.5)
    # InfoGAN: D's code head and G both learn to read G's codes from fakes; real images have none.
    real, fake = torch.tensor([[2.0, 1.0, -1.0], [-1.0, 0.0, 3.0]]), torch.tensor([[0.5, 2.0, 0.0], [-3.0, 0.0, 1.0]])
    codes = torch.tensor([1, 0])
    d, stats = loss.d_loss(FirstPixelWithClasses(), real, fake, None, codes)
    g = loss.g_loss(FirstPixelWithClasses(), fake, None, codes)
    base = shipped(name)
    d0, _ = base.d_loss(FirstPixel(), real, fake)
    g0 = base.g_loss(FirstPixel(), fake)
    ce_fake = mean([cross_entropy([2.0, 0.0], 1), cross_entropy([0.0, 1.0], 0)])
    assert stats["Loss/D_info"].item() == pytest.approx(ce_fake, rel=1e-6)
    assert "Loss/D_aux" not in stats
    assert d.item() == pytest.approx(d0.item() + 0.5 * ce_fake, rel=1e-6)
    assert g.item() == pytest.approx(g0.item() + 0.5 * ce_fake, rel=1e-6)


class KnownFeatures(nn.Module):
    """A 'discriminator' whose features are the first two values of its input and whose logit is
    the first feature."""

    def features_of(self, x, y=None):
        return x.flatten(1)[:, :2]

    def head(self, h, y=None):
        return h[:, 0]

    def forward(self, x, y=None):
        return self.head(self.features_of(x, y), y)


@pytest.mark.parametrize("name", ["bce", "lsgan", "hinge", "wgan", "wgan_gp"])
def test_feature_matching_adds_the_weighted_squared_distance_of_feature_means_by_hand(name):
    D = KnownFeatures()
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    fake = torch.tensor([[0.0, 0.0], [2.0, 2.0]], requires_grad=True)
    # Means (2, 3) and (1, 1): (2 - 1)^2 + (3 - 1)^2 = 5.
    plain_loss = shipped(name).g_loss(D, fake)
    with_fm = shipped(name, feature_matching=0.5).g_loss(D, fake, real=real)
    assert with_fm.item() == pytest.approx(plain_loss.item() + 0.5 * 5)
    # Its gradient on each fake feature: 0.5 * 2 * (mean_fake - mean_real) / B, on top of the plain loss's.
    (g_fm,) = torch.autograd.grad(with_fm, fake)
    (g_plain,) = torch.autograd.grad(shipped(name).g_loss(D, fake), fake)
    torch.testing.assert_close(g_fm - g_plain, torch.tensor([[-0.5, -1.0], [-0.5, -1.0]]))


def test_feature_matching_is_zero_for_the_same_batch_and_off_at_weight_zero():
    D = KnownFeatures()
    fake = torch.tensor([[0.5, -1.0], [2.0, 3.0]])
    plain_loss = shipped("bce").g_loss(D, fake)
    same = shipped("bce", feature_matching=3.0).g_loss(D, fake, real=fake.clone())
    assert same.item() == pytest.approx(plain_loss.item())
    assert shipped("bce").g_loss(D, fake, real=fake + 10).item() == plain_loss.item()
