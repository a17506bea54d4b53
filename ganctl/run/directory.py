"""A run directory has one writer: an exclusive lock held for the run's life, an existing run that
only `resume=` may continue, and no temporary files left behind by a killed writer.

    with lock(run_dir):              # a second process gets one line: who holds it
        refuse_existing_run(run_dir)
        ...train...
"""
import contextlib
import fcntl
import json
import os
from pathlib import Path

from ganctl.errors import UserError

LOCK_FILE = ".lock"
RESULT_FILE = "result.json"  # what a sweep's summary reads of each job

_held: dict[Path, list] = {}  # resolved run dir -> [open lock file, how many holders in this process]


@contextlib.contextmanager
def lock(run_dir: Path):
    """Hold an exclusive lock on `run_dir` (flock on run_dir/.lock); the OS releases it when the
    process dies, so a crash never leaves a stale lock. Re-entrant within one process."""
    key = Path(run_dir).resolve()
    if key in _held:
        _held[key][1] += 1
    else:
        key.mkdir(parents=True, exist_ok=True)
        f = open(key / LOCK_FILE, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise UserError(f"{run_dir} is in use by {holder}: one run directory has one writer; "
                            f"wait for it to end or choose another directory") from None
        f.seek(0)
        f.truncate()
        f.write(f"ganctl pid {os.getpid()}\n")
        f.flush()
        _held[key] = [f, 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            _held.pop(key)[0].close()  # closing the file releases the lock


def nothing():
    """A stand-in for lock() where this process does not own the directory (torchrun ranks > 0)."""
    return contextlib.nullcontext()


def holds_run(run_dir: Path) -> bool:
    """A directory where a run has written checkpoints or logged a step belongs to that run: only
    resume may write there."""
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    has_ckpts = ckpt_dir.is_dir() and any(p.suffix == ".pt" for p in ckpt_dir.iterdir())
    return has_ckpts or (run_dir / "metrics.jsonl").is_file() or (run_dir / RESULT_FILE).is_file()


def refuse_existing_run(run_dir: Path) -> None:
    if holds_run(run_dir):
        raise UserError(f"{run_dir} already holds a run; a new run needs a new directory "
                        f"(or continue it with resume={run_dir})")


def remove_temporary_files(ckpt_dir: Path) -> int:
    """Delete the half-written checkpoints (.<name>.tmp) a killed writer left; only the lock holder
    may call this. Returns how many there were."""
    stale = list(Path(ckpt_dir).glob(".*.tmp")) if Path(ckpt_dir).is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def newest_run(outputs: Path) -> Path:
    """The run directory under `outputs` whose checkpoints/last.pt was written last."""
    outputs = Path(outputs)
    lasts = list(outputs.glob("**/checkpoints/last.pt")) if outputs.is_dir() else []
    if not lasts:
        raise UserError(f"no runs with checkpoints/last.pt under {outputs.resolve()}; "
                        "train one with `ganctl train` or pass ckpt=<run dir or .pt file>")
    return max(lasts, key=lambda p: p.stat().st_mtime).parent.parent


def folders_in(outputs: Path) -> set[Path]:
    """`outputs` and the folders in it, as they are before a run: what a failed start must keep."""
    outputs = Path(outputs).absolute()
    return {outputs, *(p for p in outputs.iterdir() if p.is_dir())} if outputs.is_dir() else set()


def discard_failed_start(run_dir: Path, outputs: Path | None = None, kept: set[Path] = frozenset()) -> None:
    """A new run that failed before it trained leaves nothing behind: the files ganctl and Hydra
    put into its directory go, and the directory too where nothing else is in it, and so do the
    empty folders above it inside `outputs` that were not there before (`kept`: folders_in())."""
    run_dir = Path(run_dir)
    if holds_run(run_dir):
        return
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run_dir / ".hydra" / name).unlink(missing_ok=True)
    for folder in (run_dir / "tb", run_dir / ".hydra"):
        if folder.is_dir() and all(p.name.startswith("events.out.tfevents") for p in folder.iterdir()):
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()
    (run_dir / LOCK_FILE).unlink(missing_ok=True)
    left = list(run_dir.iterdir()) if run_dir.is_dir() else []
    if [p.name for p in left] == ["train.log"]:  # Hydra's log of this job alone
        left[0].unlink()
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()
        if outputs is not None:
            outputs = Path(outputs).absolute()
            for parent in run_dir.absolute().parents:
                if not (parent == outputs or outputs in parent.parents) or parent in kept or any(parent.iterdir()):
                    break
                parent.rmdir()


def write_result(run_dir: Path, result: dict) -> None:
    (Path(run_dir) / RESULT_FILE).write_text(json.dumps(result, indent=1) + "\n")
