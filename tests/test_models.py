"""Every model's shapes at 28x28x1 and 32x32x3, label dependence, init and critic norms."""
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from conftest import mnist_models, options
from ganctl.errors import UserError
from ganctl.nets import dcgan
from ganctl.training.wiring import build_discriminator, build_generator, build_loss

SIZES = [(1, 28), (3, 32)]


@pytest.mark.parametrize("img_channels,img_size", SIZES, ids=["28x28x1", "32x32x3"])
@pytest.mark.parametrize("model", mnist_models())
def test_shapes_and_range(make_cfg, model, img_channels, img_size):
    cfg = make_cfg(f"model={model}")
    num_classes = 10 if cfg.model.conditional else 0
    info = {"img_channels": img_channels, "img_size": img_size, "num_classes": num_classes}
    G, D = build_generator(cfg.model, info), build_discriminator(cfg.model, info, per_sample=False)
    z = torch.randn(5, cfg.model.z_dim)
    y = torch.randint(0, 10, (5,)) if num_classes else None
    x = G(z, y)
    assert x.shape == (5, img_channels, img_size, img_size)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x, y).shape == (5,)
    # What feature matching reads: the features the head turns into D's output.
    D.eval()
    features = D.features_of(x, y)
    assert features.dim() == 2 and features.shape[0] == 5
    torch.testing.assert_close(D.head(features, y), D(x, y))


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
@pytest.mark.parametrize("img_size", [28, 32, 56, 64])
def test_resize_and_convolve_generators_draw_the_same_sizes(make_cfg, upsample, img_size):
    cfg = make_cfg("model=cdcgan", f"model.G.upsample={upsample}")
    info = {"img_channels": 3, "img_size": img_size, "num_classes": 10}
    G = build_generator(cfg.model, info)
    reference = build_generator(make_cfg("model=cdcgan").model, info)
    layers = [type(m) for m in G.net]
    assert nn.ConvTranspose2d not in layers[1:] and layers.count(nn.Upsample) == len(
        [m for m in reference.net if isinstance(m, nn.ConvTranspose2d)]) - 1
    assert all(m.mode == upsample for m in G.net if isinstance(m, nn.Upsample))
    z, y = torch.randn(2, cfg.model.z_dim), torch.tensor([1, 2])
    assert G(z, y).shape == reference(z, y).shape == (2, 3, img_size, img_size)


@pytest.mark.parametrize("model", [m for m in options("model") if m.startswith("c")])
def test_conditional_outputs_depend_on_the_label(make_cfg, model):
    cfg = make_cfg(f"model={model}")
    assert cfg.model.conditional
    info = {"img_channels": 1, "img_size": 28, "num_classes": 10}
    G, D = build_generator(cfg.model, info).eval(), build_discriminator(cfg.model, info, False).eval()
    z = torch.randn(1, cfg.model.z_dim).repeat(10, 1)  # one z, ten labels
    x = G(z, torch.arange(10))
    assert (x[1:] - x[:1]).abs().flatten(1).amax(1).min() > 1e-4  # every label changes the image
    same_x = x[:1].repeat(10, 1, 1, 1)
    logits = D(same_x, torch.arange(10))
    assert logits.std() > 0  # D scores the same image differently for different labels


def test_the_conditional_tutorials_generator_multiplies_the_label_into_z_and_injects_noise(make_cfg):
    cfg = make_cfg("model=cdcgan", "model.G.cond=multiply", "model.G.noise_injection=true")
    info = {"img_channels": 1, "img_size": 28, "num_classes": 10}
    G = build_generator(cfg.model, info).eval()
    seen = {}
    G.net[0].register_forward_hook(lambda m, args, out: seen.update(first_in=args[0]))
    G.net[2].register_forward_hook(lambda m, args, out: seen.update(block_out=out.clone()))
    G.net[3].register_forward_hook(lambda m, args, out: seen.update(second_in=args[0]))
    z, y = torch.randn(3, cfg.model.z_dim), torch.tensor([0, 4, 9])
    G(z, y)
    # z * embed(y), the size of z: nothing is appended
    assert torch.equal(seen["first_in"], (z * G.cond.embed.weight[y])[:, :, None, None])
    # the first feature map gets tanh(1x1 conv of z), the same at every position
    injected = torch.tanh(G.inject(z[:, :, None, None]))
    assert injected.shape == (3, seen["block_out"].shape[1], 1, 1)
    assert torch.allclose(seen["second_in"], seen["block_out"] + injected)
    # class weights mix the embeddings as labels do
    assert torch.allclose(G(z, nn.functional.one_hot(y, 10).float()), G(z, y), atol=1e-6)


