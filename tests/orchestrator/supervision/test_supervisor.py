"""The recovery ladder on a real SQLite store, driven by tick(now) with an injected clock.

A recording controller stands in for the orchestrator's process handling (it is the seam the
supervisor is written against); the store, its history and its transitions are real.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from coordstore import open_store
from coordstore.errors import AgentError
from coordstore.models import Agent, Run, Task, TaskGraph
from orchestrator.supervision.supervisor import Supervisor
from orchestrator.supervision.verdicts import AgentObservation, SupervisionConfig

from contract_helpers import chain_errors

RUN = "r1"
T0 = 1_700_000_000_000
CFG = SupervisionConfig(
    stall_after_ms=1_000, respawn_backoff_ms=500, respawn_backoff_max_ms=4_000, max_retries=3,
    fallback_kind="script", circuit_failures=3, loop_repeats=3,
)


class RecordingController:
    """Returns the observations the test scripts; records every action the supervisor takes."""

    def __init__(self, agents: list[str]):
        self.active = list(agents)
        self.obs = {a: AgentObservation(agent=a, alive=True) for a in agents}
        self.calls: list[tuple] = []
        self.broken: set[str] = set()  # agents whose kill and respawn raise, as real ones can

    def agents(self) -> list[str]:
        return list(self.active)

    def observe(self, agent: str, now: int) -> AgentObservation:
        return self.obs[agent]

    def kill(self, agent: str) -> None:
        self.calls.append(("kill", agent))
        if agent in self.broken:
            raise AgentError(f"agent {agent!r}: processes [4242] survived SIGKILL")
        self.obs[agent] = replace(self.obs[agent], alive=False)

    def respawn(self, agent: str, kind: str | None) -> None:
        self.calls.append(("respawn", agent, kind))
        if agent in self.broken:
            raise AgentError(f"agent {agent!r}: cannot run 'python': No such file or directory")
        self.obs[agent] = AgentObservation(agent=agent, alive=True)  # a fresh process, no events yet

    def degrade(self, keep: str) -> None:
        self.calls.append(("degrade", keep))
        self.active = [keep]

    def avoid(self, task_id: str, agent: str) -> None:
        self.calls.append(("avoid", task_id, agent))

    def ops(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite://{tmp_path / 'orch.db'}", clock=lambda: T0)
    s.create_run(Run(id=RUN), now=T0)
    s.add_graph(RUN, TaskGraph(tasks=[Task(id=f"t{i}", title=f"task {i}", priority=10 - i) for i in (1, 2, 3)]), now=T0)
    for a in ("w1", "w2"):
        s.register_agent(RUN, Agent(id=a, kind="sim"), lease_ms=10**9, now=T0)
    yield s
    s.close()


def take(store, agent: str, now: int, task: str = "t1") -> tuple[str, int]:
    """The runner's part: claim ``task`` and start it; returns (task, attempt)."""
    t = store.claim(RUN, task, agent, now=now)
    assert t is not None, f"{task} not claimable"
    store.start(RUN, t.id, agent, t.attempt, now=now)
    return (t.id, t.attempt)


def agent_rows(store, agent: str):
    return store.history(RUN, entity="agent", entity_id=agent)


