"""Agent-driven variants with CLI kinds through `orch run`'s own path (plan_runs, run_one): the
coordination server process, one runner per agent, each CLI agent ONE long-lived session of a fake
``claude`` (tests/progs/fakerole: claude's stream-json, real MCP calls with the agent's token),
aider workers as executors of assigned tasks (the recorded fake ``aider``), the supervisor judging
the CLIs by their events, and the plan-time refusals."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import yaml

from coordstore import open_store
from coordstore.errors import AgentError, InputError
from fixtures_path import PROGS
from gitfixtures import git

from agents.clis.serverurl import split_path
from orchestrator.runs.launch import RunRequest, plan_runs, run_one
from orchestrator.supervision.verdicts import AgentObservation, SupervisionConfig, judge

pytestmark = pytest.mark.usefixtures("no_git_identity")

CLAUDE = {"binary": str(PROGS / "fakerole" / "claude"), "check_key": False}
AIDER = {"binary": str(PROGS / "fakecli" / "aider"), "check_key": False}
LADDER = {"stall_after_ms": 4000, "kill_grace_s": 0.5, "respawn_backoff_ms": 100, "respawn_backoff_max_ms": 400}


@pytest.fixture
def sessions(tmp_path, monkeypatch):
    """The fake claude's sessions, as it logged them (agent, session, pid, prompt, base URL)."""
    state = tmp_path / "fakerole"
    state.mkdir()
    for k, v in {"FAKEROLE_STATE": state, "FAKEROLE_LOG": state / "log.jsonl", "FAKEROLE_POLL_S": "0.05",
                 "FAKECLI_STATE": state}.items():
        monkeypatch.setenv(k, str(v))

    def read() -> list[dict]:
        log = state / "log.jsonl"
        return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []

    return read


def plan(tmp_path: Path, variant: dict, **execution):
    exp = {"experiment": {"id": "cli"}, "template": "tiny-feature",
           "execution": {"runs": 1, "seed": 5, "timeout_s": 120, **execution},
           "variants": [{"name": "v", "coordination": "agents", **variant}]}
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(exp))
    return plan_runs(RunRequest(variant="v", experiment=f, results=tmp_path / "results"))


def run(tmp_path: Path, variant: dict, **execution):
    [p] = plan(tmp_path, variant, **execution)
    out = run_one(*p)
    with open_store(out.spec.store_url) as s:
        dump = s.dump_run(out.spec.run_id)
    return out, dump


def completions(dump) -> Counter:
    return Counter(r.entity_id for r in dump.history if r.entity == "task" and r.to_state == "completed")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_silent_cli_coordinator_is_judged_killed_and_respawned_into_its_role(tmp_path, sessions, monkeypatch):
    """claude push: a coordinator and two workers, each one CLI session for the run, against role
    sessions of the run's model server; the coordinator's first session hangs silent: the
    supervisor judges it stalled, kills it and respawns it as the coordinator again."""
    monkeypatch.setenv("FAKEROLE_PLAN", json.dumps({"coordinator": ["hang", "play"]}))
    variant = {"policy": "push", "kind": "claude", "model_server": "sim", "kind_options": {**CLAUDE, "poll_s": 0.2},
               "agents": [{"role": "coordinator", "instruction": "Assign every ready task."}, {"count": 2}]}
    out, dump = run(tmp_path, variant, supervision=LADDER)
    assert out.status == "finished"
    tasks = {t.id for t in dump.tasks}
    assert completions(dump) == {t: 1 for t in tasks}
    # the coordinator went silent, was judged stalled and killed, and came back as the coordinator
    judged = [(r.entity_id, r.to_state) for r in dump.history if r.entity == "agent" and r.to_state in ("stalled", "killed")]
    assert judged == [("coordinator", "stalled"), ("coordinator", "killed")]
    seen = sessions()
    by_agent = Counter(s["agent"] for s in seen)
    assert by_agent == {"coordinator": 2, "w1": 1, "w2": 1}  # one process per worker for the whole run
    first, second = [s for s in seen if s["agent"] == "coordinator"]
    for s in (first, second):
        assert s["prompt"].startswith("Assign every ready task.") and "role coordinator, policy push" in s["prompt"]
        ctx, _ = split_path(urlsplit(s["base_url"]).path)
        assert (ctx.script, ctx.agent, ctx.run, ctx.worktree) == ("coordinator", "coordinator", out.spec.run_id, None)
        assert ctx.options["policy"] == "push" and ctx.options["poll_s"] == 0.2
    assert first["behaviour"] == "hang" and second["behaviour"] == "play"
    for w in ("w1", "w2"):
        [s] = [s for s in seen if s["agent"] == w]
        ctx, _ = split_path(urlsplit(s["base_url"]).path)
        assert (ctx.script, ctx.agent, ctx.worktree) == ("worker", w, s["cwd"])
    # the coordinator's assignments are in the history; the workers did what it gave them
    given = {r.data["task"]: r.data["assignee"] for r in dump.history
             if r.entity == "tool" and r.agent == "coordinator" and r.entity_id == "update" and r.to_state == "ok"}
    assert set(given) == tasks
    assert {t.id: t.completed_by for t in dump.tasks} == given
    merged = git(out.spec.repo, "ls-tree", "--name-only", f"refs/heads/{out.spec.merged_branch}").split()
    assert {f"work-{t}.txt" for t in tasks} <= set(merged)
    # nothing of any CLI is left running
    assert all(gone(s["pid"]) for s in seen)
    with open_store(out.spec.store_url) as s:
        steps = [e for e in s.read_events(out.spec.run_id, agent="w1") if e.type == "step"]
    assert steps and all(e.data.get("poll") for e in steps if e.data["name"] in ("list_tasks", "Bash"))