def test_the_conditional_tutorials_discriminator_reads_the_label_as_a_plane_beside_the_image(make_cfg):
    cfg = make_cfg("model=cdcgan", "model.D.cond=channel", "loss=wgan_gp")
    info = {"img_channels": 1, "img_size": 28, "num_classes": 10}
    D = build_discriminator(cfg.model, info, per_sample=True).train()
    seen = {}
    D.features[0].register_forward_hook(lambda m, args, out: seen.update(first_in=args[0]))
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 3, 3, 7])
    out = D(x, y)
    assert seen["first_in"].shape == (4, 2, 28, 28) and torch.equal(seen["first_in"][:, :1], x)
    assert torch.equal(seen["first_in"][:, 1], D.plane.embed.weight[y].view(4, 28, 28))
    assert D.head.embed is None  # the label entered at the input: no projection at the output
    assert torch.allclose(D(x[1:2], y[1:2]), out[1:2], atol=1e-5)  # per sample under the penalty
    assert D(x[:1].repeat(10, 1, 1, 1), torch.arange(10)).std() > 0


@pytest.mark.parametrize("option,words", [("model.G.cond=multiply", "G.cond=multiply needs labels"),
                                          ("model.D.cond=channel", "D.cond=channel needs labels")])
def test_label_conditioning_needs_labels(make_cfg, option, words):
    cfg = make_cfg("model=dcgan", option)
    info = {"img_channels": 1, "img_size": 28, "num_classes": 0}
    with pytest.raises(UserError, match=words):
        build_generator(cfg.model, info) if ".G." in option else build_discriminator(cfg.model, info, False)


@pytest.mark.parametrize("model", [m for m in mnist_models() if not m.startswith("c")])
def test_unconditional_models_ignore_labels_they_have_none_of(make_cfg, model):
    cfg = make_cfg(f"model={model}")
    info = {"img_channels": 1, "img_size": 28, "num_classes": 0}
    G = build_generator(cfg.model, info).eval()
    assert not any(isinstance(m, nn.Embedding) for m in G.modules())


@pytest.mark.parametrize("img_size,expected", [(28, (7, 2)), (32, (4, 3)), (64, (4, 4)), (48, (6, 3))])
def test_dcgan_depth_follows_image_size(img_size, expected):
    assert dcgan.base_size(img_size) == expected


def test_dcgan_rejects_odd_sizes():
    with pytest.raises(ValueError, match="even image size"):
        dcgan.base_size(7)


