"""The networks, the loss and the training step a run is made of, built from the config's nodes
(ganctl.config.build checks what they name), and a generator rebuilt from a saved run.

    loss = build_loss(cfg, num_classes)
    step, ema = build_step(cfg, data_info, loss, device)
    G = load_generator(state, path, "G_ema", device)          # from a loaded checkpoint
"""
import logging
from pathlib import Path

import torch

from ganctl.training import distributed
from ganctl.training.augment import AdaptiveP, Augmented
from ganctl.config.build import build
from ganctl.run.checkpoint import all_finite
from ganctl.training.ema import AveragedGenerator
from ganctl.errors import UserError
from ganctl.training.memory import footprint, refuse_if_too_large, training_bytes
from ganctl.nets.layers import dcgan_init
from ganctl.training.step import TrainStep, compiled

log = logging.getLogger(__name__)


def build_generator(model_cfg, data_info: dict, noise: str = "normal") -> torch.nn.Module:
    """G for `data_info`; where it holds `clusters` (self-conditioning), G is conditioned on them and
    draws them from z of law `noise`."""
    info = dict(data_info)
    clusters = info.pop("clusters", None)
    extra = {"clusters": clusters, "noise": noise} if clusters else {}
    G = build(model_cfg["G"], "model.G", z_dim=model_cfg["z_dim"], **info, **extra)
    if model_cfg["init"] == "dcgan":
        dcgan_init(G)
    return G


def build_discriminator(model_cfg, data_info: dict, per_sample: bool, clipped: bool = False,
                        aux: bool = False) -> torch.nn.Module:
    """D for the loss's traits: `per_sample` (a per-sample gradient penalty), `clipped` (weight
    clipping) and `aux` (a second head: labels, or InfoGAN's codes read back). Each network
    resolves its own `norm=auto` from them."""
    kwargs = {k: v for k, v in data_info.items() if k not in ("z_dim", "clusters")}
    if data_info.get("clusters"):  # self-conditioning: D is told the cluster as a label
        kwargs["num_classes"] = len(data_info["clusters"])
    if aux:
        kwargs["aux"] = True
    if aux and model_cfg["G"].get("codes"):  # InfoGAN: D reads G's code back
        kwargs["codes"] = model_cfg["G"]["codes"]
    D = build(model_cfg["D"], "model.D", per_sample=per_sample, clipped=clipped, **kwargs)
    if model_cfg["init"] == "dcgan":
        dcgan_init(D)
    return D


def build_loss(cfg, num_classes: int):
    """The loss with trainer.label_smoothing and, for models with labels, codes or clusters, model.aux_weight."""
    heads = num_classes or cfg.model.G.get("codes", 0) or cfg.model.get("clusters", 0)
    loss = build(cfg.loss, "loss", label_smoothing=cfg.trainer.label_smoothing,
                 aux_weight=cfg.model.aux_weight if heads else 0.0, real_signs=cfg.augment.ada is not None)
    if cfg.model.aux_weight and not heads:
        log.warning("model.aux_weight has no effect on model=%s (it has no labels or codes)", cfg.model.name)
    if cfg.trainer.label_smoothing and not loss.uses_targets:
        log.warning("trainer.label_smoothing has no effect on %s (it has no targets)", type(loss).__name__)
    return loss


