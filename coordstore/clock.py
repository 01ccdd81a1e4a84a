"""Time, one convention: integer milliseconds read from a clock the caller was given.

Every loop (the store, the run loop and its watcher, the supervisor, the runner, its pulse and
its policy) reads the time from an injected ``Clock`` and waits through that clock's ``sleep``,
so a test steps all of it with one fake clock and no real sleep. Two real clocks:

* ``WALL``: milliseconds since the epoch. What crosses process (and host) boundaries: the store's
  timestamps and leases, event stamps, the supervisor's ``now``.
* ``MONOTONIC``: intervals and deadlines inside one process (heartbeat due, gap waits, rescans),
  which a wall clock set back or forward must not stretch or cut short.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> int:
        """Now, in integer milliseconds."""

    def sleep(self, ms: float) -> None:
        """Wait ``ms`` milliseconds (nothing for ms <= 0); a fake clock moves its time instead."""


class RealClock:
    """A clock of this machine: ``read`` gives now in ms, ``sleep`` really sleeps."""

    def __init__(self, name: str, read: Callable[[], int]):
        self.name = name
        self._read = read

    def __call__(self) -> int:
        return self._read()

    def sleep(self, ms: float) -> None:
        if ms > 0:
            time.sleep(ms / 1000.0)

    def __repr__(self) -> str:
        return f"RealClock({self.name})"


def wall_clock_ms() -> int:
    """Milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


WALL = RealClock("wall", wall_clock_ms)
MONOTONIC = RealClock("monotonic", monotonic_ms)

__all__ = ["Clock", "MONOTONIC", "RealClock", "WALL", "monotonic_ms", "wall_clock_ms"]
