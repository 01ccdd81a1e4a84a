"""The runner's pulse: lease heartbeats to the store and ``heartbeat`` events, while it waits or works.

The runner is single-threaded (a store instance belongs to one thread), so heartbeats are
cooperative: every wait goes through ``Pulse.sleep``, which beats when one is due, and agent
kinds that block call ``Pulse.beat`` between steps. A simulated stall calls ``go_silent``: the
process stays alive but neither renews its lease nor writes events, exactly what the
supervisor must detect.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from coordstore.errors import StoreError

# longest single sleep, so a beat is never late by more than this and SIGTERM is seen at once
MAX_NAP_S = 0.25


class Pulse:
    def __init__(self, store, run_id: str, agent_id: str, events, heartbeat_ms: int, lease_ms: int,
                 clock: Callable[[], float] = time.monotonic, nap: Callable[[float], None] = time.sleep):
        self.store = store
        self.run_id = run_id
        self.agent_id = agent_id
        self.events = events
        self.heartbeat_s = heartbeat_ms / 1000.0
        self.lease_ms = lease_ms
        self.clock = clock
        self.nap = nap
        self.current_task: str | None = None
        self.silent = False
        self._last_beat = float("-inf")
        self._seq_at_beat = events.next_seq  # events said since then prove life: no heartbeat needed

    def renew(self, force: bool = False) -> bool:
        """Renew the lease if due (or ``force``), writing no event; True when it renewed.

        For waits on an outside process (a CLI agent) whose own output is the proof of life: a
        heartbeat event there would hide a hung model stream from the supervisor.
        """
        if self.silent:
            return False
        now = self.clock()
        if not force and now - self._last_beat < self.heartbeat_s:
            return False
        self._last_beat = now
        try:
            self.store.heartbeat(self.run_id, self.agent_id, self.lease_ms, current_task=self.current_task)
        except StoreError as e:  # a busy or briefly unreachable store: the next beat retries
            self.events.error(f"heartbeat failed: {e}", task=self.current_task)
        return True

    def beat(self, force: bool = False) -> None:
        """Renew the lease and prove liveness, if a beat is due (or ``force``)."""
        if not self.renew(force):
            return
        # a heartbeat event only when nothing else was said since the last beat: any event proves life
        if self.events.next_seq == self._seq_at_beat:
            self.events.heartbeat(task=self.current_task)
        self._seq_at_beat = self.events.next_seq

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, beating whenever one is due."""
        end = self.clock() + max(0.0, seconds)
        while True:
            self.beat()
            left = end - self.clock()
            if left <= 0:
                return
            self.nap(min(left, MAX_NAP_S, self.heartbeat_s))

    def go_silent(self) -> None:
        """Stop every heartbeat for good (a simulated stall)."""
        self.silent = True