def conditioning(model_cfg, num_classes: int, batch_size: int) -> int:
    """The rules that tie a model to its data's classes, in one place: the number of classes the
    model is conditioned on (0 for an unconditional model)."""
    name, conditional = model_cfg["name"], model_cfg["conditional"]
    if conditional and num_classes < 2:
        raise UserError(f"model={name} is conditional but the dataset has {num_classes} class; "
                        f"use an unconditional model")
    if conditional is None:  # as the data: labels where it has classes
        conditional = num_classes >= 2
    num_classes = num_classes if conditional else 0
    if model_cfg["G"].get("codes") and num_classes:
        raise UserError(f"model.G.codes={model_cfg['G']['codes']} needs an unconditional model (InfoGAN's codes "
                        f"stand in for labels); got model={name}")
    clusters = model_cfg.get("clusters", 0)
    if clusters and (num_classes or model_cfg["G"].get("codes")):
        raise UserError(f"model.clusters={clusters} conditions an unconditional model on clusters of its images; "
                        f"model={name} " + ("has labels" if num_classes else "has model.G.codes")
                        + ": set model.clusters=0")
    if clusters and model_cfg["z_dim"] < 2:
        raise UserError(f"model.clusters={clusters} draws the cluster from z's first entry: model.z_dim must be at least 2")
    labels = {"G": num_classes or model_cfg["G"].get("codes") or clusters,  # what each net is conditioned on
              "D": num_classes or clusters}
    label_inputs = [f"model.{net}.cond={model_cfg[net]['cond']}" for net, plain in (("G", "concat"), ("D", "projection"))
                    if model_cfg[net].get("cond", plain) != plain and not labels[net]]
    if label_inputs:
        raise UserError(f"{' and '.join(label_inputs)} needs labels: a conditional model (model=cdcgan) "
                        f"and a dataset with classes; got model={name}")
    pack = model_cfg["D"].get("pack", 1)
    if pack > 1 and (num_classes or clusters or batch_size % pack):
        raise UserError(f"model.D.pack={pack} needs an unconditional model (model.clusters=0) and a trainer.batch_size that "
                        f"it divides; got model={name}, trainer.batch_size={batch_size}")
    return num_classes


def labels_of(data_info: dict) -> int:
    """How many labels the nets are conditioned on: the classes, or the clusters that stand in for them."""
    return data_info["num_classes"] or len(data_info.get("clusters") or ())


def planned_info(model_cfg, data_info: dict, num_classes: int) -> dict:
    """`data_info` as the nets are built for it before the data is read: `num_classes` the model is
    conditioned on, and equal sizes standing in for its clusters (their sizes change no weight)."""
    clusters = model_cfg.get("clusters", 0)
    return {**data_info, "num_classes": num_classes, **({"clusters": [1] * clusters} if clusters else {})}


def check_compatible(model_cfg, data, batch_size: int, world_size: int = 1) -> int:
    """conditioning() for a loaded dataset, and a batch that the dataset can fill."""
    num_classes = conditioning(model_cfg, data.num_classes, batch_size)
    empty = [name for name, size in zip(data.class_names, data.class_sizes()) if size == 0]
    if num_classes and empty:  # G would be asked for a class that D never saw a real image of
        raise UserError(f"{len(empty)} of {num_classes} classes have no images ({', '.join(map(repr, empty[:5]))}: "
                        f"an empty folder, or too small a dataset.limit); model={model_cfg['name']} is conditional "
                        f"and would learn labels it never sees: remove them or use an unconditional model")
    if data.batches_per_epoch(batch_size) == 0:
        raise UserError(f"trainer.batch_size={batch_size} is larger than the dataset ({len(data)} images)"
                        + (f" for {world_size} processes" if world_size > 1 else ""))
    return num_classes


def _nets(cfg, data_info: dict, loss) -> tuple[torch.nn.Module, torch.nn.Module]:
    """G and D as the config, the data and the loss's traits ask."""
    return build_generator(cfg.model, data_info, cfg.trainer.noise), build_discriminator(
        cfg.model, data_info, per_sample=loss.per_sample_critic, clipped=loss.clipped_critic, aux=loss.aux_weight > 0)


def refuse_too_large(cfg, data_info: dict, loss, device) -> None:
    """One line, before anything is allocated, where training G and D on this data would take more
    memory than `device` has free (G and D are sized on the meta device)."""
    B = cfg.trainer.batch_size
    with torch.device("meta"):
        need = training_bytes(footprint(*_nets(cfg, data_info, loss), B, cfg.model.z_dim, labels_of(data_info)))
    refuse_if_too_large(f"training model={cfg.model.name} on {data_info['img_size']} px images at "
                        f"trainer.batch_size={B}", need, device,
                        "lower dataset.img_size, trainer.batch_size or the model's widths")