def test_stalled_agent_is_killed_task_requeued_and_respawned_after_backoff(store):
    ctl = RecordingController(["w1"])
    sup = Supervisor(store, RUN, CFG, ctl)
    cur = take(store, "w1", T0)
    ctl.obs["w1"] = AgentObservation(agent="w1", alive=True, last_event_ms=T0, current_task=cur)

    assert [v.kind for v in sup.tick(T0)] == ["active"]
    assert [v.kind for v in sup.tick(T0 + 999)] == ["active"]
    assert ctl.calls == []
    [v] = sup.tick(T0 + 1_000)
    assert v.kind == "stalled"
    assert ctl.calls == [("kill", "w1"), ("avoid", "t1", "w1")]

    task = store.get_task(RUN, "t1")
    assert task.status == "pending" and task.owner is None and task.reason == "stalled"
    requeue = store.history(RUN, entity="task", entity_id="t1")[-1]
    assert (requeue.from_state, requeue.to_state, requeue.reason) == ("working", "pending", "stalled")

    rows = agent_rows(store, "w1")
    stalled = [r for r in rows if r.to_state == "stalled"]
    assert len(stalled) == 1 and stalled[0].data["silent_ms"] == 1_000 and "cpu_delta_s" in stalled[0].data
    killed = [r for r in rows if r.to_state == "killed"]
    assert len(killed) == 1 and killed[0].data["respawn_due_ms"] == T0 + 1_500 and killed[0].from_state == "stalled"
    assert killed[0].reason == stalled[0].reason and killed[0].data["verdict"] == "stalled"
    assert killed[0].seq < requeue.seq  # the kill comes first, then the task goes back

    assert sup.tick(T0 + 1_499) == []  # waiting for its respawn: nothing to judge
    assert ctl.ops("respawn") == []
    [v] = sup.tick(T0 + 1_500)
    assert ctl.ops("respawn") == [("respawn", "w1", None)]
    assert v.kind == "idle"  # the fresh process has no task yet
    respawned = [r for r in agent_rows(store, "w1") if r.data.get("action") == "respawned"]
    assert len(respawned) == 1 and respawned[0].data["fallback"] is False
    assert store.get_agent(RUN, "w1").status == "idle"
    # one chain of agent statuses, in time order: the kill and the respawn are on it
    assert [(r.from_state, r.to_state) for r in agent_rows(store, "w1")] == [
        (None, "registered"), ("registered", "active"), ("active", "stalled"), ("stalled", "killed"),
        ("killed", "registered"), ("registered", "registered"), ("registered", "idle")]
    assert chain_errors(store.history(RUN)) == []

    # the next claim increments the attempt; a late write from the killed attempt is refused
    again = take(store, "w2", T0 + 1_600)
    assert again == ("t1", 2)


def test_a_lapsed_lease_is_reaped_by_the_tick_and_the_ladder_climbs_once(store):
    ctl = RecordingController(["w1", "w2"])
    sup = Supervisor(store, RUN, CFG.model_copy(update={"stall_after_ms": 60_000}), ctl)
    cur = take(store, "w1", T0)
    store.heartbeat(RUN, "w1", lease_ms=2_000, now=T0)  # renewed until T0 + 2 s, then never again (SIGSTOP)
    ctl.obs["w1"] = AgentObservation(agent="w1", alive=True, last_event_ms=T0, current_task=cur, process_state="stopped")
    assert {v.agent: v.kind for v in sup.tick(T0 + 2_000)} == {"w1": "active", "w2": "idle"}  # it holds to its end
    n = len(store.history(RUN))
    verdicts = {v.agent: v for v in sup.tick(T0 + 2_001)}
    assert verdicts["w1"].kind == "dead" and verdicts["w2"].kind == "idle"  # w2 renews: left alone
    assert verdicts["w1"].evidence["lease_expired"] is True and verdicts["w1"].evidence["process_state"] == "stopped"
    assert [(r.entity, r.entity_id, r.from_state, r.to_state, r.reason) for r in store.history(RUN, since_seq=n)] == [
        ("agent", "w1", "active", "dead", "lease expired"),  # the store's reap ...
        ("task", "t1", "working", "pending", "lease expired: agent w1"),  # ... requeues in the same step
        ("agent", "w1", "dead", "killed", "dead: lease expired (process stopped)"),  # the ladder: the process goes
    ]
    assert ctl.calls == [("kill", "w1")]  # and the task is not requeued a second time
    assert store.get_task(RUN, "t1").attempt == 1
    sup.tick(T0 + 2_501)
    assert ctl.ops("respawn") == [("respawn", "w1", None)]
    assert take(store, "w2", T0 + 2_600) == ("t1", 2)  # one requeue, one new attempt
    assert chain_errors(store.history(RUN)) == []


def test_a_task_that_lost_its_lease_on_its_last_attempt_fails_naming_every_failure(store):
    ctl = RecordingController(["w1", "w2"])
    sup = Supervisor(store, RUN, CFG.model_copy(update={"stall_after_ms": 60_000}), ctl)
    take(store, "w2", T0)
    store.heartbeat(RUN, "w2", lease_ms=1_000, now=T0)
    sup.tick(T0 + 1_001)  # attempt 1: w2's lease ran out
    take(store, "w1", T0 + 1_100)
    store.requeue(RUN, "t1", reason="looping", by="supervisor", now=T0 + 1_200)  # attempt 2: the ladder's
    assert take(store, "w1", T0 + 1_300) == ("t1", 3)
    store.heartbeat(RUN, "w1", lease_ms=1_000, now=T0 + 1_300)
    sup.tick(T0 + 2_301)  # attempt 3, the last: w1's lease ran out
    t1 = store.get_task(RUN, "t1")
    assert t1.status == "failed"
    assert t1.reason == "lease expired: agent w2, looping, lease expired: agent w1 after 3 attempts (max_retries 3)"
    assert chain_errors(store.history(RUN)) == []


