"""The runner loop on real processes, worktrees and a SQLite store: commits, verify, both merge
modes, a task taken away, SIGTERM, configuration errors, user kinds, and the heartbeat pulse."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from agents.config import RunnerConfig
from agents.events import EventWriter
from conftest import T0, FakeClock, wait_for
from agents.harness import LocalRun
from agents.pulse import Pulse
from coordstore import open_store
from coordstore.errors import InputError
from coordstore.models import Agent, Dependency, Run, Task, TaskGraph

SCALE = 0.003
PY = sys.executable


pytestmark = pytest.mark.usefixtures("no_git_identity")


def completions(run: LocalRun) -> dict:
    return {r.entity_id: r for r in run.history(entity="task") if r.to_state == "completed"}


def py(code: str) -> list[str]:
    return [PY, "-c", code]


def test_script_kind_commits_as_the_agent_and_fails_with_the_output_tail(local):
    g = TaskGraph(tasks=[
        Task(id="mk", title="Make a file", meta={"commands": [py("import os; open('out.txt','w').write(os.environ['ORCH_TASK_ID'])")]}),
        Task(id="sh", title="Use the shell", meta={"shell": True, "commands": ["echo one > one.txt && echo two >> one.txt"]}),
        Task(id="bad", title="Fails", meta={"commands": [py("print('boom details'); raise SystemExit(3)")]}),
        Task(id="nope", title="No program", meta={"commands": [["no-such-program-for-orch"]]}),
        Task(id="vbad", title="Verify fails", meta={"commands": [py("open('v.txt','w').write('v')")],
                                                    "verify": py("print('verify says no'); raise SystemExit(1)")}),
        Task(id="vok", title="Verify passes", meta={"commands": [py("open('w.txt','w').write('w')")],
                                                   "verify": py("import pathlib; assert pathlib.Path('w.txt').exists()")}),
    ])
    run = local(g, files={"README.md": "base\n"})
    run.add_agent("w1", kind="script", policy="pull", policy_options={"order": "fifo"})
    run.start_all()
    assert run.wait(40) == {"w1": 0}, run.log("w1")
    tasks = run.tasks()
    assert {k: t.status for k, t in tasks.items()} == {
        "mk": "completed", "sh": "completed", "bad": "failed", "nope": "failed", "vbad": "failed", "vok": "completed"}
    assert tasks["bad"].reason.startswith("command 1 (") and "exited 3: boom details" in tasks["bad"].reason
    assert "exited 127" in tasks["nope"].reason and "no-such-program-for-orch" in tasks["nope"].reason
    assert tasks["vbad"].reason == "verify exited 1: verify says no"
    done = completions(run)
    commit = done["mk"].data["commit"]
    # committed with the agent's identity on a machine with no git user at all
    assert run.git("log", "-1", "--format=%an|%cn|%s", commit).strip() == "w1|w1|task mk: Make a file"
    assert run.merged_text("out.txt") == "mk"
    assert run.merged_text("one.txt") == "one\ntwo\n"
    assert run.merged_text("w.txt") == "w"
    branch = run.git("ls-tree", "-r", "--name-only", "orch/r1/w1").split()
    assert "v.txt" not in branch  # the commit that failed verification was dropped
    changed = [(e["task"], e["data"]["path"]) for e in run.events("w1") if e["type"] == "file_changed"]
    assert ("mk", "out.txt") in changed and ("sh", "one.txt") in changed


CHAIN = TaskGraph(
    tasks=[Task(id="a", title="First", needed_tags=["x"], time_estimate_ms=30_000, file_scope=["src/m.py"]),
           Task(id="b", title="Second", needed_tags=["y"], time_estimate_ms=30_000, file_scope=["src/m.py"])],
    dependencies=[Dependency(from_id="a", type="blocks", to_id="b")],
)


def two_agents(run: LocalRun) -> None:
    run.add_agent("w1", tags=["x"], policy="pull")
    run.add_agent("w2", tags=["y"], policy="pull")
    run.start_all()
    assert set(run.wait(40).values()) == {0}, [run.log(a) for a in run.procs]


def test_immediate_merge_lands_before_complete_and_dependents_see_the_work(local):
    run = local(CHAIN, name="imm", merge_mode="immediate")
    two_agents(run)
    hist = run.history()
    done = completions(run)
    assert done["a"].agent == "w1" and done["b"].agent == "w2"
    for t in ("a", "b"):
        merge = [r for r in hist if r.entity == "merge" and r.entity_id == t and r.to_state == "merged"]
        assert len(merge) == 1 and merge[0].key == f"merge:{t}:1" and merge[0].seq < done[t].seq
        assert done[t].data["merge"]["ok"] is True
    # w2 started b on a base holding a's work (caught up with the merged ref)
    assert "task a: First" in run.text_at(done["b"].data["commit"], "src/m.py")
    merged = run.merged_text("src/m.py")
    assert "task a: First" in merged and "task b: Second" in merged


def test_deferred_mode_takes_in_blocker_commits_and_leaves_merged_alone(local):
    run = local(CHAIN, name="def", merge_mode="deferred")
    two_agents(run)
    done = completions(run)
    assert not [r for r in run.history() if r.entity == "merge"]
    assert run.git("rev-parse", run.merged_ref).strip() == run.base  # merging waits for the end
    b_text = run.text_at(done["b"].data["commit"], "src/m.py")
    assert "task a: First" in b_text and "task b: Second" in b_text
    assert run.git("merge-base", "--is-ancestor", done["a"].data["commit"], done["b"].data["commit"]) == ""


def test_a_task_taken_away_is_dropped_and_redone(local):
    g = TaskGraph(tasks=[Task(id="job", title="Job", time_estimate_ms=300_000, file_scope=["src/m.py"])])
    run = local(g)
    run.add_agent("w1", policy="pull")
    run.start_all()
    wait_for(lambda: run.tasks()["job"].status == "working")
    run.store.requeue(run.run_id, "job", reason="stalled", by="supervisor")  # what the supervisor does
    assert run.wait(40) == {"w1": 0}, run.log("w1")
    t = run.tasks()["job"]
    assert (t.status, t.attempt) == ("completed", 2)
    assert [r.key for r in run.history(entity="merge")] == ["merge:job:2"]  # attempt 1 never merged
    assert any("taken away while running (attempt 1)" in e["data"].get("msg", "") for e in run.events("w1"))
    assert run.merged_text("src/m.py").count("task job: Job") == 1


def test_sigterm_exits_promptly_with_a_log_event(local):
    g = TaskGraph(tasks=[Task(id="job")])
    run = local(g)
    run.add_agent("w1", policy="push")  # no coordinator: it waits for an assignment forever
    run.start_all()
    wait_for(lambda: any(e["type"] == "started" for e in run.events("w1")))
    assert run.terminate("w1", timeout=10) == 143  # prompt: a wait that never ends raises TimeoutExpired
    last = run.events("w1")[-1]
    assert last["type"] == "log" and last["data"]["signal"] == "SIGTERM"
    assert run.tasks()["job"].status == "pending"


def plugin_kind(tmp_path, module: str, body: str):
    """A directory holding ``<module>.py``: a user kind (``body``, indented as in the test) after
    ``from agents.kinds import Result``; put it on the runner's PYTHONPATH."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / f"{module}.py").write_text("from agents.kinds import Result\n" + textwrap.dedent(body))
    return plugins


