"""policy_options.avoid_conflicts on real runner processes, real worktrees and a real SQLite store:
parallel tasks that append to one file conflict when merged; held back, they run one after the
other, each on the merged work of the one before, and nothing conflicts."""

from __future__ import annotations

import pytest

from agents.harness import LocalRun
from agents.policies import check_options
from coordstore.errors import InputError
from coordstore.models import Task, TaskGraph

pytestmark = pytest.mark.usefixtures("no_git_identity")

SHARED = "src/shared.py"
# the shared file has no orch-slot lines: every sim edit of it appends at its end, so two tasks
# editing it in parallel conflict when the second merges
FILES = {SHARED: "# shared module\n", "README.md": "x\n"}


def overlapping_graph() -> TaskGraph:
    """Four tasks on the shared file and four on files of their own, none depending on another."""
    tasks = [Task(id=f"s{i}", title=f"S{i}", time_estimate_ms=60_000, file_scope=[SHARED]) for i in range(4)]
    tasks += [Task(id=f"o{i}", title=f"O{i}", time_estimate_ms=60_000, file_scope=[f"src/own{i}.py"]) for i in range(4)]
    return TaskGraph(tasks=tasks, dependencies=[])


def run_team(local, name: str, policy: str, options: dict) -> LocalRun:
    run = local(overlapping_graph(), name=name, files=FILES, time_scale=0.005)
    if policy == "push":
        run.add_agent("coordinator", role="coordinator", policy="push", policy_options=options)
    for w in ("w1", "w2", "w3"):
        run.add_agent(w, policy=policy, policy_options=options)
    run.start_all()
    rcs = run.wait(60)
    assert all(rc == 0 for rc in rcs.values()), {a: run.log(a)[-800:] for a in rcs}
    assert {t.status for t in run.tasks().values()} == {"completed"}
    return run


def conflicts(run: LocalRun) -> list:
    return [r for r in run.history() if r.entity == "merge" and r.to_state == "conflict"]


def working_periods(run: LocalRun, prefix: str) -> list[tuple[int, int]]:
    out, open_ = [], {}
    for r in run.history():
        if r.entity != "task" or not r.entity_id.startswith(prefix) or r.is_note:
            continue
        if r.to_state == "working":
            open_[r.entity_id] = r.ts_ms
        elif r.from_state == "working":
            out.append((open_.pop(r.entity_id), r.ts_ms))
    return sorted(out)


@pytest.mark.parametrize("policy", ["pull", "push"])
def test_avoid_conflicts_serializes_tasks_on_one_file_and_their_merges_stop_conflicting(local, policy):
    plain = run_team(local, f"{policy}-plain", policy, {})
    assert conflicts(plain), "parallel appends to one file never conflicted: the test shows nothing"
    assert [r for r in plain.history() if r.data.get("action") == "held-back"] == []

    avoid = run_team(local, f"{policy}-avoid", policy, {"avoid_conflicts": True})
    assert conflicts(avoid) == []
    periods = working_periods(avoid, "s")
    assert len(periods) == 4 and all(a[1] <= b[0] for a, b in zip(periods, periods[1:])), periods
    held = [r for r in avoid.history() if r.entity == "run" and r.data.get("action") == "held-back"]
    assert held and all(r.data["entries"] == [SHARED] and r.data["task"].startswith("s") for r in held)
    assert all(c.startswith("s") for r in held for c in r.data["colliding"])
    text = avoid.merged_text(SHARED)  # every task's work is in the merged branch
    assert all(f"task s{i}: S{i}" in text for i in range(4))
    # the tasks on files of their own ran beside the shared ones: holding back is not a global lock
    own = working_periods(avoid, "o")
    assert any(o[0] < s[1] and s[0] < o[1] for o in own for s in periods)


