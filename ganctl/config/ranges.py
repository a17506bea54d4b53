"""The allowed range of every numeric or named value in the config, checked before a run starts
(`ganctl` checks them right after composing, `train()` again for callers of the Python API).
Types are the schemas' job (ganctl.config.schema); these are the ranges.

    errors = range_errors(cfg)     # ["trainer.batch_size=0: must be >= 1", ...]
"""
import math
import re
from collections.abc import Sequence

from ganctl.training.augment import OPS
from ganctl.data import MAX_IMG_SIZE
from ganctl.nets.dcgan import D_CONDITIONING, G_CONDITIONING, UPSAMPLING


def _adam_betas_ok(betas) -> bool:
    return len(betas) == 2 and all(0 <= b < 1 for b in betas)


# key, what it must be, the test. Types are the schemas' job; these are the ranges.
# trainer.compile: none, or a torch.compile mode (reduce-overhead captures CUDA graphs).
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")

def _seed_ok(v) -> bool:
    return 0 <= v < 2**32  # what NumPy's seed takes; torch takes more


def _widths_ok(v) -> bool:
    return all(w >= 1 for w in v)


def _device_ok(v) -> bool:
    return bool(re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", v))


RANGES = [
    ("seed", "in [0, 2**32)", _seed_ok),  # ganctl sample / eval / fit-classifier
    ("device", "auto, cpu, cuda, cuda:<index> or mps", _device_ok),
    ("trainer.device", "auto, cpu, cuda, cuda:<index> or mps", _device_ok),
    ("trainer.seed", "in [0, 2**32)", _seed_ok),
    ("trainer.batch_size", ">= 1", lambda v: v >= 1),
    ("trainer.epochs", ">= 1", lambda v: v >= 1),
    ("trainer.max_steps", "null or >= 1", lambda v: v is None or v >= 1),
    ("trainer.log_every", ">= 1", lambda v: v >= 1),
    ("trainer.sample_every", ">= 1", lambda v: v >= 1),
    ("trainer.ckpt_every", ">= 1", lambda v: v >= 1),
    ("trainer.keep_ckpts", ">= 0", lambda v: v >= 0),
    ("trainer.label_smoothing", "in [0, 1)", lambda v: 0 <= v < 1),
    ("trainer.ema_decay", "in [0, 1)", lambda v: 0 <= v < 1),
    ("trainer.ema_bn_batches", ">= 0", lambda v: v >= 0),
    ("trainer.eval_every", "null or >= 1", lambda v: v is None or v >= 1),
    ("trainer.eval_n", ">= 100", lambda v: v >= 100),
    ("optimizer.lr_g", "> 0", lambda v: v > 0),
    ("optimizer.lr_d", "> 0", lambda v: v > 0),
    ("optimizer.weight_decay", ">= 0", lambda v: v >= 0),
    ("dataset.limit", "null or >= 1", lambda v: v is None or v >= 1),
    ("loss.n_critic", ">= 1", lambda v: v >= 1),
    ("loss.gp_weight", ">= 0", lambda v: v >= 0),
    ("loss.feature_matching", ">= 0", lambda v: v >= 0),
    ("loss.r1", ">= 0", lambda v: v >= 0),
    ("loss.r1_every", ">= 1", lambda v: v >= 1),
    ("loss.clip", "> 0", lambda v: v > 0),
    ("model.z_dim", ">= 1", lambda v: v >= 1),
    ("model.aux_weight", ">= 0", lambda v: v >= 0),
    ("model.lr", "> 0", lambda v: v > 0),
    ("model.betas", "two values in [0, 1)", _adam_betas_ok),
    ("optimizer.betas", "two values in [0, 1)", _adam_betas_ok),
    ("model.D.pack", ">= 1", lambda v: v >= 1),
    ("model.G.ngf", ">= 1", lambda v: v >= 1),
    ("model.D.ndf", ">= 1", lambda v: v >= 1),
    ("model.G.ch", ">= 1", lambda v: v >= 1),
    ("model.D.ch", ">= 1", lambda v: v >= 1),
    ("model.G.embed_dim", ">= 1", lambda v: v >= 1),
    ("model.D.embed_dim", ">= 1", lambda v: v >= 1),
    ("model.G.hidden", "widths >= 1", _widths_ok),
    ("model.D.hidden", "widths >= 1", _widths_ok),
    ("model.D.dropout", "in [0, 1)", lambda v: 0 <= v < 1),
    ("dataset.channels", "1 (grey) or 3 (RGB)", lambda v: v in (1, 3)),
    ("dataset.img_size", f"in [8, {MAX_IMG_SIZE}]", lambda v: 8 <= v <= MAX_IMG_SIZE),
    ("dataset.num_workers", ">= 0", lambda v: v >= 0),
    ("model.G.codes", "0 or >= 2", lambda v: v == 0 or v >= 2),
    ("model.G.upsample", "one of " + ", ".join(UPSAMPLING), lambda v: v in UPSAMPLING),
    ("model.G.cond", "one of " + ", ".join(G_CONDITIONING), lambda v: v in G_CONDITIONING),
    ("model.D.cond", "one of " + ", ".join(D_CONDITIONING), lambda v: v in D_CONDITIONING),
    ("augment.ada.target", "in (-1, 1)", lambda v: -1 < v < 1),
    ("augment.ada.interval", ">= 1", lambda v: v >= 1),
    ("augment.ada.kimg", "> 0", lambda v: v > 0),
    ("augment.translation", "in (0, 0.5]", lambda v: 0 < v <= 0.5),
    ("augment.cutout", "in (0, 1]", lambda v: 0 < v <= 1),
    ("augment.p", "in (0, 1]", lambda v: 0 < v <= 1),
    ("augment.policy", "a list of distinct ops of " + ", ".join(OPS),
     lambda v: all(p in OPS for p in v) and len(set(v)) == len(v)),
    ("depth", ">= 1", lambda v: v >= 1),  # ganctl summary
    ("eval.real_n", "null or >= 4 (two halves)", lambda v: v is None or v >= 4),
    ("trainer.compile", "one of " + ", ".join(COMPILE_MODES), lambda v: v in COMPILE_MODES),
]


def _finite(v) -> bool:
    """No value of the config is meant to be inf or nan (`loss.r1=inf` diverges at once)."""
    if isinstance(v, float):
        return math.isfinite(v)
    return all(_finite(x) for x in v) if isinstance(v, Sequence) and not isinstance(v, str) else True


def range_errors(cfg) -> list[str]:
    """`key=value: must be ...` for every value of `cfg` (a dict or a config node) out of its range."""
    errors = []
    for key, allowed, ok in RANGES:
        *path, leaf = key.split(".")
        parent = cfg
        for part in path:
            parent = parent.get(part) if hasattr(parent, "get") else None
        if not (hasattr(parent, "get") and leaf in parent):
            continue
        if not _finite(parent[leaf]):
            errors.append(f"{key}={parent[leaf]}: must be finite")
        elif not ok(parent[leaf]):
            errors.append(f"{key}={parent[leaf]}: must be {allowed}")
    return errors + augment_errors(cfg.get("augment") if hasattr(cfg, "get") else None)


ADA_KEYS = ("target", "interval", "kimg")


def augment_errors(augment) -> list[str]:
    """What the augment keys mean together: ADA needs all its keys and ops to apply, and sets p."""
    if not hasattr(augment, "get") or augment.get("ada") is None:
        return []
    ada = augment["ada"]
    missing = [k for k in ADA_KEYS if not hasattr(ada, "get") or ada.get(k) is None]
    if missing:
        return [f"augment.ada lacks {', '.join(missing)}: choose augment=ada (and set augment.ada.target=...) "
                f"rather than writing augment.ada whole"]
    if not augment.get("policy"):
        return ["augment.policy=[]: ADA needs ops to apply (e.g. augment.policy=[translation]), or use augment=none"]
    if augment.get("p", 1.0) != 1.0:
        return [f"augment.p={augment['p']}: must be 1 under augment=ada, which sets p itself"]
    return []
