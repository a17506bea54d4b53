"""`ganctl sample`: images from a trained generator, rebuilt from the config saved with its run.

    ganctl sample label=5 n=64 out=fives.png          # newest run under outputs/
    ganctl sample ckpt=outputs/<run> out=all.npz       # conditional: every class
"""
import logging
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torchvision.utils import save_image

from ganctl.api import GRID_MAX, Generator, check_interpolation, unused_name
from ganctl.errors import UserError, one_line

log = logging.getLogger(__name__)


def interpolating(value) -> bool:
    """Whether `interpolate=` asks for a walk (z, true or label), not its off values."""
    return value not in (None, False, "false", "False")


def write(as_uint8: torch.Tensor, labels: torch.Tensor, out: Path, nrow: int) -> str:
    """*.png: one grid; *.npz: uint8 NCHW `images` and `labels`; anything else: a folder of PNGs."""
    try:
        return _write(as_uint8, labels, out, nrow)
    except OSError as e:  # a read-only folder, a folder where the file should be, a full disk
        raise UserError(f"out={out}: {one_line(e)}") from None


def _write(as_uint8: torch.Tensor, labels: torch.Tensor, out: Path, nrow: int) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        save_image(as_uint8.float() / 255, out, nrow=nrow, padding=2)
        return f"a grid of {len(as_uint8)} images"
    if out.suffix == ".npz":
        np.savez_compressed(out, images=as_uint8.numpy(), labels=labels.numpy())
        return f"{len(as_uint8)} images"
    out.mkdir(exist_ok=True)
    for i, (img, y) in enumerate(zip(as_uint8, labels.tolist())):
        save_image(img.float() / 255, out / (f"{i:06d}_label{y}.png" if y >= 0 else f"{i:06d}.png"))
    return f"{len(as_uint8)} PNG files"


def sample(cfg: DictConfig) -> Path:
    G = Generator(cfg.ckpt, device=cfg.device, outputs=cfg.outputs)
    if cfg.arithmetic is not None:
        return _arithmetic(cfg, G)
    try:
        labels = G.labels(cfg.label)
    except UserError as e:  # say which run was asked: with no ckpt= it is the newest
        raise UserError(f"{e}; model={G.config.model.name} of {G.path}") from None
    n = cfg.n if cfg.n is not None else G.default_n(cfg.label)
    if n < 1:
        raise UserError(f"n={n}: ask for at least one image")
    if interpolating(cfg.interpolate):
        return _interpolate(cfg, G)
    out = Path(cfg.out) if cfg.out else unused_name(Path("samples.png"))
    if out.suffix == ".png" and n > GRID_MAX:
        raise UserError(f"n={n} is too many for one PNG grid (at most {GRID_MAX}); write them with "
                        f"out=<name>.npz or out=<folder>")
    images, y = G.draw(n, labels, cfg.seed)

    nrow = math.ceil(n / len(labels)) if labels and len(labels) > 1 else math.ceil(math.sqrt(n))
    what = write(images, y, out, nrow)
    rows = (f"; a row per class: {', '.join(G.classes[k] for k in labels)}"
            if labels and len(labels) > 1 and len(G.classes) == G.num_classes and out.suffix == ".png" else "")
    print(f"wrote {what} to {out} from {G.path} (step {G.step}){rows}")
    return out


def _interpolate(cfg, G: Generator) -> Path:
    from ganctl.sampling import interpolate
    mode = "z" if str(cfg.interpolate).lower() == "true" else str(cfg.interpolate)
    given = G.labels(cfg.label) if cfg.label is not None else None
    rows = cfg.n if cfg.n is not None else 8
    check_interpolation(rows, cfg.steps)
    x = interpolate.paths(G.module, mode, rows, cfg.steps, given, G.num_classes, G.z_dim, G.noise, cfg.seed,
                          cfg.spherical, G.device)
    png, gif = interpolate.write(x, Path(cfg.out) if cfg.out else unused_name(Path("interpolation.png"), ".gif"))
    print(f"wrote {rows} {mode} interpolations of {cfg.steps} steps to {png} and {gif} "
          f"from {G.path} (step {G.step})")
    return png


def _arithmetic(cfg, G: Generator) -> Path:
    from ganctl.sampling import arithmetic
    label = None
    if G.num_classes:
        labels = G.labels(cfg.label) if cfg.label is not None else []
        if len(labels) != 1:
            raise UserError(f"arithmetic= on a conditional model needs one label (label=5); "
                            f"classes are 0..{G.num_classes - 1}")
        label = labels[0]
    elif cfg.label is not None:
        G.labels(cfg.label)  # the one-line refusal of a label
    out = Path(cfg.out) if cfg.out else unused_name(Path("arithmetic.png"))
    if out.suffix != ".png":
        raise UserError(f"out={out}: arithmetic writes one PNG; name a .png file")
    results = cfg.n if cfg.n is not None else 8
    if not 1 <= results <= GRID_MAX:
        raise UserError(f"n={results}: arithmetic draws 1 to {GRID_MAX} results in one PNG")
    drawn = arithmetic.render(G.module, str(cfg.arithmetic), results, G.z_dim, G.noise, cfg.seed, label, G.device,
                              limit=GRID_MAX)
    arithmetic.write(drawn, out)
    terms = " ".join(f"{'+' if sign > 0 else '-'}{idx}" for sign, idx, _ in drawn["terms"])
    print(f"wrote {out}: a row per term ({terms}: its images, then its mean latent's), then {results} "
          f"results, from {G.path} (step {G.step})")
    return out
