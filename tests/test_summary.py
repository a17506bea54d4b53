"""`ganctl summary`: the layer tables describe the very nets that `ganctl train` builds."""
import re

import pytest
import torch
from omegaconf import open_dict

from conftest import mnist_models, one_line_error
from ganctl import data
from ganctl.config.build import build, plain, resolve_target
from ganctl.run.checkpoint import load_checkpoint
from ganctl.training.distributed import Ranks
from ganctl.training.loop import load_data
from ganctl.training.wiring import build_step
from ganctl.commands.summary import nets, run_summary, tables


def totals(stdout: str) -> list[int]:
    """The "Total params: N" of each torchinfo table printed."""
    return [int(n.replace(",", "")) for n in re.findall(r"Total params: ([\d,]+)", stdout)]


def trained_nets(cfg):
    """G and D as the training loop builds them (ganctl.training.loop._train's own calls)."""
    _, info, loss = load_data(cfg, Ranks(), torch.device("cpu"))
    step, _ = build_step(cfg, info, loss, torch.device("cpu"))
    return step.G, step.D


@pytest.mark.parametrize("overrides", [(f"model={m}",) for m in mnist_models()] + [("model=resnet", "dataset=cifar10"),
    ("model=cdcgan", "dataset=cifar10"), ("model=dcgan", "loss=wgan_gp"), ("model=dcgan", "model.D.pack=2", "model.clusters=0"),
    ("model=gan", "loss=wgan"), ("model=dcgan", "model.G.codes=10", "model.aux_weight=1", "model.clusters=0")])
def test_totals_are_the_parameters_that_train_builds(make_cfg, cifar_files_pass_their_checksums, capsys,
                                                     overrides):
    cfg = make_cfg(*overrides)
    loaded = build(cfg.dataset, "dataset", device="cpu")
    # The data's shape comes from the config alone, and is the loaded data's.
    assert data.shape(resolve_target(cfg.dataset._target_, "dataset"), plain(cfg.dataset)) == {
        "img_channels": loaded.img_channels, "img_size": loaded.img_size, "num_classes": loaded.num_classes}
    G, D = trained_nets(cfg)
    with open_dict(cfg):
        cfg.ckpt, cfg.depth = None, 3
    stats = run_summary(cfg)
    expected = [sum(p.numel() for p in net.parameters()) for net in (G, D)]
    assert [s.total_params for s in stats] == expected
    assert totals(capsys.readouterr().out) == expected
    assert all(s.total_mult_adds > 0 for s in stats)  # spectral norm's D (resnet) too


def test_spectral_norm_leaves_the_multiply_adds_as_they_are(make_cfg):
    info = {"img_channels": 1, "img_size": 28, "num_classes": 0}
    (G, plain_D, built), (_, normed_D, _) = (nets(make_cfg("model=dcgan", f"model.D.spectral_norm={on}"), info)
                                             for on in ("false", "true"))
    stats = [tables(G, D, built, G.z_dim, depth=3)[1] for D in (plain_D, normed_D)]
    assert stats[0].total_mult_adds == stats[1].total_mult_adds > 0


def test_the_cli_prints_both_tables_and_writes_nothing(ganctl, tmp_path):
    code, out, err = ganctl("summary", "model=cdcgan", "dataset=cifar10", cwd=tmp_path)
    assert code == 0, err
    assert "images 3x32x32, 10 classes" in out and out.count("multiply-adds per image") == 2
    assert len(totals(out)) == 2
    assert not list(tmp_path.iterdir())


def test_a_run_is_summarised_from_its_saved_config(ganctl, tiny_run, tmp_path):
    state = load_checkpoint(tiny_run / "checkpoints" / "last.pt")
    code, out, err = ganctl("summary", f"ckpt={tiny_run}", cwd=tmp_path)
    assert code == 0, err
    # Parameters are the saved state_dict's entries less BatchNorm's buffers.
    assert totals(out) == [sum(v.numel() for k, v in state[net].items()
                               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
                           for net in ("G", "D")]


def test_a_folders_classes_are_its_subfolders(ganctl, image_folder, tmp_path):
    code, out, err = ganctl("summary", "model=cdcgan", "dataset=folder", f"dataset.root={image_folder}",
                            "dataset.img_size=32", cwd=tmp_path)
    assert code == 0, err
    assert "images 3x32x32, 2 classes" in out


@pytest.mark.parametrize("args,words", [
    (("model=cdcgan", "dataset=folder", "dataset.root=nowhere"), ["nowhere", "not a folder"]),
    (("ckpt=nowhere",), ["nowhere", "does not exist"]),
    (("model=dcgan", "model.D.pack=3", "trainer.batch_size=64"), ["pack=3", "batch_size"]),
    (("depth=0",), ["depth=0", ">= 1"]),
])
def test_summary_mistakes_are_one_line(tmp_path, ganctl, args, words):
    one_line_error(*ganctl("summary", *args, cwd=tmp_path)[::2], *words)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_from_before_the_newer_keys_loads_as_it_was_trained(ganctl, tiny_run, tmp_path):
    path = tiny_run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    G, D = state["cfg"]["model"]["G"], state["cfg"]["model"]["D"]
    del G["upsample"], G["cond"], G["noise_injection"], D["cond"], state["cfg"]["loss"]["feature_matching"]
    torch.save(state, path)
    loaded = load_checkpoint(path)
    G, D = loaded["cfg"]["model"]["G"], loaded["cfg"]["model"]["D"]
    assert (G["upsample"], G["cond"], G["noise_injection"], D["cond"]) == ("transposed", "concat", False, "projection")
    assert loaded["cfg"]["loss"]["feature_matching"] == 0
    for args in (("summary", f"ckpt={tiny_run}"), ("sample", f"ckpt={tiny_run}", "n=4", "out=x.png")):
        code, _, err = ganctl(*args, cwd=tmp_path)
        assert code == 0, err
