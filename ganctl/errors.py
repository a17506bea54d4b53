"""User mistakes become one line on stderr and a non-zero exit, never a traceback."""
import errno
import shutil
import sys
from pathlib import Path


class UserError(Exception):
    """Bad input from the user: the message is the whole story, so no traceback is shown."""


class Interrupted(UserError):
    """SIGINT/SIGTERM: the run saved a checkpoint and stops; exit 128 + signal number, as shells do."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def fail(message: str, code: int = 2):
    """The one line a user gets for a mistake, and the exit."""
    print(f"ganctl: error: {message}", file=sys.stderr)
    raise SystemExit(code)


class Aborted(Exception):
    """An eval or a generation stopped early because its abort() said so (a signal arrived)."""


# Errors that say a file could not be written (rather than read).
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def free_space(path) -> str:
    """Free space on the disk that holds `path` (or its nearest existing parent), e.g. '3.1 MB'."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "unknown"
    if free < 1000:
        return f"{free} B"
    for unit in ("kB", "MB", "GB", "TB"):
        free /= 1000
        if free < 1000 or unit == "TB":
            return f"{free:.3g} {unit}"


def one_line(e: BaseException) -> str:
    """An exception as one line; an OSError says which file, why, and on a full disk the free space."""
    if isinstance(e, OSError):
        why = e.strerror or str(e)
        where = f"{e.filename}: " if e.filename else ""
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and e.filename:
            why += f" ({free_space(Path(e.filename).parent)} free there)"
        return f"cannot write {where}{why}" if e.errno in WRITE_ERRNOS else f"{where}{why}"
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = " ".join(lines)  # a message spread over lines, as one (a download's tries, say)
    return (text[:397] + "...") if len(text) > 400 else text or type(e).__name__

