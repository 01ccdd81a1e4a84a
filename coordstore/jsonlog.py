"""An append-only file of JSON lines, safe for many processes: the file store's journals.

The rules that make it safe (the caller holds an exclusive lock for every append):

* one line = one whole record, written with ONE ``os.write`` on an O_APPEND descriptor;
* readers take only complete lines (ending in ``\\n``) and remember the offset after the last;
  they need no lock: a line being written is simply not complete yet;
* a writer killed inside ``os.write`` leaves a torn last line; readers ignore it and the next
  writer, holding the lock (so nobody can be writing), truncates it before appending;
* a read-only reader never writes, and reports a torn tail as damage (``read_complete``): a
  journal cut short and a writer killed inside ``os.write`` look the same, and the records lost
  with a cut cannot be known, so showing the rest as the whole file would be a lie.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from coordstore.errors import InputError, StoreDamaged
from coordstore.private import open_private

# catch-up reads in slices of this size, so replaying a large journal never doubles its memory
READ_CHUNK = 8 << 20


class Shrunk(Exception):
    """The file shrank below what this reader had read (replaced or cut by hand): start over."""


class JsonLog:
    """An append-only file of JSON lines, read incrementally from ``off`` (end of complete lines)."""

    def __init__(self, path: Path, readonly: bool = False):
        self.path = path
        self.readonly = readonly
        self.fd: int | None = None
        self.off = 0
        self.torn = 0  # bytes after the last complete line at the last read

    def open(self) -> None:
        if self.readonly:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        else:
            self.fd = open_private(self.path, os.O_RDWR | os.O_APPEND)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def read_new(self) -> Iterator[tuple[int, bytes]]:
        """(offset, line) for each complete line since the last read. ``off`` passes a line only
        when the consumer asks for the next one, so a line whose processing raised is read again."""
        size = os.fstat(self.fd).st_size
        if size < self.off:
            raise Shrunk()
        while self.off < size:
            data = os.pread(self.fd, min(size - self.off, READ_CHUNK), self.off)
            end = data.rfind(b"\n") + 1
            if end == 0:  # no newline in this slice: an incomplete tail (or a line > READ_CHUNK)
                if len(data) < READ_CHUNK:
                    break
                data = os.pread(self.fd, size - self.off, self.off)
                end = data.rfind(b"\n") + 1
                if end == 0:
                    break
            for line in data[:end].split(b"\n")[:-1]:
                yield self.off, line
                self.off += len(line) + 1
        self.torn = size - self.off

    def read_complete(self, apply: Callable[[], None], lock_path: Path) -> None:
        """``apply()`` consumes ``read_new()``. Read-only, a torn tail is looked at again with
        writers excluded (a line being appended completes first); if it stays, it is damage."""
        apply()
        if self.readonly and self.torn:
            with writers_excluded(lock_path):
                apply()
                if self.torn:
                    raise StoreDamaged(f"{self.path}: damaged: ends inside a record (bytes {self.off}-"
                                       f"{self.off + self.torn}): cut short, or its writer was killed; "
                                       "the next write would drop it")

    def append(self, line: bytes, fsync: bool) -> None:
        """Append one whole line; the caller holds the lock and has just read to the end."""
        if self.torn:
            os.ftruncate(self.fd, self.off)  # a killed writer's incomplete line
            self.torn = 0
        n = os.write(self.fd, line)
        if n != len(line):  # disk full and the like: take the partial line back
            os.ftruncate(self.fd, self.off)
            raise OSError(f"short write ({n} of {len(line)} bytes)")
        if fsync:
            os.fsync(self.fd)
        self.off += n


@contextlib.contextmanager
def writers_excluded(lock_path: Path):
    """Hold the writers' lock file shared: no append is in progress meanwhile, so a torn tail seen
    inside is final. Without a lock file no writer ever opened the store."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def encode(doc) -> bytes:
    """One compact JSON line; data that JSON cannot hold is the caller's error."""
    try:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode() + b"\n"
    except (TypeError, ValueError) as e:
        raise InputError(f"store data is not JSON-serializable: {e}") from e
