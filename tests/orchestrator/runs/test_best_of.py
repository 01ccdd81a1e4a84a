"""Best-of-N end to end: real git, real runner processes, a real store.

Three agents of two kinds work every task; the task's verify command fails for one agent always
and for another on one task, so the winners differ; the winner alone is merged, every attempt's
commit stays on its own branch, and the metrics count wins and what the losers spent.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from coordstore import open_store
from coordstore.errors import InputError
from cliruns import cli
from gitfixtures import make_repo
from orchestrator.runs.launch import RunRequest, plan_runs, run_one
from orchestrator.views.bestofmetrics import BESTOF_KEYS
from orchestrator.views.metrics import compute_metrics
from runfixtures import FAST_SUPERVISION, task, write_experiment

# w2's verify always fails; w1's fails on t3 alone; w3 (the script kind) writes a 40-line file: a
# bigger change than a sim's, so it wins only where the others failed
VERIFY = 'test "$ORCH_AGENT_ID" != w2 && test "$ORCH_AGENT_ID:$ORCH_TASK_ID" != w1:t3'
SCRIPT = {"commands": ['seq 1 40 > "big-$ORCH_TASK_ID.txt"'], "shell": True, "verify": VERIFY}
AGENTS = [{"id": "w1", "kind": "sim", "options": {"model": "sim-small"}},
          {"id": "w2", "kind": "sim", "options": {"model": "sim-large"}},
          {"id": "w3", "kind": "script"}]
WINNERS = {"t1": "w1", "t2": "w1", "t3": "w3", "t4": "w1"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def best_of_3(tmp_path, **variant):
    repo = make_repo(tmp_path / "repo", {"README": "x\n"})
    tasks = [task(f"t{i}", [f"src/f{i}.txt"], est_ms=1000, meta=SCRIPT) for i in range(1, 5)]
    exp = write_experiment(tmp_path, tasks, [("t1", "t3", "blocks"), ("t2", "t4", "blocks")],
                           {"policy": "best_of", "policy_options": {"n": 3}, "agents": AGENTS, **variant})
    return repo, exp


def test_best_of_3_merges_each_winner_once_and_keeps_every_losers_branch(tmp_path, no_git_identity, capsys):
    repo, exp = best_of_3(tmp_path)
    [plan] = plan_runs(RunRequest(variant="v", experiment=exp, repo=repo, results=tmp_path / "results"))
    out = run_one(*plan)
    assert out.status == "finished"
    spec = out.spec
    with open_store(spec.store_url) as s:
        dump = s.dump_run(spec.run_id)
    assert {t.id: t.status for t in dump.tasks} == dict.fromkeys(WINNERS, "completed")

    rows = [r for r in dump.history if r.entity == "task"]
    completions = [r for r in rows if r.to_state == "completed" and not r.is_note]
    assert sorted(r.entity_id for r in completions) == sorted(WINNERS)  # completed exactly once each
    merges = [r for r in dump.history if r.entity == "merge" and r.to_state == "merged"]
    assert sorted(r.entity_id for r in merges) == sorted(WINNERS)  # and merged exactly once each
    rounds = {r.entity_id: r.data for r in rows if r.is_note and r.data["action"] == "bestof-round"}
    assert {t: d["winner"] for t, d in rounds.items()} == WINNERS

    merged = f"refs/heads/{spec.merged_branch}"
    prefix = f"orch/{spec.run_id}/bestof"
    for t, d in rounds.items():
        assert len(d["attempts"]) == 3 and sorted(d["entrants"]) == ["w1", "w2", "w3"]
        done = next(r for r in completions if r.entity_id == t)
        assert done.data["commit"] == d["commit"] and done.data["bestof"]["winner"] == WINNERS[t]
        for a in d["attempts"]:
            branch = f"{prefix}/{t}/{a['agent']}"
            assert a["branch"] == branch  # every attempt committed, and is kept on its own branch
            assert git(repo, "rev-parse", f"refs/heads/{branch}") == a["commit"]
            in_merged = subprocess.run(["git", "merge-base", "--is-ancestor", a["commit"], merged], cwd=repo).returncode == 0
            assert in_merged == (a["agent"] == WINNERS[t])  # the winner alone is merged
        losers = {a["agent"]: a for a in d["attempts"] if a["agent"] != WINNERS[t]}
        assert not losers["w2"]["ok"] and losers["w2"]["reason"].startswith("verify exited 1")
    # the merged tree holds the winners' work: w3's file for t3 only, the sims' edits elsewhere
    tree = git(repo, "ls-tree", "-r", "--name-only", merged).splitlines()
    assert "big-t3.txt" in tree and not any(f"big-{t}.txt" in tree for t in ("t1", "t2", "t4"))
    assert {f"src/f{i}.txt" for i in (1, 2, 4)} <= set(tree)

    m = json.loads(Path(out.run_dir, "metrics.json").read_text())
    assert m == {**m, **{k: v for k, v in compute_metrics(dump).items() if k.startswith("bestof_")}}
    assert m["bestof_rounds"] == 4 and m["bestof_attempts"] == 12 and m["bestof_no_winner"] == 0
    assert m["bestof_wins"] == {"w1": 3, "w2": 0, "w3": 1}
    assert m["bestof_win_rate"] == {"w1": 0.75, "w2": 0.0, "w3": 0.25}
    assert m["bestof_win_rate_by_kind"] == {"script": 0.25, "sim": 0.375}
    losers_tokens = sum(sum(a["tokens"].get(k, 0) for k in ("in", "out", "thinking"))
                        for d in rounds.values() for a in d["attempts"] if a["agent"] != d["winner"])
    assert m["bestof_loser_tokens"] == losers_tokens > 0
    assert m["bestof_redundancy_tokens"] > 1 and m["bestof_redundancy_ms"] > 1 and m["bestof_loser_cost_usd"] > 0
    code, text, err = cli(capsys, "metrics", str(out.run_dir))
    assert code == 0, err
    group = text.split("# best-of rounds\n", 1)[1].splitlines()
    assert [line.split()[0] for line in group] == list(BESTOF_KEYS)
    assert group[BESTOF_KEYS.index("bestof_wins")].split(None, 1)[1] == '{"w1": 3, "w2": 0, "w3": 1}'


@pytest.mark.parametrize("variant, words", [
    ({"policy_options": {"n": 4}}, "policy_options.n=4 needs at least 4 working agents; the variant has 3"),
    ({"policy_options": {"n": 1}}, "policy_options.n=1 must be an integer from 2 to 256"),
    ({"policy_options": {"n": 3, "rounds": 2}}, "unknown policy_options.rounds"),
])
def test_bad_best_of_variants_are_refused_before_anything_is_written(tmp_path, variant, words):
    repo, exp = best_of_3(tmp_path, **variant)
    with pytest.raises(InputError, match=words.replace(".", r"\.").replace("(", r"\(")):
        plan_runs(RunRequest(variant="v", experiment=exp, repo=repo, results=tmp_path / "results"))
    assert not (tmp_path / "results").exists()


def test_deferred_merges_are_refused_for_best_of(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README": "x\n"})
    exp = write_experiment(tmp_path, [task("t1")], [], {"policy": "best_of", "agents": 3}, merge_mode="deferred")
    with pytest.raises(InputError, match="needs execution.merge_mode immediate"):
        plan_runs(RunRequest(variant="v", experiment=exp, repo=repo, results=tmp_path / "results"))


def _kept_everything(repo: Path, spec, dump) -> list[dict]:
    """Every attempt any agent reported (closed rounds or not): its commit is on its branch."""
    attempts = [r.data for r in dump.history if r.entity == "task" and r.is_note and r.data["action"] == "bestof-attempt"]
    for a in attempts:
        if a["commit"]:
            assert git(repo, "rev-parse", f"refs/heads/{a['branch']}") == a["commit"], a
    return attempts


def test_an_entrant_that_crashes_is_counted_out_and_the_round_still_closes(tmp_path, no_git_identity, monkeypatch):
    from fixtures_path import PROGS

    monkeypatch.setenv("PYTHONPATH", f"{PROGS}:{__import__('os').environ.get('PYTHONPATH', '')}")
    repo = make_repo(tmp_path / "repo", {"README": "x\n"})
    crash = {"crash_once_on": ["t1"], "marker_dir": str(tmp_path / "markers")}
    agents = [{"id": "w1", "kind": "bestof_kinds:Writer"}, {"id": "w2", "kind": "bestof_kinds:Writer", "options": {"lines": 3}},
              {"id": "w3", "kind": "bestof_kinds:Writer", "options": crash}]
    exp = write_experiment(tmp_path, [task("t1", ["a.txt"]), task("t2", ["b.txt"])], [("t1", "t2", "blocks")],
                           {"policy": "best_of", "policy_options": {"n": 3}, "agents": agents},
                           supervision={**FAST_SUPERVISION, "stall_after_ms": 5000})  # see the wait_ms test
    [plan] = plan_runs(RunRequest(variant="v", experiment=exp, repo=repo, results=tmp_path / "results"))
    out = run_one(*plan)
    assert out.status == "finished"
    with open_store(out.spec.store_url) as s:
        dump = s.dump_run(out.spec.run_id)
    assert (tmp_path / "markers" / "w3-t1").exists()  # w3 did crash on t1
    completions = [r.entity_id for r in dump.history if r.entity == "task" and r.to_state == "completed" and not r.is_note]
    assert sorted(completions) == ["t1", "t2"]
    rounds = {r.entity_id: r.data for r in dump.history if r.entity == "task" and r.is_note and r.data["action"] == "bestof-round"}
    assert rounds["t1"]["winner"] in ("w1", "w3") and rounds["t2"]["winner"] in ("w1", "w3")  # w2's 3 lines lose
    assert [a["agent"] for a in rounds["t1"]["attempts"]].count("w3") <= 1
    attempts = _kept_everything(repo, out.spec, dump)
    # w3 joins t2's round only if it is back before that round closes (a restarting agent does
    # not count as live): w1 and w2 attempt both tasks, w3 at most one
    assert {a["agent"] for a in attempts} >= {"w1", "w2"} and [a["agent"] for a in attempts].count("w3") <= 1


def test_wait_ms_closes_a_round_without_an_attempt_that_hangs(tmp_path, no_git_identity, monkeypatch):
    from fixtures_path import PROGS

    monkeypatch.setenv("PYTHONPATH", f"{PROGS}:{__import__('os').environ.get('PYTHONPATH', '')}")
    repo = make_repo(tmp_path / "repo", {"README": "x\n"})
    agents = [{"id": "w1", "kind": "bestof_kinds:Writer"}, {"id": "w2", "kind": "bestof_kinds:Writer"},
              {"id": "w3", "kind": "bestof_kinds:Writer", "options": {"hang_s": 600}}]  # hangs when it enters
    # a holder waiting for its round says nothing but heartbeats (one a second at most, none while
    # other events flow): the stall window must be longer than two of them
    exp = write_experiment(tmp_path, [task("t1", ["a.txt"])], [],
                           {"policy": "best_of", "policy_options": {"n": 3, "wait_ms": 5000}, "agents": agents},
                           supervision={**FAST_SUPERVISION, "stall_after_ms": 5000})
    [plan] = plan_runs(RunRequest(variant="v", experiment=exp, repo=repo, results=tmp_path / "results"))
    out = run_one(*plan)
    assert out.status == "finished"
    with open_store(out.spec.store_url) as s:
        dump = s.dump_run(out.spec.run_id)
    [rnd] = [r.data for r in dump.history if r.entity == "task" and r.is_note and r.data["action"] == "bestof-round"]
    tried = [a["agent"] for a in rnd["attempts"]]
    if rnd["entrants"][0] == "w3":  # w3 held the task (slot 1 does not hang): a full round
        assert sorted(tried) == ["w1", "w2", "w3"]
    else:  # w3 entered and hung: closed without it once wait_ms passed
        assert "w3" in rnd["entrants"] and sorted(tried) == ["w1", "w2"] and rnd["winner"] in ("w1", "w2")
    m = compute_metrics(dump)
    assert m["bestof_rounds"] == 1 and m["bestof_no_winner"] == 0 and m["bestof_attempts"] == len(tried)


def _round_on_a_store(tmp_path, needed_tags=(), tags=None):
    """A real store with task t1 held by w1 (its round opened, its own attempt reported), agents
    w1..w3 (``tags``: agent -> its tags), a store clock to step, and the holder's closing rule."""
    from types import SimpleNamespace

    from agents.bestof import Rounds
    from agents.policies.bestof import BestOf, read_round
    from coordstore.models import Agent, Run, Task, TaskGraph

    clock = [1000]
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    store.clock = lambda: clock[0]
    store.create_run(Run(id="r"))
    store.add_graph("r", TaskGraph(tasks=[Task(id="t1", needed_tags=list(needed_tags))], dependencies=[]))
    for a in ("w1", "w2", "w3"):
        store.register_agent("r", Agent(id=a, tags=(tags or {}).get(a, [])), lease_ms=60_000)
    store.claim("r", "t1", "w1")
    store.start("r", "t1", "w1", 1)

    def note(action, agent, **data):
        store.note("r", "task", "t1", action, agent=agent, data={"attempt": 1, **data})

    note("bestof-open", "w1", base="b" * 40, n=3)
    note("bestof-attempt", "w1", ok=True, slot=1)
    policy = BestOf.__new__(BestOf)
    policy.env = SimpleNamespace(store=store, run_id="r", agent_id="w1", tags=None)
    policy.n, policy.wait_ms = 3, 5000
    rounds = Rounds(SimpleNamespace(store=store, cfg=SimpleNamespace(run_id="r", agent_id="w1")), policy)

    def closable(done_ms=1000):
        rnd = read_round(store.history("r", entity="task", entity_id="t1"), "t1", 1)
        return rounds.closable(rnd, done_ms, store.get_task("r", "t1"))

    return store, clock, note, closable