def test_ladder_backoff_doubles_then_fallback_then_task_fails_naming_the_verdicts(store):
    ctl = RecordingController(["w1"])
    sup = Supervisor(store, RUN, CFG, ctl)
    now = T0
    dues = []
    for i, kind in enumerate(["stalled", "looping", "dead"]):
        cur = take(store, "w1", now)
        assert cur == ("t1", i + 1)  # each claim is a new attempt
        ctl.obs["w1"] = AgentObservation(agent="w1", alive=True, last_event_ms=now, current_task=cur)
        assert [v.kind for v in sup.tick(now)] == ["active"]
        if kind == "stalled":
            now += CFG.stall_after_ms
        elif kind == "looping":
            now += 100
            ctl.obs["w1"] = replace(ctl.obs["w1"], last_event_ms=now, recent_steps=("s",) * 3)
        else:
            now += 100
            ctl.obs["w1"] = replace(ctl.obs["w1"], alive=False, exit_code=1)
        assert [v.kind for v in sup.tick(now)] == [kind]
        due = [r for r in agent_rows(store, "w1") if r.to_state == "killed"][-1].data["respawn_due_ms"]
        dues.append(due - now)
        assert sup.tick(due - 1) == [] and len(ctl.ops("respawn")) == i
        now = due
        sup.tick(now)
        assert len(ctl.ops("respawn")) == i + 1
        if i < 2:
            assert store.get_task(RUN, "t1").status == "pending"

    assert dues == [500, 1_000, 2_000]  # doubled per consecutive failure of the slot
    # the third consecutive failure switches the slot to the fallback kind
    assert [c[2] for c in ctl.ops("respawn")] == [None, None, "script"]
    t1 = store.get_task(RUN, "t1")
    assert t1.status == "failed"
    assert t1.reason == "stalled, looping, dead after 3 attempts (max_retries 3)"
    # the task that failed for good is not handed an avoid hint (it will not run again)
    assert ctl.ops("avoid") == [("avoid", "t1", "w1"), ("avoid", "t1", "w1")]
    statuses = [r.to_state for r in agent_rows(store, "w1") if "action" not in r.data]
    for kind in ("stalled", "looping", "dead"):
        assert kind in statuses
    assert chain_errors(store.history(RUN)) == []


def test_fallback_sticks_and_backoff_is_capped(store):
    ctl = RecordingController(["w1"])
    sup = Supervisor(store, RUN, CFG, ctl)
    now = T0
    for _ in range(6):  # dies at once every time, no task
        ctl.obs["w1"] = AgentObservation(agent="w1", alive=False, exit_code=-9)
        sup.tick(now)
        now = [r for r in agent_rows(store, "w1") if r.to_state == "killed"][-1].data["respawn_due_ms"]
        sup.tick(now)
    kills = [r for r in agent_rows(store, "w1") if r.to_state == "killed"]
    assert [k.data["backoff_ms"] for k in kills] == [500, 1_000, 2_000, 4_000, 4_000, 4_000]
    assert [c[2] for c in ctl.ops("respawn")] == [None, None, "script", "script", "script", "script"]
    # every death is recorded, each followed by the kill
    assert sum(r.to_state == "dead" for r in agent_rows(store, "w1")) == 6
    assert chain_errors(store.history(RUN)) == []


def test_completing_a_task_ends_the_failure_streak(store):
    ctl = RecordingController(["w1"])
    sup = Supervisor(store, RUN, CFG, ctl)
    ctl.obs["w1"] = AgentObservation(agent="w1", alive=False, exit_code=1)
    sup.tick(T0)
    sup.tick(T0 + 500)  # respawned
    assert sup.slots["w1"].failures == 1
    cur = take(store, "w1", T0 + 600, task="t2")
    ctl.obs["w1"] = AgentObservation(agent="w1", alive=True, last_event_ms=T0 + 600, current_task=cur)
    sup.tick(T0 + 600)
    store.complete(RUN, "t2", "w1", cur[1], now=T0 + 700)
    ctl.obs["w1"] = AgentObservation(agent="w1", alive=True, last_event_ms=T0 + 700)
    sup.tick(T0 + 700)
    assert sup.slots["w1"].failures == 0
    # the next failure backs off from the base again
    ctl.obs["w1"] = AgentObservation(agent="w1", alive=False, exit_code=1)
    sup.tick(T0 + 800)
    assert [r for r in agent_rows(store, "w1") if r.to_state == "killed"][-1].data["backoff_ms"] == 500