def test_avoid_conflicts_is_a_flag_of_the_policies_that_hand_out_or_claim_tasks():
    check_options("pull", {"avoid_conflicts": True})
    check_options("push", {"avoid_conflicts": False, "dispatch_latency_ms": 3})
    with pytest.raises(InputError, match=r"policy pull: policy_options.avoid_conflicts='yes' must be true or false"):
        check_options("pull", {"avoid_conflicts": "yes"})
    with pytest.raises(InputError, match=r"unknown policy_options.avoid_conflicts"):
        check_options("solo", {"avoid_conflicts": True})


def test_a_held_back_task_is_not_overtaken_by_a_lower_ranked_one_on_the_same_files(local):
    """a (long) holds the file; b, ranked above c, is held back; c (same file, ranked lower) must
    not start before b: b reserved the file."""
    tasks = [Task(id="a", title="A", time_estimate_ms=120_000, priority=9, file_scope=[SHARED]),
             Task(id="b", title="B", time_estimate_ms=10_000, priority=5, file_scope=[SHARED]),
             Task(id="c", title="C", time_estimate_ms=10_000, priority=1, file_scope=[SHARED, "src/c.py"]),
             Task(id="d", title="D", time_estimate_ms=10_000, priority=0, file_scope=["src/d.py"])]
    run = local(TaskGraph(tasks=tasks, dependencies=[]),
                name="order", files=FILES, time_scale=0.005)
    for w in ("w1", "w2"):
        run.add_agent(w, policy="pull", policy_options={"avoid_conflicts": True})
    run.start_all()
    rcs = run.wait(60)
    assert all(rc == 0 for rc in rcs.values()), {a: run.log(a)[-800:] for a in rcs}
    started = {r.entity_id: r.ts_ms for r in run.history() if r.entity == "task" and r.to_state == "working" and not r.is_note}
    done = {r.entity_id: r.ts_ms for r in run.history() if r.entity == "task" and r.to_state == "completed" and not r.is_note}
    assert done["a"] <= started["b"] and done["b"] <= started["c"]
    assert started["d"] < done["a"]  # the free task ran meanwhile
    assert conflicts(run) == []


def test_two_looks_that_raced_onto_one_file_park_the_later_claim_until_the_earlier_ends(tmp_path):
    """The race a look cannot see (each agent read the other's task as not yet held): two claims
    of colliding tasks both won. The later one (claimed_at, then id) is parked, the earlier one
    runs; the parked one is released when the earlier one ends. A real SQLite store, no sleeps."""
    from agents.events import EventWriter
    from agents.policies import WAIT, PolicyEnv
    from agents.policies.collisions import Collisions
    from coordstore import open_store
    from coordstore.models import Agent, Run

    now = iter(range(1_000, 10**6, 10))
    with open_store(f"sqlite://{tmp_path / 'orch.db'}", clock=lambda: next(now)) as store:
        store.create_run(Run(id="r"))
        store.add_graph("r", TaskGraph(tasks=[Task(id="a", file_scope=[SHARED]), Task(id="b", file_scope=["src/"]),
                                              Task(id="c", file_scope=["docs/x.md"])], dependencies=[]))
        envs = {}
        for w in ("w1", "w2"):
            store.register_agent("r", Agent(id=w, kind="sim", role="worker"), lease_ms=60_000)
            envs[w] = Collisions(PolicyEnv(store, "r", w, "worker", None, {"avoid_conflicts": True}, None,
                                           EventWriter(tmp_path / "events" / w, w)))
        a = store.claim("r", "a", "w1")
        b = store.claim("r", "b", "w2")  # a race: w2 looked before w1's claim
        assert envs["w1"].earlier_colliders(a) == [] and envs["w2"].earlier_colliders(b) == ["a"]
        assert envs["w1"].park_if_raced(a) is False and envs["w2"].park_if_raced(b) is True
        assert envs["w2"].release() == WAIT  # a still holds the file
        store.start("r", "a", "w1", a.attempt)
        assert envs["w2"].release() == WAIT
        store.complete("r", "a", "w1", a.attempt)
        released = envs["w2"].release()
        assert released.id == "b" and released.owner == "w2" and envs["w2"].parked is None
        # b holds src/ now; c, in docs/, collides with nothing and is claimed
        c = envs["w1"].claim("priority")
        assert c.id == "c"
