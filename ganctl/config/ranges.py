"""The range of every numeric or named value in the config, checked before a run starts
(`ganctl` checks them right after composing, `train()` again for callers of the Python API).
Each key's range is written beside its type in ganctl.config.schema; the few here need what only
the networks, augmentation or data know (their choices, the largest image).

    errors = range_errors(cfg)     # ["trainer.batch_size=0: must be >= 1", ...]
"""
import dataclasses
import functools
import math
import typing
from collections.abc import Sequence

from ganctl.config import schema
from ganctl.config.schema import Rule
from ganctl.data import MAX_IMG_SIZE
from ganctl.nets.dcgan import D_CONDITIONING, G_CONDITIONING, UPSAMPLING
from ganctl.training.augment import OPS


def one_of(choices) -> Rule:
    return Rule("one of " + ", ".join(choices), lambda v: v in choices)


# Ranges that need the code's own lists (a key's type is still the schema's).
CODE_RULES = {
    "dataset.img_size": Rule(f"in [8, {MAX_IMG_SIZE}]", lambda v: 8 <= v <= MAX_IMG_SIZE),
    "model.G.upsample": one_of(UPSAMPLING),
    "model.G.cond": one_of(G_CONDITIONING),
    "model.D.cond": one_of(D_CONDITIONING),
    "augment.policy": Rule("a list of distinct ops of " + ", ".join(OPS),
                           lambda v: all(p in OPS for p in v) and len(set(v)) == len(v)),
}

# The schemas of each group's options: a key's path is the same whichever option holds it.
GROUPS = {
    "model": (schema.MLPModelConfig, schema.DCGANModelConfig, schema.ResNetModelConfig),
    "loss": (schema.BCELossConfig, schema.WGANLossConfig, schema.WGANGPLossConfig),
    "dataset": (schema.TorchvisionDatasetConfig, schema.FolderDatasetConfig),
    "optimizer": (schema.AdamWConfig, schema.RMSpropConfig),
}
COMMANDS = (schema.TrainConfig, schema.SummaryConfig, schema.SampleConfig, schema.EvalCommandConfig,
            schema.ExportConfig, schema.FitClassifierConfig)


def _rules_of(cls, prefix: str, found: dict) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if "rule" in f.metadata:
            if found.setdefault(key, f.metadata["rule"]) is not f.metadata["rule"]:
                raise AssertionError(f"{key} has two ranges in ganctl.config.schema")
        kind = typing.get_args(hints[f.name]) or (hints[f.name],)
        for sub in [k for k in kind if dataclasses.is_dataclass(k)] + list(GROUPS.get(key, ())):
            _rules_of(sub, f"{key}.", found)


@functools.cache
def rules() -> dict[str, Rule]:
    """Every ranged key of every command's config, by its dotted path."""
    found = {}
    for cls in COMMANDS:
        _rules_of(cls, "", found)
    return {**found, **CODE_RULES}


def _finite(v) -> bool:
    """No value of the config is meant to be inf or nan (`loss.r1=inf` diverges at once)."""
    if isinstance(v, float):
        return math.isfinite(v)
    return all(_finite(x) for x in v) if isinstance(v, Sequence) and not isinstance(v, str) else True


def range_errors(cfg) -> list[str]:
    """`key=value: must be ...` for every value of `cfg` (a dict or a config node) out of its range."""
    errors = []
    for key, rule in rules().items():
        *path, leaf = key.split(".")
        parent = cfg
        for part in path:
            parent = parent.get(part) if hasattr(parent, "get") else None
        if not (hasattr(parent, "get") and leaf in parent):
            continue
        if not _finite(parent[leaf]):
            errors.append(f"{key}={parent[leaf]}: must be finite")
        elif not rule.ok(parent[leaf]):
            errors.append(f"{key}={parent[leaf]}: must be {rule.says}")
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
