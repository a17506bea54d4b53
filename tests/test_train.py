"""The training loop in process: every model x loss pair, run outputs, options, refusals."""
import itertools

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import mnist_models, options
from ganctl.run.checkpoint import REQUIRED_KEYS, load_checkpoint
from ganctl.errors import UserError
from ganctl.training.ema import ema_decay_at, ema_update, standing_stats
from ganctl.training.wiring import build_generator
from ganctl.training.loop import fixed_inputs, train


@pytest.mark.parametrize("model,loss", list(itertools.product(mnist_models(), options("loss"))))
def test_every_model_and_loss_trains_and_leaves_a_checkpoint(make_cfg, tmp_path, model, loss):
    cfg = make_cfg(f"model={model}", f"loss={loss}")
    metrics = train(cfg, tmp_path)
    assert metrics["step"] == 2
    for name in ("Loss/D", "Loss/G", "D/real", "D/fake", "Time/img_per_s"):
        assert torch.isfinite(torch.tensor(metrics[name])), name
    assert ("Loss/GP" in metrics) == (loss == "wgan_gp")
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert set(REQUIRED_KEYS) <= set(state)
    assert state["step"] == 2 and state["cfg"]["model"]["name"] == model
    assert (tmp_path / "samples" / "step_2.png").is_file()


def test_weights_change_and_wgan_clipping_holds(make_cfg, tmp_path):
    cfg = make_cfg("model=gan", "loss=wgan")
    train(cfg, tmp_path)
    D = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["D"]
    assert max(t.abs().max().item() for t in D.values()) <= cfg.loss.clip + 1e-7


def test_conditional_grid_has_one_row_per_class(make_cfg, tmp_path):
    train(make_cfg("model=cdcgan"), tmp_path)
    width, height = Image.open(tmp_path / "samples" / "step_2.png").size
    assert (width, height) == (2 + 10 * 30, 2 + 10 * 30)  # 10 columns x 10 classes of 28 px + padding 2


def test_unconditional_grid_is_eight_by_eight(make_cfg, tmp_path):
    train(make_cfg("model=dcgan"), tmp_path)
    assert Image.open(tmp_path / "samples" / "step_2.png").size == (2 + 8 * 30, 2 + 8 * 30)


def test_epochs_set_the_number_of_steps_and_n_critic_uses_batches(make_cfg, tmp_path):
    # 64 images / batch 16 = 4 batches an epoch; 2 epochs = 8 batches = 8 steps (bce), 1 step (wgan, 5 D steps)
    assert train(make_cfg("trainer.max_steps=null", "trainer.epochs=2"), tmp_path / "a")["step"] == 8
    assert train(make_cfg("trainer.max_steps=null", "trainer.epochs=2", "loss=wgan"), tmp_path / "b")["step"] == 1


def test_dataset_limit_reaches_the_loader(make_cfg, tmp_path):
    # 16 of the 64 images at batch 16: 1 batch an epoch, so 3 epochs are 3 steps (not 12); 30 clusters need 30 images
    assert train(make_cfg("trainer.max_steps=null", "trainer.epochs=3", "dataset.limit=16",
                       "model.clusters=0"), tmp_path)["step"] == 3