def test_user_kind_by_dotted_path_and_a_dirty_worktree_is_cleaned_first(local, tmp_path):
    plugins = plugin_kind(tmp_path, "echokind", """

        class Echo:
            name = "echo"
            def __init__(self, options):
                self.word = options.get("word", "hi")
            def run(self, task, ctx):
                ctx.events.step("write", args={"task": task.id}, task=task.id)
                (ctx.worktree / f"echo-{task.id}.txt").write_text(self.word)
                return Result(ok=True, data={"echoed": self.word})
    """)
    run = local(TaskGraph(tasks=[Task(id="e1"), Task(id="e2")]), files={"README.md": "base\n"})
    run.add_agent("w1", kind="echokind:Echo", kind_options={"word": "hello"})
    wt = run.root / "worktrees" / "w1"
    (wt / "README.md").write_text("half-done edit of a crashed process\n")
    (wt / "stray.txt").write_text("left behind\n")
    run.start("w1", env={"PYTHONPATH": str(plugins)})
    assert run.wait(30) == {"w1": 0}, run.log("w1")
    done = completions(run)
    assert {t: r.data["echoed"] for t, r in done.items()} == {"e1": "hello", "e2": "hello"}
    assert run.merged_text("echo-e1.txt") == "hello"
    assert run.merged_text("README.md") == "base\n"
    assert "stray.txt" not in run.git("ls-tree", "-r", "--name-only", run.merged_ref)
    assert any("discarded uncommitted changes" in e["data"].get("msg", "") for e in run.events("w1"))