def test_paused_and_healthy_agents_are_left_alone_and_changes_recorded_once(store):
    ctl = RecordingController(["w1", "w2"])
    sup = Supervisor(store, RUN, CFG, ctl)
    cur = take(store, "w1", T0)
    ctl.obs["w1"] = AgentObservation(agent="w1", alive=True, last_event_ms=T0, current_task=cur, rate_limited_until_ms=T0 + 30_000)
    for i in range(30):
        now = T0 + i * 1_000
        ctl.obs["w2"] = AgentObservation(agent="w2", alive=True, last_event_ms=now)  # idle, chatty
        kinds = {v.agent: v.kind for v in sup.tick(now)}
        assert kinds == {"w1": "paused", "w2": "idle"}
    assert ctl.calls == []
    assert store.get_task(RUN, "t1").status == "working"
    # one transition per change, not one per tick
    assert [r.to_state for r in agent_rows(store, "w1")][1:] == ["paused"]
    assert [r.to_state for r in agent_rows(store, "w2")][1:] == ["idle"]


def test_circuit_opens_once_degrades_and_requeues_the_dropped_agents_work(store):
    ctl = RecordingController(["w1", "w2"])
    sup = Supervisor(store, RUN, CFG, ctl)
    now = T0
    for round_ in range(3):
        ctl.obs["w1"] = AgentObservation(agent="w1", alive=False, exit_code=1)
        ctl.obs["w2"] = AgentObservation(agent="w2", alive=False, exit_code=1)
        sup.tick(now)
        assert ctl.ops("degrade") == [] or round_ == 2
        now += 10_000  # past every backoff: both respawn
        sup.tick(now)
    assert ctl.ops("degrade") == [("degrade", "w1")]  # equal streaks: the first by name goes on
    run_rows = [r for r in store.history(RUN, entity="run") if r.data.get("action") == "degraded"]
    assert len(run_rows) == 1 and run_rows[0].data["keep"] == "w1" and run_rows[0].data["failures"] == {"w1": 3, "w2": 3}
    assert "circuit open" in run_rows[0].reason

    # later ticks never degrade again and never touch w2 (no respawn of a dropped agent)
    respawns_w2 = len([c for c in ctl.ops("respawn") if c[1] == "w2"])
    for i in range(5):
        ctl.obs["w1"] = AgentObservation(agent="w1", alive=False, exit_code=1)
        sup.tick(now + i * 10_000)
    assert ctl.ops("degrade") == [("degrade", "w1")]
    assert len([c for c in ctl.ops("respawn") if c[1] == "w2"]) == respawns_w2
    # a supervisor started after an orchestrator restart knows from the history that the run
    # is degraded already: failing agents do not make it degrade a second time
    ctl2 = RecordingController(["w1", "w2"])
    sup2 = Supervisor(store, RUN, CFG, ctl2)
    later = now + 100_000
    for i in range(4):
        for a in ("w1", "w2"):
            ctl2.obs[a] = AgentObservation(agent=a, alive=False, exit_code=1)
        sup2.tick(later + i * 10_000)
        sup2.tick(later + i * 10_000 + 5_000)
    assert sup2.slots["w1"].failures >= CFG.circuit_failures and sup2.slots["w2"].failures >= CFG.circuit_failures
    assert ctl2.ops("degrade") == []
    assert len([r for r in store.history(RUN, entity="run") if r.data.get("action") == "degraded"]) == 1
    assert chain_errors(store.history(RUN)) == []


def test_degrade_requeues_work_held_by_the_agents_it_drops(store):
    cfg = CFG.model_copy(update={"circuit_failures": 1})
    ctl = RecordingController(["w1", "w2"])
    sup = Supervisor(store, RUN, cfg, ctl)
    now = T0
    for _ in range(2):  # w1 dies twice (w2 healthy: no circuit yet)
        ctl.obs["w1"] = AgentObservation(agent="w1", alive=False, exit_code=1)
        sup.tick(now)
        now += 10_000
        sup.tick(now)
    assert ctl.ops("degrade") == []
    cur = take(store, "w1", now, task="t1")  # w1 is back and working
    ctl.obs["w1"] = AgentObservation(agent="w1", alive=True, last_event_ms=now, current_task=cur)
    ctl.obs["w2"] = AgentObservation(agent="w2", alive=False, exit_code=1)
    sup.tick(now)  # w2 dies once: every agent has failed; w2 has the fewest failures in a row
    assert ctl.ops("degrade") == [("degrade", "w2")]
    t1 = store.get_task(RUN, "t1")
    assert t1.status == "pending" and t1.reason == "degraded"
    assert sup.slots["w1"].retired and not sup.slots["w2"].retired


