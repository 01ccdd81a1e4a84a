"""Files for their owner's eyes only: every file orch writes for a run is 0600 and every directory
0700, whatever the umask (as ssh, gpg and PostgreSQL keep theirs). A run's store, events, logs
and exports hold prompts, command output and history; other users of the machine have no
business reading them.

Everything a run writes goes through these (stores, logs, exports, runner configs, the run
directory itself; the event writer, kept standard-library only, uses the same modes by itself);
git's own files -- the worktrees, a demo repository -- keep git's modes.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str | os.PathLike) -> Path:
    """``path`` as a directory only its owner can enter (created with missing parents, which keep
    the umask's modes: only the last one is the run's)."""
    p = Path(path)
    p.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(p, DIR_MODE)  # mkdir's mode passes through the umask and skips an existing directory
    return p


def open_private(path: str | os.PathLike, flags: int) -> int:
    """``os.open`` of ``path`` with ``O_CREAT``: a file only its owner can read (an existing one
    is made so too). Returns the descriptor."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_private(path: str | os.PathLike) -> bool:
    """Create ``path`` as an empty file only its owner can read; one that exists is left as it is
    (a store the user made elsewhere keeps its modes). True if it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def write_private(path: str | os.PathLike, data: str | bytes) -> None:
    """Replace ``path`` atomically with ``data``, as a file only its owner can read: a temp file
    beside it, flushed to disk, then renamed into place, so a reader (or a crash) finds the old
    file or the new one, never half of one. orch's one atomic write; the event writer's delivery
    (agents/events.py) is another protocol: no-clobber links to sequence names."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