def test_dcgan_init_is_normal_with_std_002(make_cfg):
    cfg = make_cfg("model=dcgan", "model.G.ngf=64")
    G = build_generator(cfg.model, {"img_channels": 1, "img_size": 28, "num_classes": 0})
    conv_weights = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert conv_weights.std().item() == pytest.approx(0.02, rel=0.05)
    assert conv_weights.mean().abs().item() < 1e-3
    default = make_cfg("model=dcgan", "model.G.ngf=64", "model.init=default")
    G_default = build_generator(default.model, {"img_channels": 1, "img_size": 28, "num_classes": 0})
    w = torch.cat([m.weight.flatten() for m in G_default.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert w.std().item() != pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("model", ["dcgan", "cdcgan"])
def test_gradient_penalty_critic_gets_per_sample_norm_without_being_asked(make_cfg, model):
    info = {"img_channels": 1, "img_size": 28, "num_classes": 10 if model == "cdcgan" else 0}
    gp_cfg = make_cfg(f"model={model}", "loss=wgan_gp")
    loss = build_loss(gp_cfg, 0)
    critic = build_discriminator(gp_cfg.model, info, per_sample=loss.per_sample_critic)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules())
    assert any(isinstance(m, nn.InstanceNorm2d) and m.affine for m in critic.modules())  # per_sample_norm
    # Per sample means what a sample gets does not depend on the rest of the batch.
    critic.train()
    x, y = torch.randn(4, 1, 28, 28), torch.arange(4) if info["num_classes"] else None
    alone = critic(x[:1], None if y is None else y[:1])
    assert torch.allclose(critic(x, y)[:1], alone, atol=1e-5)

    bce_cfg = make_cfg(f"model={model}", "loss=bce")
    D = build_discriminator(bce_cfg.model, info, per_sample=build_loss(bce_cfg, 0).per_sample_critic)
    assert any(isinstance(m, nn.BatchNorm2d) for m in D.modules())

    # GroupNorm with one group (auto's pick before per_sample_norm) is per sample too.
    gp_cfg = make_cfg(f"model={model}", "loss=wgan_gp", "model.D.per_sample_norm=layer")
    critic = build_discriminator(gp_cfg.model, info, per_sample=True).train()
    assert any(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in critic.modules())
    alone = critic(x[:1], None if y is None else y[:1])
    assert torch.allclose(critic(x, y)[:1], alone, atol=1e-5)


def critic_norms(make_cfg, model, loss_name):
    cfg = make_cfg(f"model={model}", f"loss={loss_name}")
    loss = build_loss(cfg, 0)
    D = build_discriminator(cfg.model, {"img_channels": 1, "img_size": 28, "num_classes": 0},
                            per_sample=loss.per_sample_critic, clipped=loss.clipped_critic)
    return {type(m).__name__ for m in D.modules() if "Norm" in type(m).__name__}


def test_clipped_mlp_critic_gets_layer_norm_and_others_keep_theirs(make_cfg):
    # Without a norm, clipped weights shrink every layer's output and the MLP critic turns
    # nearly linear (G then learns one mean blob); LayerNorm keeps its activations at scale.
    assert critic_norms(make_cfg, "gan", "wgan") == {"LayerNorm"}
    assert critic_norms(make_cfg, "gan", "bce") == set()
    assert critic_norms(make_cfg, "gan", "wgan_gp") == set()
    assert critic_norms(make_cfg, "dcgan", "wgan") == {"BatchNorm2d"}  # the conv critic trains fine with it
    assert critic_norms(make_cfg, "gan", "wgan") == critic_norms(make_cfg, "cgan", "wgan")


@pytest.mark.parametrize("model", ["cgan", "cdcgan"])
def test_one_hot_class_weights_condition_like_labels(make_cfg, model):
    # Label interpolation feeds float class weights; a one-hot row must mean its label.
    cfg = make_cfg(f"model={model}")
    G = build_generator(cfg.model, {"img_channels": 1, "img_size": 28, "num_classes": 10}).eval()
    z, y = torch.randn(4, cfg.model.z_dim), torch.tensor([0, 3, 3, 9])
    with torch.no_grad():
        assert torch.allclose(G(z, y), G(z, torch.eye(10)[y]), atol=1e-6)


def test_slerp_keeps_the_norm_where_lerp_shrinks_it():
    from ganctl.sampling.interpolate import lerp, slerp
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    t = torch.tensor([[0.0], [0.5], [1.0]])
    s = slerp(a, b, t)
    assert torch.allclose(s[0], a[0]) and torch.allclose(s[2], b[0])
    assert torch.allclose(s.norm(dim=1), torch.ones(3))
    assert lerp(a, b, t)[1].norm().item() == pytest.approx(2 ** -0.5)
    assert torch.allclose(slerp(a, a, t), a.expand(3, 2))  # parallel: no division by zero


def test_conditional_batchnorm_generator_is_steered_by_the_label_at_every_layer(make_cfg):
    from ganctl.nets.layers import ConditionalBatchNorm2d
    cfg = make_cfg("model=cdcgan", "model.G.cbn=true")
    G = build_generator(cfg.model, {"img_channels": 1, "img_size": 28, "num_classes": 10})
    cbns = [m for m in G.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(cbns) == 2  # one per BatchNorm of the 28x28 generator
    z, y = torch.randn(6, cfg.model.z_dim), torch.tensor([0, 1, 2, 3, 4, 5])
    assert G(z, y).shape == (6, 1, 28, 28)
    with torch.no_grad():
        cbns[0].gain[3] += 1.0  # class 3's scale only
    G.eval()
    with torch.no_grad():
        a = G(z, torch.full((6,), 3))
        b = G(z, torch.full((6,), 4))
        cbns[0].gain[3] -= 1.0
        assert not torch.allclose(a, G(z, torch.full((6,), 3)))
        assert torch.allclose(b, G(z, torch.full((6,), 4)))


def test_minibatch_std_feature_is_the_spread_of_the_group():
    from ganctl.nets.layers import MinibatchStd
    x = torch.zeros(4, 2, 3, 3)
    x[0] = 1.0  # one sample of the group of 4 differs by 1 everywhere: std = sqrt(3/16)
    out = MinibatchStd(group=4)(x)
    assert out.shape == (4, 3, 3, 3)
    assert torch.allclose(out[:, 2], torch.full((4, 3, 3), (3 / 16) ** 0.5), atol=1e-4)
    assert MinibatchStd(group=4)(torch.ones(4, 2, 3, 3))[:, 2].abs().max() < 1e-3  # no spread, no signal


def test_minibatch_std_is_turned_off_under_a_gradient_penalty(make_cfg, caplog):
    from ganctl.nets.layers import MinibatchStd
    info = {"img_channels": 1, "img_size": 28, "num_classes": 0}
    for loss_name, expected in (("bce", True), ("wgan_gp", False)):
        cfg = make_cfg("model=dcgan", f"loss={loss_name}", "model.D.mbstd=true")
        loss = build_loss(cfg, 0)
        D = build_discriminator(cfg.model, info, per_sample=loss.per_sample_critic)
        assert any(isinstance(m, MinibatchStd) for m in D.modules()) == expected
        assert D(torch.randn(8, 1, 28, 28)).shape == (8,)
    assert "mbstd is off" in caplog.text


@pytest.mark.parametrize("model", [m for m in options("model") if m.startswith("c")])
def test_auxiliary_classifier_gives_class_logits_beside_the_logit(make_cfg, model):
    cfg = make_cfg(f"model={model}")
    info = {"img_channels": 1, "img_size": 28, "num_classes": 10}
    D = build_discriminator(cfg.model, info, per_sample=False, aux=True)
    logits, class_logits = D(torch.randn(5, 1, 28, 28), torch.randint(0, 10, (5,)))
    assert logits.shape == (5,) and class_logits.shape == (5, 10)
    unconditional = build_discriminator(cfg.model, {**info, "num_classes": 0}, per_sample=False, aux=True)
    assert unconditional(torch.randn(5, 1, 28, 28)).shape == (5,)  # no labels, no classifier


def test_mlp_discriminator_with_projection_takes_the_label_at_its_output(make_cfg):
    cfg = make_cfg("model=cgan", "model.D.projection=true")
    info = {"img_channels": 1, "img_size": 28, "num_classes": 10}
    D = build_discriminator(cfg.model, info, per_sample=False).eval()
    first = next(m for m in D.modules() if isinstance(m, nn.Linear))
    assert first.in_features == 28 * 28  # the image alone: no label embedding concatenated
    logits = D(torch.randn(1, 1, 28, 28).repeat(10, 1, 1, 1), torch.arange(10))
    assert logits.std() > 0  # the same image scores differently under different labels


@pytest.mark.parametrize("model", mnist_models())
def test_spectral_norm_holds_every_discriminator_layer_at_unit_gain(make_cfg, model):
    cfg = make_cfg(f"model={model}", "model.D.spectral_norm=true")
    info = {"img_channels": 1, "img_size": 28, "num_classes": 10 if cfg.model.conditional else 0}
    D = build_discriminator(cfg.model, info, per_sample=False)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    if cfg.model.init == "dcgan":  # the init reached the stored weights, not a computed copy
        assert abs(layers[0].parametrizations.weight.original.std().item() - 0.02) < 0.005
    y = torch.randint(0, 10, (16,)) if cfg.model.conditional else None
    for _ in range(30):  # each training forward runs one power iteration
        D(torch.randn(16, 1, 28, 28), y)
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert abs(sigma.item() - 1) < 0.05, (m, sigma)


def test_packed_discriminator_scores_each_pack_from_all_its_members():
    # eval: BatchNorm's running statistics, no mixing
    D = dcgan.Discriminator(1, 28, ndf=64, norm="batch", per_sample_norm="layer", mbstd=False, spectral_norm=False,
                            pack=2, cond="projection").eval()
    x = torch.randn(6, 1, 28, 28)
    out = D(x)
    assert out.shape == (3,)  # one logit per pack of two consecutive samples
    changed = x.clone()
    changed[3] = torch.randn(1, 28, 28)  # the second member of the second pack
    moved = (D(changed) - out).abs()
    assert moved[1] > 1e-6 and moved[0] == 0 and moved[2] == 0
    with pytest.raises(ValueError, match="does not split into packs of 2"):
        D(x[:5])


def test_packing_is_turned_off_under_a_gradient_penalty(make_cfg, caplog):
    info = {"img_channels": 1, "img_size": 28, "num_classes": 0}
    cfg = make_cfg("model=dcgan", "loss=wgan_gp", "model.D.pack=2")
    D = build_discriminator(cfg.model, info, per_sample=build_loss(cfg, 0).per_sample_critic)
    assert D(torch.randn(4, 1, 28, 28)).shape == (4,)
    assert "pack is off" in caplog.text


@pytest.mark.parametrize("noise", ["normal", "uniform"])
def test_generator_codes_are_read_from_z_and_uniform(make_cfg, noise):
    from ganctl.training.step import sample_noise
    cfg = make_cfg("model=dcgan", "model.G.codes=10", "model.aux_weight=1.0")
    info = {"img_channels": 1, "img_size": 28, "num_classes": 0}
    G = build_generator(cfg.model, info).eval()
    z = sample_noise(20_000, cfg.model.z_dim, noise, "cpu", torch.Generator().manual_seed(0))
    codes = G.code(z)
    assert torch.equal(codes, z[:, :10].argmax(1))
    shares = torch.bincount(codes, minlength=10) / len(codes)
    assert (shares - 0.1).abs().max() < 0.01  # 3 standard errors at 20,000 draws
    swapped = z[:2].clone()  # same values, the largest of the first ten moved elsewhere: a new code
    first = swapped[0, :10].argmax()
    swapped[0, [first, (first + 1) % 10]] = swapped[0, [(first + 1) % 10, first]]
    assert not torch.equal(G.code(swapped), G.code(z[:2]))
    assert (G(swapped)[0] - G(z[:2])[0]).abs().max() > 1e-4
    D = build_discriminator(cfg.model, info, per_sample=False, aux=True)
    logits, code_logits = D(torch.randn(4, 1, 28, 28))
    assert logits.shape == (4,) and code_logits.shape == (4, 10)


@pytest.mark.parametrize("img_size,blocks", [(32, 3), (64, 4), (128, 5)])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_resnet_shapes_depth_and_label_use_follow_the_data(make_cfg, img_size, blocks, num_classes):
    cfg = make_cfg("model=resnet")
    info = {"img_channels": 3, "img_size": img_size, "num_classes": num_classes}
    G, D = build_generator(cfg.model, info), build_discriminator(cfg.model, info, per_sample=False)
    assert len(G.blocks) == len(D.blocks) == blocks  # 4x4 doubled (halved) once per block
    y = torch.randint(0, 10, (3,)) if num_classes else None
    x = G(torch.randn(3, cfg.model.z_dim), y)
    assert x.shape == (3, 3, img_size, img_size) and x.min() >= -1 and x.max() <= 1
    D.eval()
    torch.testing.assert_close(D.head(D.features_of(x, y), y), D(x, y))
    assert D(x, y).shape == (3,)
    labelled = any(isinstance(m, nn.Embedding) for m in D.modules())
    assert labelled == bool(num_classes) and all(  # SNGAN's D: every weight spectrally normalised
        parametrize.is_parametrized(m, "weight") for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_resnet_refuses_other_sizes_in_one_line(make_cfg):
    cfg = make_cfg("model=resnet")
    with pytest.raises(UserError, match="model=resnet needs dataset.img_size 32, 64, 128, got 28"):
        build_generator(cfg.model, {"img_channels": 1, "img_size": 28, "num_classes": 10})


def test_a_checkpoint_from_before_per_sample_norm_keeps_its_groupnorm_critic(make_cfg):
    # Its config says norm=auto and has no per_sample_norm: auto then meant GroupNorm with one
    # group, whose weights have the same names and shapes as InstanceNorm's (a silent mismatch).
    from omegaconf import OmegaConf
    from ganctl.run.checkpoint import add_missing_keys
    cfg = OmegaConf.to_container(make_cfg("model=dcgan", "loss=wgan_gp"))
    del cfg["model"]["D"]["per_sample_norm"]
    add_missing_keys(cfg)
    critic = build_discriminator(cfg["model"], {"img_channels": 1, "img_size": 28, "num_classes": 0}, per_sample=True)
    assert any(isinstance(m, nn.GroupNorm) for m in critic.modules())
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in critic.modules())


@pytest.mark.parametrize("model,clusters", [("dcgan", 0), ("cdcgan", 0), ("gan", None), ("resnet", None)])
def test_a_checkpoint_from_before_clusters_is_plain_and_only_dcgan_nets_gain_the_key(make_cfg, model, clusters):
    # Resuming an old gan or resnet run must not report model.clusters as a changed key.
    from omegaconf import OmegaConf
    from ganctl.run.checkpoint import add_missing_keys
    cfg = OmegaConf.to_container(make_cfg(f"model={model}"))
    cfg["model"].pop("clusters", None)
    add_missing_keys(cfg)
    assert cfg["model"].get("clusters") == clusters


def test_per_sample_norm_must_be_per_sample(make_cfg):
    cfg = make_cfg("model=dcgan", "model.D.per_sample_norm=batch")
    with pytest.raises(UserError, match="per_sample_norm must be one of layer, instance, got 'batch'"):
        build_discriminator(cfg.model, {"img_channels": 1, "img_size": 28, "num_classes": 0}, per_sample=True)
