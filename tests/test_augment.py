"""DiffAugment and ADA: each op keeps shape and dtype, is differentiable and does what it says; D sees
real and generated images through the same transforms, in its update and in G's."""
import pytest
import torch
from torch import nn

from ganctl.training.augment import OPS, AdaptiveP, Augmented, augment, color, cutout, translation
from ganctl.run.checkpoint import load_checkpoint
from ganctl.errors import UserError
from ganctl.training.losses import BCE
from ganctl.training.wiring import build_loss, build_step
from ganctl.training.loop import train

RATIOS = {"translation": 0.125, "cutout": 0.5}  # DiffAugment's: shifts of up to 1/8 of a side, squares of 1/2


def plain_bce():
    """BCE with every option off: what the op tests push images through."""
    return BCE(n_critic=1, label_smoothing=0.0, aux_weight=0.0, feature_matching=0.0, r1=0.0, r1_every=1, saturating=False)


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_op_keeps_shape_and_dtype_and_passes_gradients(op, dtype):
    x = torch.randn(6, 3, 16, 16, dtype=dtype, requires_grad=True)
    out = augment(x, [op], RATIOS)
    assert out.shape == x.shape and out.dtype == dtype
    assert not torch.equal(out.detach(), x.detach())  # it did something
    out.float().square().sum().backward()
    assert torch.isfinite(x.grad.float()).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("ratio,most", [(0.125, 2), (0.25, 4)])  # of 16 px
def test_translation_shifts_each_sample_as_a_whole_by_up_to_its_ratio(ratio, most):
    x = torch.zeros(256, 1, 16, 16)
    x[:, 0, 8, 8] = 1.0  # one lit pixel per sample
    out = translation(x, ratio)
    where = out[:, 0].flatten(1).argmax(1)
    dy, dx = where // 16 - 8, where % 16 - 8
    assert (out.flatten(1).sum(1) == 1).all()  # moved, not lost or smeared
    assert dy.abs().max() == most and dx.abs().max() == most and len(set(zip(dy.tolist(), dx.tolist()))) > 1


@pytest.mark.parametrize("ratio,side", [(0.5, 9), (0.25, 5)])  # of 16 px: 8 and 4 px squares (+1, centred)
def test_cutout_zeroes_one_square_per_sample_and_keeps_the_rest(ratio, side):
    x = torch.ones(256, 2, 16, 16)
    out = cutout(x, ratio)
    kept = out[:, 0].flatten(1).sum(1)
    assert torch.equal(out[:, 0], out[:, 1])  # the same square in every channel
    assert kept.min() == 256 - side * side and (kept < 256).all()  # a whole square inside, never more
    assert set(out.unique().tolist()) == {0.0, 1.0}


def test_color_moves_brightness_and_keeps_a_grey_image_grey():
    x = torch.rand(128, 1, 8, 8) * 2 - 1
    out = color(x)
    shift = (out - x).mean(dim=(1, 2, 3))
    assert shift.std() > 0.1  # per-sample brightness and contrast
    rgb = x.repeat(1, 3, 1, 1)
    out = color(rgb)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])


