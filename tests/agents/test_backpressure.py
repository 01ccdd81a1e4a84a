"""The shared per-provider limiter (agents.backpressure) on every store backend: AIMD from the
provider rows every agent folds the same way, a pause that makes the next acquire wait (on the
store's clock), one holder per slot generation, dead holders and gone predecessors."""

from __future__ import annotations

import pytest

from agents.backpressure import AgentPauses, ProviderState, SharedLimiter, make_pacer, pacing, provider_of
from agents.events import EventWriter
from agents.pulse import Pulse
from coordstore.models import Agent


@pytest.fixture
def limiters(store, new_run, clock, tmp_path):
    run = new_run(["t1"])

    def make(agent: str, ceiling: int = 4) -> SharedLimiter:
        store.register_agent(run, Agent(id=agent, kind="sim"), lease_ms=600_000)
        events = EventWriter(tmp_path / "events" / agent, agent, clock=clock)
        pulse = Pulse(store, run, agent, events, heartbeat_ms=100_000, lease_ms=600_000, clock=clock)
        lim = SharedLimiter(store, run, agent, "acme", ceiling, events, pulse, poll_ms=10)
        events.on_rate_limited = lim.observed
        return lim

    return make


def engage(lim: SharedLimiter) -> None:
    """The provider's first 429, without a pause: from here on slots are rows (it halves the limit)."""
    lim.observed(0.0)


def test_a_provider_never_limited_costs_no_rows(limiters, store):
    a, b = limiters("a"), limiters("b")
    for lim in (a, b):
        lim.acquire()
        assert lim.mine is None
        lim.release(ok=True)
    assert not store.history(a.run_id, entity="provider")
    engage(a)
    b.acquire()
    assert b.mine == (0, 1) and [r.to_state for r in store.history(a.run_id, entity="provider")] == ["limited", "acquired"]


def test_a_429_halves_the_provider_once_per_pause_and_successes_grow_it_back(limiters, clock):
    a, b = limiters("a", ceiling=8), limiters("b", ceiling=8)
    engage(a)  # 8 -> 4
    a.acquire()
    b.acquire()
    assert {a.mine[0], b.mine[0]} == {0, 1}
    assert a.refresh().limit == 4 and set(a.state.held) == {0, 1}
    a.observed(2.0)  # a 429 seen by a: the whole provider halves and pauses
    b.observed(1.0)  # another inside the same pause: one congestion event, not two halvings
    st = b.refresh()
    assert (st.limit, st.halvings, st.limited) == (2, 2, 3)
    assert st.paused_until_ms >= clock() + 2000
    a.release(ok=True)
    b.release(ok=True)  # two successes at limit 2: +1
    assert a.refresh().limit == 3 and not a.state.held


def test_an_acquire_waits_out_the_pause_on_the_store_clock(limiters, clock):
    a, b = limiters("a", ceiling=2), limiters("b", ceiling=2)
    engage(a)  # 2 -> 1
    a.acquire()
    a.rate_limited(5.0, task="t1")  # a's own 429: recorded, slot given back, taken again after the pause
    paused_until = a.state.paused_until_ms
    assert a.mine is not None and clock() >= paused_until
    st = b.refresh()
    assert st.limit == 1 and len(b._holders(st)) == 1  # b would wait: a holds the one slot there is
    a.release(ok=True)  # one success at limit 1: +1
    b.acquire()
    assert b.refresh().limit == 2 and b.mine is not None
    b.release(ok=False)
    assert b.refresh().limit == 2  # a failure does not grow it


def test_each_slot_generation_has_one_holder(limiters):
    a, b = limiters("a", ceiling=1), limiters("b", ceiling=1)
    engage(a)
    a.acquire()
    b.cursor, b.state = 0, ProviderState(limit=1, ceiling=1)
    stale = b._row("acquired", {"slot": 0, "gen": 1}, key="acquire:acme:0:1")  # b did not see a's row
    assert stale is None
    assert a.refresh().held == {0: (1, "a")}


def test_a_dead_holder_stops_counting_and_a_respawned_runner_frees_its_predecessors_slot(limiters, store):
    a = limiters("a", ceiling=1)
    engage(a)
    a.acquire()
    store.set_agent_status(a.run_id, "a", "dead", reason="lease expired")
    b = limiters("b", ceiling=1)
    b.acquire()  # a's slot is a dead agent's: b is not blocked by it
    assert b.mine == (1, 1)
    again = limiters("a", ceiling=1)  # a's next runner
    again.release_predecessors()
    assert set(again.refresh().held) == {1}


def test_per_agent_mode_pauses_only_itself(tmp_path, clock):
    events = EventWriter(tmp_path / "ev", "a", clock=clock)

    class Beatless:
        def __init__(self):
            self.clock = clock

        def sleep(self, s):
            clock.sleep(s * 1000)

    pacer = AgentPauses(events, Beatless(), "acme")
    t0 = clock()
    pacer.acquire()
    pacer.rate_limited(3.0, task="t1")
    assert clock() - t0 == 3000 and events.next_seq == 1


def test_providers_and_ceilings():
    assert provider_of("claude", {}) == "anthropic" and provider_of("codex", {}) == "openai"
    assert provider_of("gemini", {}) == "google" and provider_of("sim", {}) == "sim"
    assert provider_of("sim", {"provider": "acme"}) == "acme"
    working = [("sim", {"provider": "acme"}), ("sim", {"provider": "acme"}), ("claude", {}), ("sim", {})]
    assert pacing("shared", "sim", {"provider": "acme"}, working) == {"backpressure": "shared", "provider": "acme", "provider_ceiling": 2}
    assert pacing("agent", "claude", {}, working)["provider_ceiling"] == 1
    assert pacing("shared", "script", {}, working)["backpressure"] == "agent"  # no model: nothing to limit
    assert isinstance(make_pacer("agent", None, "r", "a", "p", 1, None, None), AgentPauses)