def test_a_round_closes_when_every_entrant_is_done_or_gone_or_wait_ms_passed(tmp_path):
    """The holder's rule, on a real store: a live entrant without its attempt keeps the round open;
    one that died or was restarted since it joined does not; wait_ms ends the wait."""
    from coordstore.models import Agent

    store, clock, note, closable = _round_on_a_store(tmp_path)
    note("bestof-join", "w2", slot=2)
    assert not closable()  # w2 entered, still at work; one slot free and w3 alive to take it
    note("bestof-attempt", "w2", ok=False, slot=2)
    assert not closable()  # both done, but the round is not full and can still fill
    note("bestof-join", "w3", slot=3)
    assert not closable()  # w3 at work
    clock[0] += 10
    store.register_agent("r", Agent(id="w3"), lease_ms=60_000)  # w3 restarted after it joined: its attempt is lost
    assert closable()
    store.set_agent_status("r", "w3", "active")
    clock[0] = 7000
    assert closable(done_ms=1000)  # wait_ms (5000) after the holder's own attempt
    store.close()


def test_a_round_that_cannot_fill_closes_with_the_agents_that_could_enter(tmp_path):
    """Fewer live agents whose tags fit the task than N: the round closes once they are done."""
    store, clock, note, closable = _round_on_a_store(tmp_path, needed_tags=["x"], tags={"w1": ["x"], "w2": ["x"], "w3": ["y"]})
    note("bestof-join", "w2", slot=2)
    assert not closable()  # w2 at work
    note("bestof-attempt", "w2", ok=True, slot=2)
    assert closable()  # w3 cannot take the task: two of three is all this round gets
    store.set_agent_status("r", "w3", "stopped")
    store.close()