class Recorder(nn.Module):
    """A D that records what it is shown and scores each image by its mean."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, y=None):
        self.seen.append(x)
        return x.mean(dim=(1, 2, 3))


def test_real_and_fake_reach_d_through_the_transforms_and_g_learns_through_them():
    D = Recorder()
    seen_by_D = Augmented(D, ["translation", "cutout"], RATIOS)
    loss = plain_bce()
    real = torch.ones(8, 1, 16, 16)
    fake = torch.full((8, 1, 16, 16), 0.5, requires_grad=True)
    loss.d_loss(seen_by_D, real, fake.detach())
    shown_real, shown_fake = D.seen
    assert (shown_real == 0).any() and (shown_fake == 0).any()  # both cut and shifted
    assert not torch.equal(shown_real, real) and not torch.equal(shown_fake, fake)
    loss.g_loss(seen_by_D, fake).backward()
    assert (fake.grad == 0).any() and (fake.grad != 0).any()  # through the cutout: hidden pixels get none


def test_an_unknown_op_is_refused():
    with pytest.raises(ValueError, match="augment.policy"):
        Augmented(Recorder(), ["rotate"], RATIOS)


def test_augment_none_leaves_d_as_it_is_and_diffaug_wraps_both_updates(make_cfg):
    info = {"img_channels": 1, "img_size": 28, "num_classes": 10}
    plain = make_cfg("model=cdcgan")
    step, _ = build_step(plain, info, build_loss(plain, info["num_classes"]), torch.device("cpu"))
    assert step.D_train is step.D and step.D_g is step.D
    cfg = make_cfg("model=cdcgan", "augment=diffaug")
    step, _ = build_step(cfg, info, build_loss(cfg, info["num_classes"]), torch.device("cpu"))
    assert isinstance(step.D_train, Augmented) and isinstance(step.D_g, Augmented)
    assert step.D_train.policy == ("color", "translation", "cutout") and step.D_train.D is step.D
    from_cfg = {"translation": cfg.augment.translation, "cutout": cfg.augment.cutout}
    assert step.D_train.ratios == step.D_g.ratios == from_cfg
    milder = make_cfg("model=cdcgan", "augment=diffaug", "augment.translation=0.0625", "augment.cutout=0.25")
    step, _ = build_step(milder, info, build_loss(milder, info["num_classes"]), torch.device("cpu"))
    assert step.D_train.ratios == step.D_g.ratios == {"translation": 0.0625, "cutout": 0.25}
    assert step.D_train.p is step.D_g.p and step.D_train.p.item() == pytest.approx(cfg.augment.p)  # one p for both
    always = make_cfg("model=cdcgan", "augment=diffaug", "augment.p=1")
    step, _ = build_step(always, info, build_loss(always, info["num_classes"]), torch.device("cpu"))
    assert step.D_train.p is None and step.D_g.p is None  # p=1: every op on every image, nothing drawn
    assert sum(p.numel() for p in step.D_train.parameters()) == sum(p.numel() for p in step.D.parameters())


@pytest.mark.parametrize("option", ["model=cdcgan", "loss=wgan_gp", "loss.feature_matching=1"])
def test_diffaug_trains(make_cfg, tmp_path, option):
    metrics = train(make_cfg("augment=diffaug", option), tmp_path)
    assert torch.isfinite(torch.tensor(metrics["Loss/G"]))


def test_real_and_fake_draw_from_the_same_distribution_of_transforms():
    D = Recorder()
    seen_by_D = Augmented(D, ["color", "translation", "cutout"], RATIOS)
    torch.manual_seed(0)
    batch = torch.rand(1, 1, 16, 16).expand(512, 1, 16, 16) * 2 - 1  # one image, 512 times
    loss = plain_bce()
    loss.d_loss(seen_by_D, batch, batch.clone())
    shown_real, shown_fake = D.seen
    for stat in (lambda x: x.mean(dim=(1, 2, 3)), lambda x: (x == 0).float().mean(dim=(1, 2, 3))):
        a, b = stat(shown_real), stat(shown_fake)
        assert not torch.equal(a, b)  # drawn afresh for each call and sample ...
        assert abs(a.mean() - b.mean()) < 0.1 and abs(a.std() - b.std()) < 0.1  # ... from one distribution


def test_ada_applies_each_op_with_probability_p():
    x = torch.rand(4000, 1, 8, 8) * 2 - 1
    assert torch.equal(augment(x, ["color", "cutout"], RATIOS, torch.tensor(0.0)), x)  # p = 0: nothing moves
    changed = lambda p: (augment(x, ["cutout"], RATIOS, torch.tensor(p)) != x).flatten(1).any(1).float().mean()
    assert changed(1.0) == 1.0 and abs(changed(0.3) - 0.3) < 0.03


def test_ada_p_rises_on_a_d_that_always_says_real_and_falls_when_it_doubts():
    ada = AdaptiveP(target=0.6, interval=2, kimg=1.0, batch_size=100, device="cpu")  # a move of 0.2
    for _ in range(5):
        ada.observe(torch.tensor(1.0))  # r_t = 1 > 0.6: D is sure of every real image
    assert torch.isclose(ada.p, torch.tensor(0.4)) and ada.rt == 1.0  # two moves; the fifth waits
    ada.observe(torch.tensor(-1.0))  # completes the waiting interval: r_t = (1 - 1) / 2 < 0.6
    assert torch.isclose(ada.p, torch.tensor(0.2)) and ada.rt == 0.0
    for _ in range(20):
        ada.observe(torch.tensor(-1.0))
    assert ada.p == 0.0  # clamped to [0, 1]


def test_ada_at_p_zero_trains_exactly_as_no_augmentation(make_cfg, tmp_path):
    # p starts at 0 and first moves after augment.ada.interval (4) D updates. One step: the ops
    # draw their parameters even at p = 0, so later steps' noise comes from another RNG position.
    train(make_cfg("trainer.max_steps=1"), tmp_path / "none")
    train(make_cfg("trainer.max_steps=1", "augment=ada"), tmp_path / "ada")
    a, b = (load_checkpoint(tmp_path / run / "checkpoints" / "last.pt") for run in ("none", "ada"))
    for net in ("G", "D"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net])
    assert b["augment"]["p"] == 0.0 and "augment" not in a


def test_ada_logs_p_and_resumes_it_exactly(make_cfg, tmp_path):
    # p moves after every D update, and up (r_t > -0.9 unless D calls every real image fake)
    common = ["augment=ada", "augment.ada.interval=1", "augment.ada.kimg=0.05", "augment.ada.target=-0.9", "trainer.deterministic=true",
              "trainer.ckpt_every=100", "trainer.log_every=1"]
    metrics = train(make_cfg(*common, "trainer.max_steps=6"), tmp_path / "straight")
    assert 0 < metrics["Augment/p"] <= 1 and "Augment/rt" in metrics
    train(make_cfg(*common, "trainer.max_steps=3"), tmp_path / "stopped")
    train(make_cfg(*common, "trainer.max_steps=6", f"resume={tmp_path / 'stopped'}"), tmp_path / "stopped")
    a, b = (load_checkpoint(tmp_path / run / "checkpoints" / "last.pt") for run in ("straight", "stopped"))
    for net in ("G", "D"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net])
    assert all(torch.equal(torch.as_tensor(a["augment"][k]), torch.as_tensor(b["augment"][k])) for k in a["augment"])


def test_a_crafted_ada_state_is_refused(make_cfg, tmp_path):
    train(make_cfg("trainer.max_steps=1", "augment=ada"), tmp_path)
    path = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    state["augment"]["p"] = torch.zeros(10**3)
    torch.save(state, tmp_path / "crafted.pt")
    with pytest.raises(UserError, match="augment is not ADA's saved state"):
        load_checkpoint(tmp_path / "crafted.pt")


def test_a_checkpoint_from_before_the_strengths_keeps_the_fixed_ones_it_trained_with(make_cfg):
    from omegaconf import OmegaConf

    from ganctl.run.checkpoint import add_missing_keys
    cfg = OmegaConf.to_container(make_cfg("augment=diffaug", "augment.translation=0.25", "augment.cutout=0.25"))
    del cfg["augment"]["translation"], cfg["augment"]["cutout"]
    add_missing_keys(cfg)
    assert {k: cfg["augment"][k] for k in RATIOS} == RATIOS  # the ops' only strengths until the keys came
