"""Every option of every config group composes and instantiates; the schemas reject bad keys/types."""
import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate

from conftest import GROUPS, mnist_models, options
from ganctl.training.losses import Loss
from ganctl.training.wiring import build_discriminator, build_generator, build_loss


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ is empty"


@pytest.mark.parametrize("model", mnist_models())
def test_model_options(make_cfg, model):
    cfg = make_cfg(f"model={model}")
    info = {"img_channels": 1, "img_size": 28, "num_classes": 10 if cfg.model.conditional else 0}
    G, D = build_generator(cfg.model, info), build_discriminator(cfg.model, info, per_sample=False)
    y = torch.tensor([0, 1]) if info["num_classes"] else None
    fake = G(torch.randn(2, cfg.model.z_dim), y)
    assert fake.shape == (2, 1, 28, 28) and D(fake, y).shape == (2,)
    assert cfg.model.name == model


@pytest.mark.parametrize("loss", options("loss"))
def test_loss_options(make_cfg, loss):
    cfg = make_cfg(f"loss={loss}")
    fn = build_loss(cfg, 0)
    assert isinstance(fn, Loss)
    assert fn.n_critic == (5 if loss.startswith("wgan") else 1)


@pytest.mark.parametrize("pair", options("model_loss"))
def test_pair_defaults_name_a_real_pair_and_change_its_model(make_cfg, pair):
    # A misnamed file (cgan_wgangp.yaml) would silently never load.
    model, loss = pair.split("_", 1)
    assert model in options("model") and loss in options("loss")
    assert make_cfg(f"model={model}", f"loss={loss}").model != make_cfg(f"model={model}").model


@pytest.mark.parametrize("pair", options("model_dataset"))
def test_model_dataset_defaults_name_a_real_pair_and_change_its_model(make_cfg, pair):
    model, dataset = pair.split("_", 1)
    assert model in options("model") and dataset in options("dataset")
    assert make_cfg(f"model={model}", f"dataset={dataset}").model != make_cfg(f"model={model}").model


def test_a_folder_gets_the_plain_dcgan_and_diffaugment_unless_told(make_cfg):
    assert make_cfg().model.clusters == 30 and make_cfg("dataset=folder").model.clusters == 0
    assert make_cfg("dataset=folder", "model.clusters=10").model.clusters == 10
    diffaug = make_cfg("augment=diffaug").augment
    assert make_cfg("dataset=folder").augment == diffaug and make_cfg("dataset=folder", "model=cdcgan").augment == diffaug
    assert make_cfg().augment.policy == [] and make_cfg("dataset=fashion_mnist").augment.policy == []
    assert make_cfg("dataset=folder", "augment=none").augment.policy == []
    assert make_cfg("dataset=folder", "augment=ada").augment == make_cfg("augment=ada").augment


def test_cgan_with_weight_clipping_weighs_its_classifier_twice_unless_told(make_cfg):
    own = make_cfg("model=cgan").model.aux_weight
    assert make_cfg("model=cgan", "loss=wgan").model.aux_weight == 2 * own
    assert make_cfg("model=cgan", "loss=wgan_gp").model.aux_weight == own
    assert make_cfg("model=cgan", "loss=wgan", "model.aux_weight=0.5").model.aux_weight == 0.5


