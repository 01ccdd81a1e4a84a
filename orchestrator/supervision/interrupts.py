"""Signals that end a run the way Ctrl-C does.

SIGINT (Ctrl-C), SIGTERM (``timeout``, ``kill``, a service manager) and SIGHUP (the terminal went
away) all raise ``Interrupted`` in the main thread while ``catch_signals()`` is active, so the
orchestrator stops its runners' process groups and records the run interrupted instead of dying
and leaving them unsupervised (runners live in sessions of their own: no signal reaches them
unless the orchestrator sends it). Inside ``deferred()`` a signal is held and raised when the block
ends: spawning a runner and recording it happen together or not at all, and the shutdown itself
is not cut short by a second Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; ``run_id``/``run_dir`` name the run it interrupted, once recorded."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.run_id: str | None = None
        self.run_dir: str | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process a signal ended

    def __str__(self) -> str:
        if self.run_dir is None:
            return f"interrupted by {self.name}"
        return (f"interrupted by {self.name}: run {self.run_id} stopped with its runners and recorded as interrupted; "
                f"`orch resume {self.run_dir}` finishes it")


class _State:
    depth = 0  # open deferred() blocks
    pending: int | None = None  # a signal that arrived inside one


def _raise(signum: int, frame) -> None:
    if _State.depth:
        _State.pending = _State.pending or signum
        return
    raise Interrupted(signum)


@contextmanager
def catch_signals() -> Iterator[None]:
    """Within: a stop signal raises ``Interrupted`` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in STOP_SIGNALS}
    _State.pending = None
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def deferred(deliver: bool = True) -> Iterator[None]:
    """Hold stop signals during the block; raise the first one after it (``deliver``) or drop it
    (the caller is already stopping)."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if _State.depth == 0 and _State.pending is not None:
        signum, _State.pending = _State.pending, None
        if deliver:
            raise Interrupted(signum)