def test_aider_workers_execute_what_a_cli_coordinator_assigns(tmp_path, sessions):
    variant = {"policy": "push", "kind": "claude",
               "agents": [{"role": "coordinator", "options": CLAUDE}, {"count": 2, "kind": "aider", "options": {**AIDER, "poll_s": 0.1}}]}
    out, dump = run(tmp_path, variant)
    assert out.status == "finished"
    tasks = {t.id for t in dump.tasks}
    assert completions(dump) == {t: 1 for t in tasks}
    assert {t.completed_by for t in dump.tasks} <= {"w1", "w2"}
    # the runner played the worker at the tools: its calls are the store's rows; aider did the edit
    rows = [r.entity_id for r in dump.history if r.entity == "tool" and r.agent in ("w1", "w2")]
    assert {"connect", "list_tasks", "claim", "update", "log_metrics", "disconnect"} <= set(rows)
    merged = git(out.spec.repo, "ls-tree", "--name-only", f"refs/heads/{out.spec.merged_branch}").split()
    assert {f"hello-{t}.txt" for t in tasks} <= set(merged)
    assert [s["agent"] for s in sessions()] == ["coordinator"]


@pytest.mark.parametrize("variant,words", [
    ({"policy": "push", "kind": "aider", "agents": 2, "kind_options": AIDER},
     "agent coordinator: kind aider cannot play coordinator under policy push"),
    ({"policy": "pull", "kind": "aider", "agents": 2, "kind_options": AIDER}, "agent w1: kind aider cannot play worker under policy pull"),
    ({"policy": "relay", "kind": "claude", "agents": 2, "kind_options": CLAUDE}, "kind claude plays no specialist under policy relay"),
    ({"policy": "pull", "kind": "claude", "agents": 2, "kind_options": {**CLAUDE, "turn_s": 2}}, "kind_options.turn_s: is not an option"),
    ({"policy": "pull", "kind": "claude", "agents": 2, "kind_options": {**CLAUDE, "faults": [{"turn": 1, "kind": "hang"}]}},
     "kind_options.faults need the variant's model_server"),
    ({"policy": "pull", "kind": "claude", "agents": 2, "model_server": "sim",
      "kind_options": {**CLAUDE, "faults": [{"turn": 1, "kind": "boom"}]}}, "kind_options.faults.0.kind: 'boom' is not one of"),
    ({"policy": "pull", "agents": 2, "model_server": "sim"}, "model_server is for CLI agents; no agent of this variant is one"),
])
def test_what_a_cli_cannot_play_is_one_line_at_plan_time(tmp_path, variant, words):
    with pytest.raises((AgentError, InputError)) as e:
        plan(tmp_path, variant)
    msg = str(e.value)
    assert words in msg and "variant 'v'" in msg and "\n" not in msg
    assert not (tmp_path / "results").exists()


def test_a_silent_role_player_is_stalled_even_without_a_task():
    """The pure judge: an idle agent is left alone, unless it plays a role in an agent-driven
    variant (a CLI session looks for work until the run is over: its silence is a hang)."""
    cfg = SupervisionConfig(stall_after_ms=10_000)
    t0 = 1_700_000_000_000
    for driven, expected in ((False, "idle"), (True, "stalled")):
        track, kinds = None, []
        for i in range(12):
            obs = AgentObservation(agent="coordinator", alive=True, last_event_ms=t0, current_task=None, driven=driven)
            verdict, track = judge(track, obs, cfg, t0 + i * 1_000)
            kinds.append(verdict.kind)
        assert kinds[:10] == ["idle"] * 10 and kinds[-1] == expected