def test_a_kinds_usage_lands_on_its_task_in_all_8_metric_slots(local, tmp_path):
    plugins = plugin_kind(tmp_path, "meterkind", """

        class Meter:
            name = "meter"
            def __init__(self, options):
                pass
            def run(self, task, ctx):
                ctx.events.tokens(task=task.id, tokens_in=1, tokens_out=2, image=5, slot7=8, cost_usd=0.5)
                (ctx.worktree / f"m-{task.id}.txt").write_text("m")
                return Result(ok=True, tokens={"in": 1, "out": 2, "cached": 3, "thinking": 4, "image": 5,
                                               "audio": 6, "slot6": 7, "slot7": 8, "cost_usd": 0.5})
    """)
    run = local(TaskGraph(tasks=[Task(id="m1")]), files={"README.md": "base\n"})
    run.add_agent("w1", kind="meterkind:Meter")
    run.start("w1", env={"PYTHONPATH": str(plugins)})
    assert run.wait(30) == {"w1": 0}, run.log("w1")
    t = run.tasks()["m1"]
    assert t.status == "completed" and t.metrics == [1, 2, 3, 4, 5, 6, 7, 8] and t.cost_usd == 0.5
    [ev] = [e for e in run.events("w1") if e["type"] == "tokens"]
    assert ev["data"] == {"in": 1, "out": 2, "cached": 0, "thinking": 0, "cost_usd": 0.5, "image": 5, "slot7": 8}


def runner_cli(cfg_path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "agents.runner", "--config", str(cfg_path)], capture_output=True, text=True, timeout=60)


def test_configuration_errors_are_one_clear_line(local, tmp_path):
    run = local(TaskGraph(tasks=[Task(id="job")]))
    good = json.loads(run.add_agent("w1").read_text())
    cases = [
        ({**good, "polcy": "pull"}, 2, "unknown key 'polcy'"),
        ({**good, "role": "coordinator", "policy": "pull"}, 1, "role coordinator only exists under policy push"),
        ({**good, "kind": "nosuchkind"}, 1, "agent kind 'nosuchkind' is unknown"),
        ({**good, "worktree": str(tmp_path / "missing")}, 2, "key 'worktree'"),
    ]
    for i, (cfg, code, text) in enumerate(cases):
        path = tmp_path / f"bad{i}.json"
        path.write_text(json.dumps(cfg))
        p = runner_cli(path)
        assert p.returncode == code, (cfg, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], p.stderr
    p = runner_cli(tmp_path / "absent.json")
    assert p.returncode == 2 and "no such file" in p.stderr and "absent.json" in p.stderr


def test_config_checks_without_a_process(tmp_path):
    base = {"store_url": "sqlite:///x.db", "run_id": "r", "agent_id": "c", "events_dir": str(tmp_path), "role": "coordinator"}
    assert RunnerConfig.from_dict(base).works is False
    for bad, key in [({"heartbeat_ms": 0}, "heartbeat_ms"), ({"merge_mode": "later"}, "merge_mode"),
                     ({"tags": "x"}, "tags"), ({"time_scale": 0}, "time_scale"), ({"role": "boss"}, "role"),
                     ({"time_scale": float("nan")}, "time_scale"), ({"time_scale": float("inf")}, "time_scale")]:
        with pytest.raises(InputError, match=f"key '{key}'"):
            RunnerConfig.from_dict({**base, **bad}, source="cfg.json")
    with pytest.raises(InputError, match="cfg.json: missing key 'run_id'"):
        RunnerConfig.from_dict({k: v for k, v in base.items() if k != "run_id"}, source="cfg.json")
    with pytest.raises(InputError, match="needs both 'repo' and 'merged_ref'"):
        RunnerConfig.from_dict({**base, "role": "worker", "worktree": str(tmp_path)})