def test_keeps_the_last_k_periodic_checkpoints(make_cfg, tmp_path):
    train(make_cfg("trainer.max_steps=5", "trainer.ckpt_every=1", "trainer.keep_ckpts=2"), tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_4.pt", "step_5.pt"]


@pytest.mark.parametrize("option", ["trainer.noise=uniform", "trainer.precision=bf16",
                                    "trainer.label_smoothing=0.1", "optimizer=rmsprop", "loss.saturating=true",
                                    "model.D.spectral_norm=true", "model.D.pack=2 model.clusters=0",
                                    "loss.feature_matching=1 model.D.pack=2 model.clusters=0", "loss.feature_matching=1 model=cgan",
                                    "model.D.norm=instance loss=wgan_gp", "model.G.upsample=bilinear",
                                    "loss=hinge loss.r1=1 loss.r1_every=2",
                                    "model=cdcgan model.G.cond=multiply model.G.noise_injection=true model.D.cond=channel"])
def test_options_train(make_cfg, tmp_path, option):
    metrics = train(make_cfg(*option.split()), tmp_path)
    assert torch.isfinite(torch.tensor(metrics["Loss/G"]))


@pytest.mark.parametrize("model,loss", [("cgan", "bce"), ("cdcgan", "wgan_gp")])
def test_auxiliary_classifier_trains_and_is_saved(make_cfg, tmp_path, model, loss):
    metrics = train(make_cfg(f"model={model}", f"loss={loss}", "model.aux_weight=1.0"), tmp_path)
    assert metrics["Loss/D_aux"] > 0 and torch.isfinite(torch.tensor(metrics["Loss/G"]))
    D = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["D"]
    assert any(k.endswith("classifier.weight") for k in D)


def test_infogan_codes_train_and_d_keeps_its_code_head(make_cfg, tmp_path):
    metrics = train(make_cfg("model=dcgan", "model.G.codes=10", "model.aux_weight=1.0", "model.clusters=0"), tmp_path)
    assert metrics["Loss/D_info"] > 0 and torch.isfinite(torch.tensor(metrics["Loss/G"]))
    D = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["D"]
    assert D["head.classifier.weight"].shape[0] == 10
    assert Image.open(tmp_path / "samples" / "step_2.png").size == (2 + 10 * 30, 2 + 10 * 30)  # a row per code


def test_fixed_codes_grid_holds_each_code_on_its_row_and_keeps_the_values_of_z():
    z, y, per_row = fixed_inputs(100, 0, "normal", 0, "cpu", codes=10)
    assert y is None and per_row == 10 and z.shape == (100, 100)
    assert torch.equal(z[:, :10].argmax(1), torch.arange(10).repeat_interleave(10))
    first = z[::10]  # the same draw on every row, its code entries permuted
    assert torch.equal(first[:, :10].sort(1).values, first[:1, :10].sort(1).values.expand(10, 10))
    assert torch.equal(first[:, 10:], first[:1, 10:].expand(10, 90))


def test_auxiliary_classifier_is_ignored_without_labels(make_cfg, tmp_path, caplog):
    metrics = train(make_cfg("model=dcgan", "model.aux_weight=1.0", "model.clusters=0"), tmp_path)
    assert "Loss/D_aux" not in metrics and "aux_weight has no effect" in caplog.text


def test_same_seed_same_weights_on_cpu(make_cfg, tmp_path):
    for run in ("a", "b"):
        train(make_cfg("model=gan"), tmp_path / run)
    a, b = (load_checkpoint(tmp_path / r / "checkpoints" / "last.pt")["G"] for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_refuses_a_directory_that_holds_a_run(make_cfg, tmp_path):
    train(make_cfg(), tmp_path)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(UserError, match="already holds"):
        train(make_cfg(), tmp_path)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


def test_batch_larger_than_dataset_is_a_clear_error(make_cfg, tmp_path):
    with pytest.raises(UserError, match="batch_size=1000 is larger than the dataset"):
        train(make_cfg("trainer.batch_size=1000"), tmp_path)


def test_divergence_stops_without_saving_nan_weights(make_cfg, tmp_path):
    cfg = make_cfg("model=gan", "loss=wgan", "optimizer.lr_d=1e30", "optimizer.lr_g=1e30",
                   "loss.clip=1e30", "trainer.max_steps=20", "trainer.ckpt_every=100")
    with pytest.raises(UserError, match="not finite"):
        train(cfg, tmp_path)
    assert not (tmp_path / "checkpoints" / "last.pt").exists()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert events.Scalars("Loss/D")  # what was logged before the stop is flushed, not lost


def test_ema_update_is_a_moving_average_and_copies_buffers():
    G, G_ema = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    torch.nn.init.constant_(G.weight, 1.0)
    torch.nn.init.constant_(G_ema.weight, 0.0)
    G.running_mean.fill_(5.0)
    ema_update(G_ema, G, decay=0.9)
    assert torch.allclose(G_ema.weight, torch.full((3,), 0.1))  # 0.9 * 0 + 0.1 * 1
    ema_update(G_ema, G, decay=0.9)
    assert torch.allclose(G_ema.weight, torch.full((3,), 0.19))  # 0.9 * 0.1 + 0.1 * 1
    assert torch.equal(G_ema.running_mean, G.running_mean)
    G.running_mean.fill_(7.0)
    ema_update(G_ema, G, decay=0.9, buffers=False)  # statistics left to standing_stats
    assert torch.equal(G_ema.running_mean, torch.full((3,), 5.0))


class LinearBN(torch.nn.Module):
    """BatchNorm after a linear map of z: for z ~ N(0, I) its activations have mean b and variance
    |W_i|^2 per unit, in closed form."""

    def __init__(self):
        super().__init__()
        self.linear, self.bn = torch.nn.Linear(8, 3), torch.nn.BatchNorm1d(3)

    def forward(self, z, y=None):
        return self.bn(self.linear(z))


def test_standing_stats_are_the_statistics_of_the_generators_own_activations():
    G = LinearBN()
    G.bn.running_mean.fill_(5.0)  # statistics of other weights, as ema_update leaves them
    G.bn.running_var.fill_(9.0)
    rng = torch.get_rng_state()
    standing_stats(G, batches=16, batch_size=256, z_dim=8, noise="normal", num_classes=0, device="cpu")
    # 4,096 draws: the mean is within 4 standard errors (sd/64) of b, the variance within 10%.
    sd = G.linear.weight.detach().pow(2).sum(1).sqrt()
    assert torch.all((G.bn.running_mean - G.linear.bias.detach()).abs() < 4 * sd / 64)
    assert torch.allclose(G.bn.running_var, sd ** 2, rtol=0.1)
    assert not G.training and G.bn.momentum == 0.1  # back to eval mode and its own momentum
    assert torch.equal(torch.get_rng_state(), rng)  # the training RNG stream is untouched


def test_standing_stats_draw_the_same_noise_each_time_and_skip_nets_without_batchnorm():
    G = LinearBN()
    standing_stats(G, 2, 64, 8, "uniform", 0, "cpu", seed=3)
    first = G.bn.running_var.clone()
    standing_stats(G, 2, 64, 8, "uniform", 0, "cpu", seed=3)
    assert torch.equal(G.bn.running_var, first)
    plain = torch.nn.Linear(8, 3)
    before = plain.weight.clone()
    standing_stats(plain, 2, 64, 8, "normal", 0, "cpu")  # nothing to compute, nothing changed
    assert torch.equal(plain.weight, before)


def test_the_saved_ema_generator_carries_statistics_of_its_own_weights(make_cfg, tmp_path):
    cfg = make_cfg("model=gan", "trainer.max_steps=3")
    train(cfg, tmp_path / "own")
    state = load_checkpoint(tmp_path / "own" / "checkpoints" / "last.pt")
    G = build_generator(cfg.model, state["data"])
    G.load_state_dict(state["G_ema"])
    saved = {k: v.clone() for k, v in G.state_dict().items() if "running" in k}
    assert any(not torch.equal(v, state["G"][k]) for k, v in saved.items())  # not the raw G's
    standing_stats(G, cfg.trainer.ema_bn_batches, cfg.trainer.batch_size, cfg.model.z_dim, "normal", 0, "cpu",
                   seed=cfg.trainer.seed)
    assert all(torch.equal(G.state_dict()[k], v) for k, v in saved.items())  # they are G_ema's own
    train(make_cfg("model=gan", "trainer.max_steps=3", "trainer.ema_bn_batches=0"), tmp_path / "raw")
    state = load_checkpoint(tmp_path / "raw" / "checkpoints" / "last.pt")
    assert all(torch.equal(state["G_ema"][k], state["G"][k]) for k in saved)  # copied from G


def test_ema_warmup_forgets_early_weights_then_reaches_the_decay():
    assert ema_decay_at(0, 0.999, warmup=True) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.999, warmup=True) == pytest.approx(0.91)
    assert ema_decay_at(10**6, 0.999, warmup=True) == 0.999
    assert ema_decay_at(0, 0.999, warmup=False) == 0.999


def test_checkpoint_keeps_the_ema_generator_unless_disabled(make_cfg, tmp_path):
    train(make_cfg(), tmp_path / "on")
    state = load_checkpoint(tmp_path / "on" / "checkpoints" / "last.pt")
    assert state["G_ema"].keys() == state["G"].keys()
    assert any(not torch.equal(state["G_ema"][k], state["G"][k]) for k in state["G"] if k.endswith("weight"))
    train(make_cfg("trainer.ema_decay=0"), tmp_path / "off")
    assert "G_ema" not in load_checkpoint(tmp_path / "off" / "checkpoints" / "last.pt")


def test_image_folder_trains_a_conditional_rgb_model(make_cfg, tmp_path, image_folder):
    cfg = make_cfg("model=cdcgan", "dataset=folder", f"dataset.root={image_folder}", "dataset.img_size=16",
                   "dataset.num_workers=0")
    train(cfg, tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["data"] == {"img_channels": 3, "img_size": 16, "num_classes": 2}
    assert Image.open(tmp_path / "samples" / "step_2.png").size == (2 + 10 * 18, 2 + 2 * 18)  # a row per class


def test_cifar10_trains_a_conditional_rgb_dcgan(make_cfg, tmp_path, cifar_files_pass_their_checksums):
    train(make_cfg("model=cdcgan", "dataset=cifar10"), tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["data"] == {"img_channels": 3, "img_size": 32, "num_classes": 10}
    assert Image.open(tmp_path / "samples" / "step_2.png").mode == "RGB"


@pytest.mark.parametrize("img_size,subfolder", [(32, ""), (64, ""), (32, "cats")])
def test_resnet_trains_on_a_folder_conditional_where_it_has_classes(make_cfg, tmp_path, image_folder,
                                                                   img_size, subfolder):
    cfg = make_cfg("model=resnet", "loss=hinge", "dataset=folder", f"dataset.root={image_folder / subfolder}",
                   f"dataset.img_size={img_size}", "dataset.num_workers=0", "trainer.batch_size=4")
    metrics = train(cfg, tmp_path)
    assert torch.isfinite(torch.tensor(metrics["Loss/G"]))
    classes = 0 if subfolder else 2  # one folder of images: unconditional
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["data"] == {
        "img_channels": 3, "img_size": img_size, "num_classes": classes}
