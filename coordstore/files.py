"""Reading a file that a user or a run named: its bytes, or one line naming the file and what is
wrong with it (standard library only: the runner reads its config through it at start-up)."""

from __future__ import annotations

import os
from pathlib import Path

from coordstore.errors import InputError


def read_file(path: str | os.PathLike, what: str = "") -> bytes:
    """The file's bytes; ``InputError`` as ``[what ]PATH: no such file`` (or a directory, or unreadable)."""
    named = f"{what} {path}" if what else str(path)
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as e:
        raise InputError(f"{named}: no such file") from e
    except IsADirectoryError as e:
        raise InputError(f"{named}: is a directory, not a file") from e
    except OSError as e:
        raise InputError(f"{named}: cannot read: {e.strerror or e}") from e
