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

from ganctl.api import GRID_MAX, averaged_generator, check_interpolation, requested_labels, unused_name
from ganctl.checkpoint import load_checkpoint, resolve_checkpoint, run_config
from ganctl.errors import UserError, one_line
from ganctl.generate import generate
from ganctl.memory import refuse_if_too_large
from ganctl.runtime import resolve_device

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
    ckpt_path = resolve_checkpoint(cfg.ckpt, cfg.outputs)
    state = load_checkpoint(ckpt_path)
    run_cfg = run_config(state)
    num_classes = state["data"]["num_classes"]
    if cfg.arithmetic is not None:
        return _arithmetic(cfg, state, ckpt_path, run_cfg, num_classes)
    try:
        labels = requested_labels(cfg.label, num_classes, state.get("classes", []))
    except UserError as e:  # say which run was asked: with no ckpt= it is the newest
        raise UserError(f"{e}; model={run_cfg.model.name} of {ckpt_path}") from None
    n = cfg.n if cfg.n is not None else (10 * num_classes if cfg.label is None and num_classes else 64)
    if n < 1:
        raise UserError(f"n={n}: ask for at least one image")
    if interpolating(cfg.interpolate):
        return _interpolate(cfg, state, ckpt_path, run_cfg, num_classes)
    out = Path(cfg.out) if cfg.out else unused_name(Path("samples.png"))
    if out.suffix == ".png" and n > GRID_MAX:
        raise UserError(f"n={n} is too many for one PNG grid (at most {GRID_MAX}); write them with "
                        f"out=<name>.npz or out=<folder>")
    data = state["data"]
    refuse_if_too_large(f"n={n} images of {data['img_channels']}x{data['img_size']}x{data['img_size']}",
                        n * data["img_channels"] * data["img_size"] ** 2, "cpu", "ask for fewer with n=")

    device = resolve_device(cfg.device, key="device")
    G = averaged_generator(state, ckpt_path, device)
    images, y = generate(G, n, labels, run_cfg.model.z_dim, run_cfg.trainer.noise, cfg.seed, device)

    nrow = math.ceil(n / len(labels)) if labels and len(labels) > 1 else math.ceil(math.sqrt(n))
    what = write(images, y, out, nrow)
    names = state.get("classes", [])
    rows = (f"; a row per class: {', '.join(names[k] for k in labels)}"
            if labels and len(labels) > 1 and len(names) == num_classes and out.suffix == ".png" else "")
    print(f"wrote {what} to {out} from {ckpt_path} (step {state['step']}){rows}")
    return out


def _interpolate(cfg, state: dict, ckpt_path: Path, run_cfg, num_classes: int) -> Path:
    from ganctl import interpolate
    mode = "z" if str(cfg.interpolate).lower() == "true" else str(cfg.interpolate)
    given = requested_labels(cfg.label, num_classes, state.get("classes", [])) if cfg.label is not None else None
    rows = cfg.n if cfg.n is not None else 8
    check_interpolation(rows, cfg.steps)
    device = resolve_device(cfg.device, key="device")
    G = averaged_generator(state, ckpt_path, device)
    step = state["step"]
    x = interpolate.paths(G, mode, rows, cfg.steps, given, num_classes, run_cfg.model.z_dim,
                          run_cfg.trainer.noise, cfg.seed, cfg.spherical, device)
    png, gif = interpolate.write(x, Path(cfg.out) if cfg.out else unused_name(Path("interpolation.png"), ".gif"))
    print(f"wrote {rows} {mode} interpolations of {cfg.steps} steps to {png} and {gif} "
          f"from {ckpt_path} (step {step})")
    return png


def _arithmetic(cfg, state: dict, ckpt_path: Path, run_cfg, num_classes: int) -> Path:
    from ganctl import arithmetic
    label = None
    if num_classes:
        labels = requested_labels(cfg.label, num_classes, state.get("classes", [])) if cfg.label is not None else []
        if len(labels) != 1:
            raise UserError(f"arithmetic= on a conditional model needs one label (label=5); "
                            f"classes are 0..{num_classes - 1}")
        label = labels[0]
    elif cfg.label is not None:
        requested_labels(cfg.label, num_classes)  # the one-line refusal of a label
    out = Path(cfg.out) if cfg.out else unused_name(Path("arithmetic.png"))
    if out.suffix != ".png":
        raise UserError(f"out={out}: arithmetic writes one PNG; name a .png file")
    device = resolve_device(cfg.device, key="device")
    G = averaged_generator(state, ckpt_path, device)
    results = cfg.n if cfg.n is not None else 8
    if not 1 <= results <= GRID_MAX:
        raise UserError(f"n={results}: arithmetic draws 1 to {GRID_MAX} results in one PNG")
    drawn = arithmetic.render(G, str(cfg.arithmetic), results, run_cfg.model.z_dim, run_cfg.trainer.noise,
                              cfg.seed, label, device, limit=GRID_MAX)
    arithmetic.write(drawn, out)
    terms = " ".join(f"{'+' if sign > 0 else '-'}{idx}" for sign, idx, _ in drawn["terms"])
    print(f"wrote {out}: a row per term ({terms}: its images, then its mean latent's), then {results} "
          f"results, from {ckpt_path} (step {state['step']})")
    return out
