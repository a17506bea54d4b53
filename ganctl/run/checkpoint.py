"""Checkpoints are plain dicts of state_dicts, tensors and builtins, written atomically and read
with weights_only=True, so a file can never run code and a crash never leaves a torn file.

    {"G", "D", "opt_G", "opt_D": state_dicts, "step", "epoch", "batch": ints,
     "rng": {"torch", "cuda"}, "data": {"img_channels", "img_size", "num_classes"[, "clusters"]}, "cfg": dict,
     "classes": the class names, where the data has them (runs since 2026-12-06)}
"""
import copy
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ganctl.config.build import moved
from ganctl.data import MAX_IMG_SIZE
from ganctl.errors import UserError, free_space, one_line
from ganctl.run.directory import newest_run

REQUIRED_KEYS = ("G", "D", "opt_G", "opt_D", "step", "epoch", "batch", "rng", "data", "cfg")


def _umask() -> int:
    """The process's umask, read without changing it (os.umask sets it while reading it)."""
    try:
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


FILE_MODE = 0o666 & ~_umask()  # what open() gives every other output; mkstemp would give 0600


def save_checkpoint(state: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a full disk as RuntimeError
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        why = e.strerror if isinstance(e, OSError) and e.strerror else f"the write failed: {one_line(e)}"
        raise UserError(f"could not write checkpoint {path} ({why}; {free_space(path.parent)} free there); "
                        f"the previous checkpoint there is intact") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def save_copy(src: Path, dst: Path) -> None:
    """`dst` holding what `src` holds: a hard link where the file system has them (no space and no
    time; save_checkpoint replaces `src` by a rename, never in place, so `dst` keeps its bytes),
    else a copy; either appears at once, by a rename."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"could not write checkpoint {dst} ({e.strerror or e}; {free_space(dst.parent)} free "
                        f"there); {src} is intact") from None


def all_finite(*modules) -> bool:
    """Whether every floating weight and buffer of `modules` is finite: one reduction on the
    device and one sync (the norm of a vector with a NaN or inf is not finite)."""
    tensors = [t.detach() for m in modules if m is not None
               for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]
    if not tensors:
        return True
    return bool(torch.stack([n.float() for n in torch._foreach_norm(tensors)]).sum().isfinite())


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except Exception as e:  # truncated, corrupted, or pickles something other than tensors
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a readable ganctl checkpoint ({first_line})") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"{path} is not a ganctl checkpoint (missing {', '.join(missing)})")
    wrong = shape_errors(state)
    if wrong:
        raise UserError(f"{path} is not a valid ganctl checkpoint ({wrong[0]})")
    add_missing_keys(state["cfg"])
    rename_moved_targets(state["cfg"])
    return state


# Config keys added after checkpoints were written, with the value that reproduces how those were
# trained: (where, for which _target_ (None: any; a node without one, such as model, is known by its
# G's), key, value). An older run loads as it was.
ADDED_KEYS = [
    (("model", "G"), "ganctl.nets.dcgan.Generator", "upsample", "transposed"),
    (("model", "G"), "ganctl.nets.dcgan.Generator", "cond", "concat"),
    (("model", "G"), "ganctl.nets.dcgan.Generator", "noise_injection", False),
    (("model", "D"), "ganctl.nets.dcgan.Discriminator", "cond", "projection"),
    # norm=auto under a gradient penalty was GroupNorm with one group before per_sample_norm
    (("model", "D"), "ganctl.nets.dcgan.Discriminator", "per_sample_norm", "layer"),
    (("loss",), None, "feature_matching", 0.0),
    (("loss",), None, "r1", 0.0),
    (("loss",), None, "r1_every", 1),
    ((), None, "augment", {"policy": [], "ada": None}),
    (("augment",), None, "ada", None),
    (("augment",), None, "translation", 0.125),
    (("augment",), None, "cutout", 0.5),
    (("augment",), None, "p", 1.0),
    (("dataset",), None, "limit", None),
    (("dataset",), "ganctl.data.load_folder", "cache", False),
    (("model",), "ganctl.nets.dcgan.Generator", "clusters", 0),
]


def add_missing_keys(cfg: dict) -> None:
    for where, target, key, value in ADDED_KEYS:
        node = cfg
        for part in where:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or key in node:
            continue
        G = node.get("G")
        if target in (None, node.get("_target_", G.get("_target_") if isinstance(G, dict) else None)):
            node[key] = copy.deepcopy(value)


def rename_moved_targets(node) -> None:
    """Every `_target_` of a saved config under its module's present name (config.build.MOVED), so
    that a resume compares and builds it as the class it is."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        if k == "_target_":
            node[k] = moved(v)
        else:
            rename_moved_targets(v)


def _is_int(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def shape_errors(state: dict) -> list[str]:
    """What in a loaded checkpoint is not of the form ganctl writes: a crafted file must fail here,
    in one line, not deep in the code that reads it (or by asking for terabytes of memory)."""
    errors = []
    for name in ("G", "D", "G_ema"):
        sd = state.get(name, {})
        tensors = isinstance(sd, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items())
        if not tensors:
            errors.append(f"{name} is not a state_dict of tensors")
    for name in ("opt_G", "opt_D", "data", "cfg"):
        if not isinstance(state[name], dict):
            errors.append(f"{name} is not a dict")
    if not _is_rng_state(state["rng"]):
        errors.append("rng is not a saved random state")
    if not isinstance(state.get("best", {}), dict):
        errors.append("best is not a dict")
    for name in ("step", "epoch", "batch"):
        if not _is_int(state[name], 0, 2**62):
            errors.append(f"{name}={state[name]!r} is not a count")
    data = state["data"] if isinstance(state["data"], dict) else {}
    for key, lo, hi in (("img_channels", 1, 4), ("img_size", 1, MAX_IMG_SIZE), ("num_classes", 0, 100_000)):
        if not _is_int(data.get(key), lo, hi):
            errors.append(f"data.{key}={data.get(key)!r} is not in [{lo}, {hi}]")
    sizes = data.get("clusters", [1, 1])  # self-conditioning: the clusters' sizes
    if not (isinstance(sizes, list) and 2 <= len(sizes) <= 1000 and all(_is_int(v, 0, 2**40) for v in sizes)
            and sum(sizes) > 0):
        errors.append("data.clusters is not a list of 2 to 1000 cluster sizes")
    cfg = state["cfg"] if isinstance(state["cfg"], dict) else {}
    model, trainer = cfg.get("model"), cfg.get("trainer")
    if not (isinstance(model, dict) and isinstance(model.get("G"), dict) and _is_int(model.get("z_dim"), 1, 2**20)):
        errors.append("cfg.model is not a model config with G and z_dim")
    if not isinstance(trainer, dict):
        errors.append("cfg.trainer is not a dict")
    elif trainer.get("noise", "normal") not in ("normal", "uniform"):
        errors.append(f"cfg.trainer.noise={trainer['noise']!r} is not normal or uniform")
    classes = state.get("classes", [])
    if not (isinstance(classes, list) and all(isinstance(c, str) and len(c) <= 200 for c in classes)
            and len(classes) <= 100_000):
        errors.append("classes is not a list of class names")
    if "augment" in state and not _is_ada_state(state["augment"]):  # in runs with augment=ada
        errors.append("augment is not ADA's saved state (p in [0, 1], r_t in [-1, 1], finite sums)")
    return errors


CPU_RNG_BYTES = torch.get_rng_state().numel()  # the Mersenne Twister's state: 5056 bytes


def _is_rng_state(rng) -> bool:
    """torch's CPU state of its exact size (set_rng_state refuses any other, mid-resume) and a list
    of CUDA states, each a vector of bytes."""
    def byte_vector(t, size=None):
        return isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1 and (size is None or t.numel() == size)
    return (isinstance(rng, dict) and byte_vector(rng.get("torch"), CPU_RNG_BYTES)
            and isinstance(rng.get("cuda", []), list) and all(byte_vector(t) for t in rng.get("cuda", [])))


def _is_ada_state(ada) -> bool:
    """ADA's p, r_t and running sum as finite scalars where AdaptiveP can put them, and a count."""
    if not (isinstance(ada, dict) and _is_int(ada.get("count"), 0, 2**31)
            and all(isinstance(ada.get(k), torch.Tensor) and ada[k].shape == () and ada[k].is_floating_point()
                    for k in ("p", "rt", "signs"))):
        return False
    p, rt, signs = (float(ada[k]) for k in ("p", "rt", "signs"))
    return 0 <= p <= 1 and -1 <= rt <= 1 and math.isfinite(signs) and abs(signs) <= ada["count"] + 1e-3


class SavedConfig(dict):
    """A checkpoint's saved config as plain data: keys read as attributes (cfg.model.z_dim) or as
    items, every string literal. It never goes through OmegaConf: a file anyone may have written
    would have its `${oc.env:...}` and other interpolations resolved there."""

    def __init__(self, node: dict, path: str = ""):
        super().__init__(node)
        self.__dict__["_path"] = path  # "model.G." for cfg.model.G: the key a message names

    def __getattr__(self, key: str):
        if key.startswith("__"):
            raise AttributeError(key)
        if key not in self:
            raise UserError(f"the checkpoint's saved config has no {self._path}{key}")
        value = self[key]
        return SavedConfig(value, f"{self._path}{key}.") if isinstance(value, dict) else value


def run_config(state: dict) -> SavedConfig:
    """The config a checkpoint was trained with, as data (SavedConfig). Its dataset.root is a path
    taken literally: `~/x` names a folder `~` under the working directory, not $HOME/x (training
    stores the path as the user's shell expanded it)."""
    cfg = copy.deepcopy(state["cfg"])
    dataset = cfg.get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("root"), str) and dataset["root"].startswith("~"):
        dataset["root"] = os.path.join(".", dataset["root"])
    return SavedConfig(cfg)


def resolve_checkpoint(ckpt: str | None, outputs: str) -> Path:
    """A checkpoint file from a file, a run directory, or (None) the newest run under outputs."""
    path = newest_run(Path(outputs)) if ckpt is None else Path(ckpt).expanduser()
    if path.is_file():
        return path
    for candidate in (path / "checkpoints" / "last.pt", path / "last.pt"):
        if candidate.is_file():
            return candidate
    looked = "it does not exist" if not path.exists() else "no checkpoints/last.pt in it"
    raise UserError(f"ckpt={path}: {looked}")


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Keep the `keep` newest step_<N>.pt files (last.pt and best.pt are never touched)."""
    steps = sorted(Path(folder).glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    for p in steps[:-keep] if keep > 0 else steps:
        p.unlink()
