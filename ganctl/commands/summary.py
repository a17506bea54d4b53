"""`ganctl summary`: the generator and discriminator that `ganctl train` would build (or a run
saved), as layer tables from torchinfo: output shape and parameters per layer, totals and
multiply-adds per image. Nothing is trained and no image is read.

    ganctl summary model=cdcgan dataset=cifar10
    ganctl summary ckpt=outputs/<day>/<run>
"""
import copy
from pathlib import Path

import torch
from omegaconf import DictConfig

from ganctl import data
from ganctl.config.build import plain, resolve_target
from ganctl.run.checkpoint import load_checkpoint, resolve_checkpoint, run_config
from ganctl.training.memory import footprint, refuse_if_too_large
from ganctl.training.wiring import build_discriminator, build_generator, build_loss, conditioning, labels_of, planned_info


def nets(cfg: DictConfig, data_info: dict) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """G and D as `ganctl train` builds them for this config and data (before DDP or compile), and
    the data_info they were built for (num_classes: what the model is conditioned on)."""
    num_classes = conditioning(cfg.model, data_info["num_classes"], cfg.trainer.batch_size)
    info = planned_info(cfg.model, data_info, num_classes)
    loss = build_loss(cfg, num_classes)
    G = build_generator(cfg.model, info, cfg.trainer.noise)
    D = build_discriminator(cfg.model, info, per_sample=loss.per_sample_critic, clipped=loss.clipped_critic,
                            aux=loss.aux_weight > 0)
    return G, D, info


def plain_weights(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of `net` with spectral norm's parametrized weights made plain tensors of the same
    size: torchinfo counts no multiply-adds for a layer whose `weight` is not a parameter."""
    from torch.nn.utils import parametrize
    net = copy.deepcopy(net)
    for m in net.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight")
    return net


def tables(G: torch.nn.Module, D: torch.nn.Module, info: dict, z_dim: int, depth: int) -> list:
    """torchinfo's statistics of G (a batch of latents) and D (a batch of images), in eval mode.
    The batch is one image, or D's pack of them."""
    from torchinfo import summary  # imported by this command only
    G, D = plain_weights(G), plain_weights(D)
    batch = getattr(D, "pack", 1) or 1
    y = torch.zeros(batch, dtype=torch.long) if labels_of(info) else None
    x = torch.zeros(batch, info["img_channels"], info["img_size"], info["img_size"])
    columns = ("output_size", "num_params", "mult_adds")
    return [summary(net, input_data=[inputs] if y is None else [inputs, y], depth=depth, col_names=columns,
                    mode="eval", device="cpu", verbose=0)
            for net, inputs in ((G, torch.zeros(batch, z_dim)), (D, x))]


def run_summary(cfg: DictConfig) -> tuple:
    """The command: print both tables; (G's, D's statistics)."""
    if cfg.ckpt:
        path = resolve_checkpoint(cfg.ckpt, "outputs")
        state = load_checkpoint(Path(path))
        run_cfg = run_config(state)
        data_info = dict(state["data"])
        where = f"{path} (its saved config)"
    else:
        run_cfg = cfg
        dataset = plain(cfg.dataset)
        data_info = data.shape(resolve_target(dataset["_target_"], "dataset"), dataset)
        where = "the composed config"
    with torch.device("meta"):  # sized first without memory: a config can ask for more than there is
        G, D, info = nets(run_cfg, data_info)
        fp = footprint(G, D, getattr(D, "pack", 1) or 1, run_cfg.model.z_dim, labels_of(info))
    refuse_if_too_large(f"model={run_cfg.model.name} on {info['img_size']} px images",
                        2 * (fp["G"] + fp["D"]) + fp["G_acts"] + fp["D_acts"], "cpu",
                        "lower dataset.img_size or the model's widths")
    G, D, info = nets(run_cfg, data_info)
    stats = tables(G, D, info, run_cfg.model.z_dim, cfg.depth)
    classes = (f", {info['num_classes']} classes" if info["num_classes"] else
               f", {len(info['clusters'])} clusters of its images" if info.get("clusters") else "")
    print(f"model={run_cfg.model.name}, images {info['img_channels']}x{info['img_size']}x{info['img_size']}"
          f"{classes}, from {where}")
    for name, s in zip(("G", "D"), stats):
        batch = s.input_size[0][0] if s.input_size else 1
        print(f"\n{name}: {s.total_params:,} parameters, {s.total_mult_adds / batch / 1e6:,.1f}M multiply-adds "
              f"per image")
        print(s)
    return tuple(stats)
