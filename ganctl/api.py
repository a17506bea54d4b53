"""A trained generator in Python: what `ganctl sample` draws, as calls, for notebooks and scripts.

    import ganctl
    G = ganctl.load("outputs/2026-12-05/10-00-00_cdcgan_bce")   # a run directory or a .pt file
    images = G.sample(16, label="food_drink", seed=0)          # uint8 (16, C, H, W), as `ganctl sample` writes
    G.grid(images)                                             # a PIL image (Jupyter shows it inline)
    walk = G.interpolate("z", n=4, steps=8)                    # uint8 (4, 8, C, H, W)
    G.classes, G.z_dim, G.device

Loading is as safe as the CLI's (weights only, only ganctl's own classes built, the saved config
read as data); every mistake raises ganctl.UserError with the CLI's one-line message.
"""
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ganctl.run.checkpoint import load_checkpoint, resolve_checkpoint, run_config
from ganctl.data import to_uint8
from ganctl.errors import UserError
from ganctl.sampling.generate import generate
from ganctl.training.memory import refuse_if_too_large
from ganctl.training.wiring import load_generator
from ganctl.training.runtime import resolve_device

GRID_MAX = 10_000  # a PNG grid (or interpolation) of more images is too large to open: use .npz or a folder


def requested_labels(label, num_classes: int, names: list[str] = ()) -> list[int] | None:
    """The labels asked for as a list of indices (None for an unconditional model), validated:
    each an index (label=3) or, where the run saved its class names, a name (label=food_drink)."""
    if num_classes == 0:
        if label is not None:
            raise UserError(f"label={label} given, but this model is unconditional (it has no labels)")
        return None
    if label is None:
        return list(range(num_classes))
    labels = list(label) if isinstance(label, Sequence) and not isinstance(label, str) else [label]
    if not labels:
        raise UserError(f"label=[] names no class; give one (label=5), a list (label=[1,2]) or none "
                        f"(every class, 0..{num_classes - 1})")
    named = list(names) if len(names) == num_classes else []
    indices = []
    for k in labels:
        if isinstance(k, str) and k in named:
            k = named.index(k)
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < num_classes:
            classes = f"0..{num_classes - 1}" + (f" or a name: {', '.join(named)}" if named else "")
            raise UserError(f"label={k!r} is not a class of this model: labels are {classes}")
        indices.append(k)
    return indices


def unused_name(path: Path, *also: str) -> Path:
    """`path`, or path_1, path_2, ... where it (or its sibling with a suffix in `also`) exists:
    the default output never overwrites an earlier one (a named `out=` is the user's choice)."""
    candidate, i = path, 0
    while any(candidate.with_suffix(s).exists() for s in (path.suffix, *also)):
        i += 1
        candidate = path.with_name(f"{path.stem}_{i}{path.suffix}")
    return candidate


def checkpoint_of(ckpt: str | Path | None, which: str, outputs: str) -> Path:
    """The checkpoint file that `ckpt` names; `which=best` takes checkpoints/best.pt of a run
    directory where the run kept one (a named file is taken as it is)."""
    if which not in ("best", "last"):
        raise UserError(f"which={which}: choose best or last")
    last = resolve_checkpoint(None if ckpt is None else str(ckpt), outputs)
    named_a_file = ckpt is not None and Path(ckpt).expanduser().is_file()
    best = last.with_name("best.pt")
    return best if which == "best" and not named_a_file and best.is_file() else last


def check_interpolation(n: int, steps: int) -> None:
    if n < 1 or n * steps > GRID_MAX:
        raise UserError(f"n={n} paths of steps={steps} images: an interpolation draws 1 to {GRID_MAX} "
                        f"images in one PNG and GIF; ask for fewer")


