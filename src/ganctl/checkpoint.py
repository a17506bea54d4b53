"""Checkpoints are plain dicts of state_dicts, tensors and builtins, written atomically and read
with weights_only=True, so a file can never run code and a crash never leaves a torn file.

    {"G", "D", "opt_G", "opt_D": state_dicts, "step", "epoch", "batch": ints,
     "rng": {"torch", "cuda"}, "data": {"img_channels", "img_size", "num_classes"}, "cfg": dict}
"""
import os
import tempfile
from pathlib import Path

import torch

from ganctl.errors import UserError

REQUIRED_KEYS = ("G", "D", "opt_G", "opt_D", "step", "epoch", "batch", "rng", "data", "cfg")


def save_checkpoint(state: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # disk full, folder not writable: the previous file was never touched
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise UserError(f"could not write checkpoint {path} ({e.strerror or e}); "
                        f"the previous checkpoint there is intact") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


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
    return state


def holds_run(run_dir: Path) -> bool:
    """A directory that already has checkpoints belongs to a run: only resume may write there."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    return ckpt_dir.is_dir() and any(ckpt_dir.iterdir())


def newest_run(outputs: Path) -> Path:
    """The run directory under `outputs` whose checkpoints/last.pt was written last."""
    outputs = Path(outputs)
    lasts = list(outputs.glob("**/checkpoints/last.pt")) if outputs.is_dir() else []
    if not lasts:
        raise UserError(f"no runs with checkpoints/last.pt under {outputs.resolve()}; "
                        "train one with `ganctl train` or pass ckpt=<run dir or .pt file>")
    return max(lasts, key=lambda p: p.stat().st_mtime).parent.parent


def resolve_checkpoint(ckpt: str | None, outputs: str = "outputs") -> Path:
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
