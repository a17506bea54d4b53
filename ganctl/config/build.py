"""Build ganctl's objects from config nodes without running anything a file could name.

A config can come from a file someone else wrote (a checkpoint's saved `cfg`, a run's
`.hydra/overrides.yaml`), and `hydra.utils.instantiate` calls whatever its `_target_` names.
`build` accepts only ganctl's own classes for each role, matched by exact name, and refuses every
other `_`-key (`_args_`, `_partial_`, a nested `_target_`), so a crafted file gets one line of
refusal instead of running code.

    G = build(cfg.model.G, "model.G", img_channels=1, img_size=28, num_classes=10)
    opt_G = build(cfg.optimizer.G, "optimizer")(G.parameters())
"""
import functools
import importlib
import inspect
import re

from ganctl.errors import UserError

# What each role may build: (pattern of the exact `_target_`, the check of what it names).
# The config group is the registry: any class of this shape that ganctl defines can be chosen.
ROLES = {
    "model.G": r"ganctl\.nets\.[a-z][a-z0-9_]*\.Generator",
    "model.D": r"ganctl\.nets\.[a-z][a-z0-9_]*\.Discriminator",
    "loss": r"ganctl\.training\.losses\.[A-Z][A-Za-z0-9]*",
    "dataset": r"ganctl\.data\.load_[a-z][a-z0-9_]*",
    "optimizer": r"torch\.optim\.[A-Z][A-Za-z0-9]*",
}


def _is_role(role: str, obj) -> bool:
    if role in ("model.G", "model.D"):
        from torch import nn
        return inspect.isclass(obj) and issubclass(obj, nn.Module)
    if role == "loss":
        from ganctl.training.losses import Loss
        return inspect.isclass(obj) and issubclass(obj, Loss)
    if role == "optimizer":
        import torch
        return inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)
    return inspect.isfunction(obj)  # dataset: a load_* function


# Where a saved config from before the package's folders (0.x runs) names a module that moved.
MOVED = {"ganctl.losses.": "ganctl.training.losses."}


def moved(target):
    """`target` under its module's present name, where a saved config names one that moved."""
    if not isinstance(target, str):
        return target
    return next((new + target[len(old):] for old, new in MOVED.items() if target.startswith(old)), target)


def resolve_target(target, role: str):
    """The class or function that `target` names, if `role` may build it; else a UserError."""
    target = moved(target)
    if not isinstance(target, str) or not re.fullmatch(ROLES[role], target):
        shown = target if isinstance(target, str) else repr(target)
        raise UserError(f"{role}._target_={shown} is not one of ganctl's own {role} classes; "
                        f"refusing to build it (a config from a file must never run code)")
    module_name, name = target.rsplit(".", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise UserError(f"{role}._target_={target}: no module {module_name}") from None
    obj = getattr(module, name, None)
    # Defined in that module (torch.optim: in its package), not imported into it, and of the role's kind.
    home = getattr(obj, "__module__", None) or ""
    if obj is None or not (home == module_name or home.startswith(f"{module_name}.")) or not _is_role(role, obj):
        raise UserError(f"{role}._target_={target} is not one of ganctl's own {role} classes")
    return obj


def plain(node) -> dict:
    """A config node as plain dicts and lists (OmegaConf nodes resolved), whatever its origin."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
        if isinstance(node, (DictConfig, ListConfig)):
            return OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    except ImportError:  # plain dicts need no OmegaConf
        pass
    return node


def private_keys(value, path: str) -> list[str]:
    """Every key below `value` that starts with `_`: Hydra's instantiate reads those as orders."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            key = f"{path}.{k}"
            if str(k).startswith("_"):
                found.append(key)
            found += private_keys(v, key)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found += private_keys(v, f"{path}[{i}]")
    return found


def build(node, role: str, **extra):
    """`role`'s object from `node`: its `_target_` called with the node's other keys and `extra`
    (which win). An optimizer node is partial: the result takes the parameters."""
    kwargs = plain(node)
    if not isinstance(kwargs, dict):
        raise UserError(f"{role} must be a config node with a _target_, got {kwargs!r}")
    kwargs = dict(kwargs)
    target = kwargs.pop("_target_", None)
    partial = kwargs.pop("_partial_", False) if role == "optimizer" else False
    bad = private_keys(kwargs, role)
    if bad:
        raise UserError(f"{', '.join(bad)}: keys starting with '_' are not allowed in {role}; "
                        f"refusing to build it (a config from a file must never run code)")
    obj = resolve_target(target, role)
    kwargs.update(extra)
    if partial:
        return functools.partial(obj, **kwargs)
    try:
        return obj(**kwargs)
    except (TypeError, ValueError) as e:  # a key the class does not take, or a value it refuses
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{role} ({target}): {message}") from None