class Generator:
    """A run's generator (its moving average of weights where it kept one), ready to draw.
    `module` is the torch module: G(z, labels) -> float images in [-1, 1]."""

    def __init__(self, path: str | Path | None, which: str = "last", generator: str = "ema", device: str = "auto",
                 outputs: str = "outputs"):
        """path: a run directory or checkpoint file; None: the newest run under `outputs`."""
        if generator not in ("ema", "raw"):
            raise UserError(f"generator={generator}: must be ema or raw")
        ckpt = checkpoint_of(path, which, outputs)
        state = load_checkpoint(ckpt)
        cfg = run_config(state)
        self.path, self.step, self.config = ckpt, state["step"], cfg  # the saved config, as data
        self.num_classes = state["data"]["num_classes"]
        self.classes = list(state.get("classes", [])) if self.num_classes else []
        self.img_channels, self.img_size = state["data"]["img_channels"], state["data"]["img_size"]
        self.z_dim, self.noise = cfg.model.z_dim, cfg.trainer.noise
        self.device = resolve_device(device, key="device")
        self.which = "G_ema" if generator == "ema" and "G_ema" in state else "G"
        self.module = load_generator(state, ckpt, self.which, self.device)

    def __repr__(self) -> str:
        classes = f", classes={self.classes or self.num_classes}" if self.num_classes else ""
        return (f"Generator({self.path}, step {self.step}, {self.which}, {self.img_channels}x{self.img_size}x"
                f"{self.img_size}, z_dim={self.z_dim}{classes}, device={self.device})")

    def labels(self, label=None) -> list[int] | None:
        """`label` (an index, a class name, a list of them, or None for every class) as indices."""
        return requested_labels(label, self.num_classes, self.classes)

    def default_n(self, label=None) -> int:
        """10 per class for a conditional model asked for every class, else 64."""
        return 10 * self.num_classes if label is None and self.num_classes else 64

    def draw(self, n: int, labels: list[int] | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n uint8 images (n, C, H, W), label-major with the same z for every label of `labels`
        (indices, from labels()), and their labels (-1 without classes): what `ganctl sample` writes."""
        if n < 1:
            raise UserError(f"n={n}: ask for at least one image")
        refuse_if_too_large(f"n={n} images of {self.img_channels}x{self.img_size}x{self.img_size}",
                            n * self.img_channels * self.img_size ** 2, "cpu", "ask for fewer with n=")
        return generate(self.module, n, labels, self.z_dim, self.noise, seed, self.device)

    def sample(self, n: int | None = None, label=None, seed: int = 0, value_range: tuple | None = None):
        """n images as `ganctl sample n=... label=... seed=...` writes them: uint8 (n, C, H, W), label-
        major with the same z for every label; `value_range=(0, 1)` maps them to floats in that range.
        n defaults as there (default_n)."""
        images, _ = self.draw(n if n is not None else self.default_n(label), self.labels(label), seed)
        if value_range is None:
            return images
        lo, hi = value_range
        return images.float() / 255 * (hi - lo) + lo

    def interpolate(self, mode: str = "z", n: int = 8, steps: int = 10, label=None, seed: int = 0,
                    spherical: bool = False) -> torch.Tensor:
        """`ganctl sample interpolate=...`: uint8 (n, steps, C, H, W), a row per path (z: between two
        random latents, the label fixed; label: from label[0] to label[1] at fixed z)."""
        from ganctl.sampling import interpolate
        check_interpolation(n, steps)
        given = self.labels(label) if label is not None else None
        x = interpolate.paths(self.module, mode, n, steps, given, self.num_classes, self.z_dim, self.noise, seed,
                              spherical, self.device)
        return to_uint8(x)

    @staticmethod
    def grid(images: torch.Tensor, nrow: int | None = None):
        """uint8 images (N, C, H, W), or (rows, steps, C, H, W) from interpolate(), as one PIL image
        with the 2-pixel gaps of `ganctl sample`'s PNG grids."""
        from PIL import Image
        from torchvision.utils import make_grid
        if images.dim() == 5:
            nrow, images = nrow or images.shape[1], images.flatten(0, 1)
        grid = make_grid(images.float() / 255, nrow=nrow or math.ceil(math.sqrt(len(images))), padding=2)
        pixels = grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(pixels)  # RGB, grey images too: make_grid repeats one channel, as the PNGs


def load(path: str | Path, which: str = "last", generator: str = "ema", device: str = "auto") -> Generator:
    """The generator of a run directory or checkpoint file (see Generator)."""
    return Generator(path, which, generator, device)