@pytest.mark.parametrize("dataset", options("dataset"))
def test_dataset_options(make_cfg, dataset, image_folder, request):
    if dataset == "cifar10":
        request.getfixturevalue("cifar_files_pass_their_checksums")
    extra = [f"dataset.root={image_folder}", "dataset.img_size=16", "dataset.num_workers=0"] if dataset == "folder" else []
    cfg = make_cfg(f"dataset={dataset}", *extra)
    data = instantiate(cfg.dataset, device="cpu", seed=0)
    x, y = next(data.epoch(0, batch_size=8))
    assert x.shape == (8, data.img_channels, data.img_size, data.img_size)
    assert x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64 and 0 <= y.min() and y.max() < data.num_classes


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_optimizer_options_give_g_and_d_their_own_learning_rates(make_cfg, optimizer):
    cfg = make_cfg(f"optimizer={optimizer}", "optimizer.lr_g=1e-4", "optimizer.lr_d=3e-4")
    opt_G = instantiate(cfg.optimizer.G)([torch.nn.Parameter(torch.zeros(2))])
    opt_D = instantiate(cfg.optimizer.D)([torch.nn.Parameter(torch.zeros(2))])
    assert type(opt_G).__name__.lower() == optimizer
    assert opt_G.param_groups[0]["lr"] == 1e-4 and opt_D.param_groups[0]["lr"] == 3e-4


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_rates_default_to_the_models_own_and_yield_to_an_override(make_cfg, optimizer):
    cfg = make_cfg("model=dcgan", f"optimizer={optimizer}", "model.lr=5e-4")
    opt = instantiate(cfg.optimizer.G)([torch.nn.Parameter(torch.zeros(2))])
    assert opt.param_groups[0]["lr"] == cfg.optimizer.lr_d == 5e-4
    gan, dcgan = make_cfg("model=gan", f"optimizer={optimizer}"), make_cfg(f"optimizer={optimizer}")
    assert gan.optimizer.lr_g == gan.model.lr != dcgan.optimizer.lr_g == dcgan.model.lr
    cfg = make_cfg("model=gan", f"optimizer={optimizer}", "optimizer.lr_d=3e-4")
    assert (cfg.optimizer.lr_g, cfg.optimizer.lr_d) == (gan.model.lr, 3e-4)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_betas_default_to_the_models_own_and_yield_to_an_override(make_cfg, optimizer):
    def betas(*overrides):
        cfg = make_cfg(f"optimizer={optimizer}", *overrides)
        return [instantiate(cfg.optimizer[net])([torch.nn.Parameter(torch.zeros(2))]).param_groups[0]["betas"]
                for net in ("G", "D")]
    # Measured per model (docs/results.md): no momentum for the DCGAN and MLP models, SNGAN's for resnet.
    assert betas("model=dcgan") == betas("model=cdcgan") == betas("model=gan") == betas("model=cgan") == [(0.0, 0.99)] * 2
    assert betas("model=resnet") == [(0.0, 0.9)] * 2
    assert betas("model=gan", "model.betas=[0.9,0.95]") == [(0.9, 0.95)] * 2
    assert betas("model=dcgan", "optimizer.betas=[0.5,0.9]") == [(0.5, 0.9)] * 2


def test_adamw_weight_decay_and_adam_betas_reach_the_optimizer(make_cfg):
    cfg = make_cfg("optimizer=adamw", "optimizer.weight_decay=0.05", "optimizer.betas=[0.0,0.9]")
    opt = instantiate(cfg.optimizer.D)([torch.nn.Parameter(torch.zeros(2))])
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[0]["betas"] == (0.0, 0.9)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_options(make_cfg, trainer):
    cfg = make_cfg(f"trainer={trainer}")
    assert cfg.trainer.batch_size == 16  # the shrink overrides applied on top


@pytest.mark.parametrize("override,says", [
    ("trainer.batch_size=abc", "could not be converted to Integer"),
    ("trainer.precision=fp16", "Invalid value 'fp16'"),
    ("trainer.noise=cauchy", "Invalid value 'cauchy'"),
    ("loss.gp_weight=abc", "could not be converted to Float"),
    ("trainer.batchsize=64", "Key 'batchsize' not in 'TrainerConfig'"),
    ("model.G.ngf=wide", "could not be converted to Integer"),
])
def test_schema_rejects_misspelt_keys_and_wrong_types(make_cfg, override, says):
    extra = ["loss=wgan_gp"] if override.startswith("loss.gp") else []
    with pytest.raises(ConfigCompositionException) as e:
        make_cfg(*extra, override)
    full = f"{e.value} {e.value.__cause__}"
    assert override.split("=")[0] in full and says in full


def test_unknown_model_lists_the_available_ones(make_cfg):
    with pytest.raises(MissingConfigException) as e:
        make_cfg("model=stylegan")
    for model in options("model"):
        assert model in str(e.value)


def test_each_range_is_written_once():
    # A key's range lives beside its type in the schema, or (needing the code's own lists) in
    # ranges.CODE_RULES, never both; _rules_of refuses two schema ranges for one key.
    from ganctl.config.ranges import CODE_RULES, COMMANDS, _rules_of
    found = {}
    for cls in COMMANDS:
        _rules_of(cls, "", found)
    assert {"trainer.batch_size", "model.G.ngf", "loss.r1", "augment.ada.kimg", "seed"} <= set(found)
    assert not set(found) & set(CODE_RULES)
