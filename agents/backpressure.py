"""Rate limits as back-pressure: what an agent does when its provider answers 429.

Two modes (``execution.backpressure``):

* ``agent``: the agent that saw the 429 pauses itself for the retry time; every other agent of the
  provider goes on sending requests (what each CLI does on its own).
* ``shared`` (the default): one limiter per provider, kept in the store, that every agent of that
  provider in the run goes through before a task's model work (AIMD, like TCP's congestion window):
  a 429 halves the provider's allowed concurrency (at least 1) and pauses the whole provider for the
  retry time; each success counts towards growing it again by one (+1 once ``limit`` tasks ended
  well), up to ``ceiling`` (the number of working agents that share the provider). Until the
  provider's first 429 the limiter costs one read per task and writes nothing: the 64 agents of a
  run that is never limited do not take turns on slot rows.

The shared state is rows of the run's history (entity ``provider``, ``entity_id`` = the provider),
folded by every agent the same way, so all see one limit and one pause whatever backend holds them:

* ``acquired`` (key ``acquire:<provider>:<slot>:<gen>``): the store keeps one row per key, so each
  generation of each concurrency slot has exactly one holder (the same idiom as ``runs.slots``);
* ``released`` (``data.ok``: the task's model work ended without a failure);
* ``limited`` (``data.retry_after_ms``): its ``ts_ms``, stamped by the store (the database clock
  on PostgreSQL), starts the pause. Several 429s inside one pause are one congestion event: the
  limit is halved once per pause, the pause lasts until the latest one's retry time.

A slot whose holder died (agent ``dead``, ``stopped`` or ``killed``) stops counting once a waiter
looks; a respawned runner releases what its predecessor held. Right after a halving, agents that
held slots beyond the new limit finish their work: the limit binds the next acquires, not them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from coordstore.clock import MONOTONIC
from coordstore.models import SETTLED, Transition

Mode = Literal["shared", "agent"]
MODES: tuple[str, ...] = get_args(Mode)
ENTITY = "provider"
# the provider of each real CLI's kind; sim and the others name theirs in kind option ``provider``
PROVIDERS: dict[str, str] = {"claude": "anthropic", "codex": "openai", "gemini": "google"}
DEFAULT_PROVIDER = "sim"
NO_MODEL = frozenset({"script", "replay"})  # kinds that send no request to any provider: nothing to limit
BLOCKED_LOOK_S = 0.5  # a waiter for a full provider looks at least this often (woken early by any change)
HOLDERS_EVERY_MS = 1_000  # how often a blocked waiter checks whether holders are still alive


def provider_of(kind: str, options: dict[str, Any] | None) -> str:
    """The provider an agent of ``kind`` sends its requests to."""
    chosen = (options or {}).get("provider")
    if isinstance(chosen, str) and chosen:
        return chosen
    return PROVIDERS.get(kind, DEFAULT_PROVIDER if kind == "sim" else kind)


@dataclass
class ProviderState:
    """One provider's limiter as folded from its rows."""

    limit: int
    ceiling: int
    successes: int = 0  # since the limit last changed
    paused_until_ms: int = 0
    held: dict[int, tuple[int, str]] = field(default_factory=dict)  # slot -> (generation, agent)
    gens: dict[int, int] = field(default_factory=dict)  # slot -> its latest generation taken
    limited: int = 0  # 429s recorded
    halvings: int = 0

    def apply(self, r: Transition) -> None:
        d = r.data or {}
        if r.to_state == "acquired":
            slot, gen = int(d["slot"]), int(d["gen"])
            self.gens[slot] = max(self.gens.get(slot, 0), gen)
            self.held[slot] = (gen, r.agent or "")
        elif r.to_state == "released":
            slot, gen = int(d["slot"]), int(d["gen"])
            if self.held.get(slot, (None,))[0] == gen:
                del self.held[slot]
            if d.get("ok"):
                self.successes += 1
                if self.successes >= self.limit:  # additive increase: +1 per window of successes
                    self.limit, self.successes = min(self.ceiling, self.limit + 1), 0
        elif r.to_state == "limited":
            self.limited += 1
            if r.ts_ms >= self.paused_until_ms:  # a new congestion event: multiplicative decrease
                self.limit, self.successes = max(1, self.limit // 2), 0
                self.halvings += 1
            self.paused_until_ms = max(self.paused_until_ms, r.ts_ms + int(d.get("retry_after_ms", 0)))


class AgentPauses:
    """``agent`` mode: each agent pauses itself; nothing is shared."""

    mode = "agent"

    def __init__(self, events, pulse, provider: str):
        self.events, self.pulse, self.provider = events, pulse, provider

    def acquire(self) -> None:
        pass

    def release(self, ok: bool) -> None:
        pass

    def observed(self, retry_after_s: float) -> None:
        """A 429 the kind reported (its own wait is its own business)."""

    def rate_limited(self, retry_after_s: float, task: str | None = None) -> None:
        """A 429 on this agent's request: say so, wait the retry time, then the kind retries."""
        self.events.rate_limited(retry_after_s, task=task)
        self.pulse.sleep(retry_after_s)


class SharedLimiter(AgentPauses):
    """``shared`` mode: the provider's AIMD limiter in the store (module doc)."""

    mode = "shared"

    def __init__(self, store, run_id: str, agent_id: str, provider: str, ceiling: int, events, pulse, poll_ms: int = 20):
        super().__init__(events, pulse, provider)
        self.store, self.run_id, self.agent_id = store, run_id, agent_id
        self.poll_ms = max(1, poll_ms)
        self.state = ProviderState(limit=max(1, ceiling), ceiling=max(1, ceiling))
        self.cursor = 0
        self.mine: tuple[int, int] | None = None  # (slot, generation) this agent holds
        self._settled: set[str] = set()
        self._settled_at = -(1 << 62)

    def refresh(self) -> ProviderState:
        for r in self.store.history(self.run_id, since_seq=self.cursor, entity=ENTITY, entity_id=self.provider):
            self.cursor = max(self.cursor, r.seq)
            self.state.apply(r)
        return self.state

    def _row(self, to_state: str, data: dict, key: str | None = None):
        return self.store.record(Transition(run_id=self.run_id, ts_ms=self.store.clock(), entity=ENTITY, entity_id=self.provider,
                                            to_state=to_state, agent=self.agent_id, data=data, key=key))

    def _holders(self, st: ProviderState) -> dict[int, tuple[int, str]]:
        """The held slots whose holders may still be running (checked at most every HOLDERS_EVERY_MS)."""
        now = self.pulse.clock()
        if now - self._settled_at >= HOLDERS_EVERY_MS:
            self._settled_at = now
            self._settled = {a.id for a in self.store.list_agents(self.run_id) if a.status in SETTLED}
        return {s: h for s, h in st.held.items() if h[1] not in self._settled or h[1] == self.agent_id}

    def release_predecessors(self) -> None:
        """Slots held under this agent's id by a runner that is gone (this one holds none yet)."""
        for slot, (gen, agent) in sorted(self.refresh().held.items()):
            if agent == self.agent_id:
                self._row("released", {"slot": slot, "gen": gen, "ok": False, "why": "predecessor gone"},
                          key=f"release:{self.provider}:{slot}:{gen}")

    def acquire(self) -> None:
        """Wait until the provider is not paused and fewer than its limit are in flight, then
        take a slot. Waits through the pulse, so heartbeats go on."""
        if self.mine is not None:
            return
        while True:
            st = self.refresh()
            if not st.limited:  # no 429 yet: nothing to share, no rows (a run that is never limited pays one read)
                return
            now = self.store.clock()
            if now < st.paused_until_ms:
                self.pulse.sleep(min(st.paused_until_ms - now, 1000) / 1000.0)
                continue
            held = self._holders(st)
            if len(held) >= st.limit:
                self._wait_for_a_release()
                continue
            slot = next(i for i in range(len(st.held) + 1) if i not in st.held)
            gen = st.gens.get(slot, 0) + 1
            if self._row("acquired", {"slot": slot, "gen": gen, "limit": st.limit},
                         key=f"acquire:{self.provider}:{slot}:{gen}") is not None:
                self.mine = (slot, gen)
                return
            # another agent took that slot first: look again at once

    def _wait_for_a_release(self) -> None:
        """Until the run changes (a release is a row), not a poll every few ms: 64 waiting agents
        must not query the store thousands of times a second. A test's fake clock steps instead."""
        if self.pulse.clock is MONOTONIC:
            self.pulse.idle(BLOCKED_LOOK_S, lambda ms: self.store.wait_for_change(self.run_id, ms, self.poll_ms))
        else:
            self.pulse.sleep(self.poll_ms / 1000.0)

    def release(self, ok: bool) -> None:
        if self.mine is None:
            return
        slot, gen = self.mine
        self.mine = None
        self._row("released", {"slot": slot, "gen": gen, "ok": bool(ok)}, key=f"release:{self.provider}:{slot}:{gen}")

    def observed(self, retry_after_s: float) -> None:
        """Every ``rate_limited`` event this agent emits (the kinds' own included): one 429 for
        the whole provider."""
        self._row("limited", {"retry_after_ms": max(0, round(retry_after_s * 1000))})

    def rate_limited(self, retry_after_s: float, task: str | None = None) -> None:
        """A 429 on this agent's request: record it (the event's hook halves and pauses the
        provider), give the slot back and wait for a new one under the new limit."""
        self.events.rate_limited(retry_after_s, task=task)
        self.release(ok=False)
        self.acquire()  # the 429 is recorded (the event's hook): this waits out the pause, under the new limit


def make_pacer(mode: str, store, run_id: str, agent_id: str, provider: str, ceiling: int, events, pulse, poll_ms: int = 20):
    """The agent's back-pressure for ``mode`` (one of MODES)."""
    if mode == "shared":
        return SharedLimiter(store, run_id, agent_id, provider, ceiling, events, pulse, poll_ms)
    return AgentPauses(events, pulse, provider)


def pacing(mode: str, kind: str, options: dict[str, Any], working: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """An agent's runner-config keys for back-pressure: its provider, and the ceiling of that
    provider's limit: how many of the run's working agents (``working``: their kinds and
    options) send to it. A kind without a model (NO_MODEL) has nothing to share: ``agent``."""
    provider = provider_of(kind, options)
    ceiling = sum(provider_of(k, o) == provider for k, o in working)
    return {"backpressure": "agent" if kind in NO_MODEL else mode, "provider": provider, "provider_ceiling": max(1, ceiling)}