def test_the_orchestrator_writes_what_the_runner_reads(tmp_path):
    """One model on both sides: each role's config as the orchestrator writes it is the config the
    runner loads, private to its owner, with the runner's own heartbeat, lease and poll."""
    from agents.config import HEARTBEAT_MS, LEASE_MS, POLL_MS
    from orchestrator.rundir import AgentSpec, RunPaths, RunSpec
    from orchestrator.supervision.control import RunController

    paths = RunPaths(tmp_path / "run")
    spec = RunSpec(run_id="r1", experiment_id="e", variant="v", policy="push", template="t.json", repo=str(tmp_path / "repo"),
                   base="0" * 40, store_url="sqlite:///x.db", seed=3, time_scale=0.01, timeout_s=60, kind_options={"p_fail": 0.1, "x": 1},
                   agents=[AgentSpec(id="coordinator", role="coordinator", kind="none"), AgentSpec(id="w1", tags=["py"], options={"p_fail": 0.5})])
    paths.worktree_of("w1").mkdir(parents=True)
    paths.agent_configs.mkdir(parents=True)
    ctl = RunController(spec, paths, store=None)
    read = {}
    for a in spec.agents:
        ctl.runner_config(a).write(paths.agent_config(a.id))
        assert paths.agent_config(a.id).stat().st_mode & 0o777 == 0o600
        read[a.id] = RunnerConfig.load(paths.agent_config(a.id))
        assert read[a.id] == ctl.runner_config(a)
    w1, coordinator = read["w1"], read["coordinator"]
    assert w1.works and w1.worktree == str(paths.worktree_of("w1")) and w1.tags == ["py"]
    assert w1.kind_options == {"p_fail": 0.5, "x": 1} and w1.merged_ref == "refs/heads/orch/r1/merged" and w1.branch == "orch/r1/w1"
    assert not coordinator.works and coordinator.worktree is None and coordinator.kind == "none"
    assert (w1.heartbeat_ms, w1.lease_ms, w1.poll_ms) == (HEARTBEAT_MS, LEASE_MS, POLL_MS)


def test_pulse_beats_when_due_and_speaks_only_into_silence(tmp_path):
    clock = FakeClock()  # the store's, the pulse's and the events' time: nothing sleeps
    store = open_store(f"sqlite://{tmp_path / 'p.db'}", clock=clock)
    store.create_run(Run(id="r"))
    store.register_agent("r", Agent(id="w1"), lease_ms=1000)
    ev = EventWriter(tmp_path / "ev", "w1", clock=clock)
    pulse = Pulse(store, "r", "w1", ev, heartbeat_ms=100, lease_ms=1000, clock=clock)
    pulse.beat()
    assert [json.loads(p.read_text())["type"] for p in sorted((tmp_path / "ev").iterdir())] == ["heartbeat"]
    lease = store.get_agent("r", "w1").lease_expires
    pulse.beat()  # not due yet: nothing
    assert ev.next_seq == 1 and store.get_agent("r", "w1").lease_expires == lease
    ev.log("busy")  # something was said: the next beat renews the lease without a heartbeat event
    clock.advance(100)
    pulse.beat()
    assert ev.next_seq == 2 and store.get_agent("r", "w1").lease_expires == lease + 100
    pulse.sleep(0.35)  # three more beats, each into silence
    assert ev.next_seq == 5 and max(clock.slept) <= 100 and clock.now == T0 + 450
    pulse.go_silent()
    pulse.sleep(0.5)
    assert ev.next_seq == 5
    store.close()
