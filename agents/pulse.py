"""The runner's pulse: lease heartbeats to the store and ``heartbeat`` events, while it waits or works.

The runner is single-threaded (a store instance belongs to one thread), so heartbeats are
cooperative: every wait goes through ``Pulse.sleep``, which beats when one is due, and agent
kinds that block call ``Pulse.beat`` between steps. A simulated stall calls ``go_silent``: the
process stays alive but neither renews its lease nor writes events, exactly what the
supervisor must detect.
"""

from __future__ import annotations

import math

from coordstore.clock import MONOTONIC, Clock
from coordstore.errors import StoreError
from coordstore.models import SETTLED

class LeaseLost(BaseException):
    """The lease could not be renewed for a whole lease (the store unreachable), or was renewed
    only after the agent had been reaped: the supervisor has requeued (or is about to requeue) its
    tasks and handed its slot on, so the runner must stop at once. A BaseException, so no
    ``except Exception`` on the way eats it."""


# longest single nap, so a beat is never late by more than this and SIGTERM is seen at once
MAX_NAP_MS = 250


class Pulse:
    """``clock`` (ms, monotonic by default) decides when a beat is due and does the napping: a
    test's fake clock steps every wait of the runner, its policy and its kind without sleeping."""

    def __init__(self, store, run_id: str, agent_id: str, events, heartbeat_ms: int, lease_ms: int,
                 clock: Clock = MONOTONIC):
        self.store = store
        self.run_id = run_id
        self.agent_id = agent_id
        self.events = events
        self.heartbeat_ms = heartbeat_ms
        self.lease_ms = lease_ms
        self.clock = clock
        self.current_task: str | None = None
        self.silent = False
        self._last_beat: float = float("-inf")
        self._renewed = clock()  # the last renewal the store acknowledged (registration counts)
        self._seq_at_beat = events.next_seq  # events said since then prove life: no heartbeat needed

    def renew(self, force: bool = False) -> bool:
        """Renew the lease if due (or ``force``), writing no event; True when it renewed.

        For waits on an outside process (a CLI agent) whose own output is the proof of life: a
        heartbeat event there would hide a hung model stream from the supervisor.
        """
        if self.silent:
            return False
        now = self.clock()
        if not force and now - self._last_beat < self.heartbeat_ms:
            return False
        self._last_beat = now
        lapsed = now - self._renewed >= self.lease_ms
        try:
            agent = self.store.heartbeat(self.run_id, self.agent_id, self.lease_ms, current_task=self.current_task)
        except StoreError as e:  # a busy or briefly unreachable store: the next beat retries, within the lease
            self.events.error(f"heartbeat failed: {e}", task=self.current_task)
            if lapsed:
                raise LeaseLost(f"lease lost: not renewed for {now - self._renewed:.0f} ms (lease {self.lease_ms} ms): {e}") from e
            return True
        if lapsed and getattr(agent, "status", None) in SETTLED:
            raise LeaseLost(f"lease lost: renewed after {now - self._renewed:.0f} ms, the agent is {agent.status} meanwhile")
        self._renewed = now
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
        """Wait ``seconds`` (kinds and policies count in seconds) on the clock, beating whenever
        one is due."""
        end = self.clock() + math.ceil(max(0.0, seconds) * 1000)
        while True:
            self.beat()
            left = end - self.clock()
            if left <= 0:
                return
            self.clock.sleep(min(left, MAX_NAP_MS, self.heartbeat_ms))

    def idle(self, seconds: float, wait) -> None:
        """Like ``sleep``, but ends early when ``wait(ms)`` (blocking up to ``ms``, e.g. the store's
        ``wait_for_change``) returns True; beats whenever one is due meanwhile."""
        end = self.clock() + math.ceil(max(0.0, seconds) * 1000)
        while True:
            self.beat()
            left = end - self.clock()
            if left <= 0 or wait(min(left, MAX_NAP_MS, self.heartbeat_ms)):
                return

    def go_silent(self) -> None:
        """Stop every heartbeat for good (a simulated stall)."""
        self.silent = True