def build_step(cfg, data_info: dict, loss, device, autocast=None,
               ranks: distributed.Ranks = distributed.Ranks()) -> tuple[TrainStep, AveragedGenerator | None]:
    """The TrainStep that `ganctl train` (and the benchmark) runs, and the moving average of G
    (None with trainer.ema_decay=0): G and D built on `device`, in channels_last, wrapped in DDP
    under torchrun and compiled as trainer.* asks, with their optimizers. step.G, step.D are the
    modules saved."""
    tcfg = cfg.trainer
    G, D = (net.to(device) for net in _nets(cfg, data_info, loss))
    if tcfg.channels_last:  # before anything copies, wraps or optimises them
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    # An exponential moving average of G's weights draws the sample grids and is what
    # `ganctl sample` uses: it is smoother than G's last iterate (Yazici et al. 2019).
    ema = (AveragedGenerator(G, tcfg.ema_decay, tcfg.ema_warmup, tcfg.ema_bn_batches, tcfg.batch_size,
                             cfg.model.z_dim, tcfg.noise, data_info["num_classes"], tcfg.seed)
           if tcfg.ema_decay > 0 else None)
    # Under torchrun the D update drives DDP wrappers; G, D stay the modules that are saved.
    W = ranks.world_size
    G_train, D_train = ((distributed.wrap_ddp(G, device, tcfg.sync_bn), distributed.wrap_ddp(D, device, tcfg.sync_bn))
                        if W > 1 else (G, D))
    G, D = getattr(G_train, "module", G), getattr(D_train, "module", D)
    opt_G = build(cfg.optimizer.G, "optimizer")(G.parameters())
    opt_D = build(cfg.optimizer.D, "optimizer")(D.parameters())
    G_train, D_train, D_g = compiled(G_train, D_train, D, tcfg.compile, loss.double_backward)
    # DiffAugment: D sees transformed images in its update and in G's; ADA: each op with a
    # probability p that follows D's overfitting.
    ada = (AdaptiveP(**cfg.augment.ada, batch_size=tcfg.batch_size, device=device, world_size=W)
           if cfg.augment.ada is not None else None)
    if cfg.augment.policy:
        p = ada.p if ada is not None else None if cfg.augment.p == 1 else torch.tensor(cfg.augment.p, device=device)
        ratios = {"translation": cfg.augment.translation, "cutout": cfg.augment.cutout}
        D_train, D_g = Augmented(D_train, cfg.augment.policy, ratios, p), Augmented(D_g, cfg.augment.policy, ratios, p)
    step = TrainStep(G, D, opt_G, opt_D, loss, z_dim=cfg.model.z_dim, noise=tcfg.noise,
                     batch_size=tcfg.batch_size, autocast=autocast, G_train=G_train, D_train=D_train,
                     D_g=D_g, channels_last=tcfg.channels_last, cudagraphs=tcfg.compile == "reduce-overhead",
                     rank=ranks.rank, world_size=W, ada=ada)
    log.info("G: %.2fM parameters, D: %.2fM parameters, device %s",
             sum(p.numel() for p in G.parameters()) / 1e6, sum(p.numel() for p in D.parameters()) / 1e6, device)
    return step, ema


def noise_of(state: dict) -> str:
    """The law of z a saved run was trained with."""
    return (state["cfg"].get("trainer") or {}).get("noise", "normal")


def load_generator(state: dict, path: Path, which: str, device) -> torch.nn.Module:
    """The generator `which` ("G_ema" or "G") of a loaded checkpoint, on `device`, in eval mode;
    refused where its weights are not finite (a diverged run draws black images)."""
    model_cfg = state["cfg"]["model"]
    # Built first without memory (the meta device): a crafted config could ask for terabytes.
    with torch.device("meta"):
        skeleton = build_generator(model_cfg, state["data"], noise_of(state))
    shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in state[which].items()}
    if shapes != saved:
        differ = sorted(set(shapes.items()) ^ set(saved.items()))[0][0]
        raise UserError(f"{path}: {which} does not fit the network its saved config describes ({differ})")
    G = build_generator(model_cfg, state["data"], noise_of(state))
    G.load_state_dict(state[which])
    if not all_finite(G):
        raise UserError(f"{path}: {which} holds weights that are not finite (the run diverged); "
                        f"use an earlier checkpoint of the run")
    return G.to(device).eval()