def test_kept_agent_keeps_its_work_on_degrade(store):
    cfg = CFG.model_copy(update={"circuit_failures": 1})
    ctl = RecordingController(["w1", "w2"])
    sup = Supervisor(store, RUN, cfg, ctl)
    ctl.obs["w1"] = AgentObservation(agent="w1", alive=False, exit_code=1)
    sup.tick(T0)
    sup.tick(T0 + 500)  # w1 respawned, healthy, takes t1
    cur = take(store, "w1", T0 + 600, task="t1")
    ctl.obs["w1"] = AgentObservation(agent="w1", alive=True, last_event_ms=T0 + 600, current_task=cur)
    ctl.obs["w2"] = AgentObservation(agent="w2", alive=False, exit_code=1)
    sup.tick(T0 + 600)  # w2 dies: both failed once; w1 is up -> keep w1
    assert ctl.ops("degrade") == [("degrade", "w1")]
    assert store.get_task(RUN, "t1").status == "working"  # the kept agent keeps its work


def test_killed_agent_pre_assigned_work_goes_back_too(store):
    ctl = RecordingController(["w1"])
    sup = Supervisor(store, RUN, CFG, ctl)
    cur = take(store, "w1", T0, task="t1")
    store.assign(RUN, "t2", "w1", by="coordinator", now=T0)  # pushed ahead, not started
    ctl.obs["w1"] = AgentObservation(agent="w1", alive=False, exit_code=-11, current_task=cur)
    sup.tick(T0)
    for tid in ("t1", "t2"):
        t = store.get_task(RUN, tid)
        assert t.status == "pending" and t.reason == "dead" and t.owner is None
    assert ctl.ops("avoid") == [("avoid", "t1", "w1")]  # only the task it was on


def test_task_that_moved_on_is_left_alone(store):
    # the agent completed its task just before dying: nothing to requeue, no error
    ctl = RecordingController(["w1"])
    sup = Supervisor(store, RUN, CFG, ctl)
    cur = take(store, "w1", T0)
    store.complete(RUN, "t1", "w1", cur[1], now=T0 + 10)
    ctl.obs["w1"] = AgentObservation(agent="w1", alive=False, exit_code=1, current_task=cur)
    [v] = sup.tick(T0 + 20)
    assert v.kind == "dead"
    assert store.get_task(RUN, "t1").status == "completed"
    assert ctl.ops("kill") == [("kill", "w1")]


def test_kill_and_respawn_errors_are_recorded_and_the_ladder_goes_on(store):
    ctl = RecordingController(["w1"])
    ctl.broken.add("w1")
    sup = Supervisor(store, RUN, CFG, ctl)
    cur = take(store, "w1", T0)
    ctl.obs["w1"] = AgentObservation(agent="w1", alive=True, last_event_ms=T0, current_task=cur)
    sup.tick(T0)
    ctl.obs["w1"] = replace(ctl.obs["w1"], last_event_ms=T0 + 100, recent_steps=("s",) * 3)
    [v] = sup.tick(T0 + 100)  # looping, and its kill fails
    assert v.kind == "looping"
    killed = [r for r in agent_rows(store, "w1") if r.to_state == "killed"]
    assert "survived SIGKILL" in killed[0].data["kill_error"]
    assert store.get_task(RUN, "t1").status == "pending"  # requeued all the same
    assert sup.tick(T0 + 600) == []  # the respawn fails: one more failure, a longer backoff
    failed = [r for r in agent_rows(store, "w1") if r.data.get("action") == "respawn-failed"]
    assert len(failed) == 1 and "cannot run" in failed[0].reason and failed[0].data["respawn_due_ms"] == T0 + 600 + 1_000
    assert (failed[0].from_state, failed[0].to_state) == ("killed", "killed")  # still waiting for its respawn
    ctl.broken.clear()
    assert sup.tick(T0 + 1_599) == [] and len(ctl.ops("respawn")) == 1
    [v] = sup.tick(T0 + 1_600)
    assert v.kind == "idle" and len(ctl.ops("respawn")) == 2
    assert chain_errors(store.history(RUN)) == []