def test_a_round_waits_for_a_third_agent_that_could_still_enter(tmp_path):
    store, clock, note, closable = _round_on_a_store(tmp_path, needed_tags=["x"], tags={"w1": ["x"], "w2": ["x"], "w3": ["x"]})
    note("bestof-join", "w2", slot=2)
    note("bestof-attempt", "w2", ok=True, slot=2)
    assert not closable()
    store.set_agent_status("r", "w3", "dead")  # gone for good: the round closes with two
    assert closable()
    store.close()


def test_the_winner_passed_verify_then_changed_least_then_finished_first():
    from agents.bestof import choose

    a = {"agent": "a", "ok": True, "lines": 5, "files": 1, "finished_ms": 10, "slot": 1}
    b = {"agent": "b", "ok": True, "lines": 5, "files": 2, "finished_ms": 5, "slot": 2}
    c = {"agent": "c", "ok": False, "lines": 1, "files": 1, "finished_ms": 1, "slot": 3}
    d = {"agent": "d", "ok": True, "lines": 5, "files": 1, "finished_ms": 9, "slot": 4}
    assert choose([a, b, c])["agent"] == "a"  # c changed least but failed; a touched fewer files than b
    assert choose([a, b, c, d])["agent"] == "d"  # as small as a, finished earlier
    assert choose([c]) is None
