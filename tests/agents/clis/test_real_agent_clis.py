"""Real agent CLIs end to end and offline: ``orch run`` -> the real ``claude`` process in each
worktree -> real tool calls -> stream-json -> events -> commits -> merges, against orch's
scripted model server on 127.0.0.1.

These tests need the real CLI. Where it is not installed they FAIL (never skip) and say how to
install it: CI must install it (``npm install -g @anthropic-ai/claude-code``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from coordstore.templates import save_file
from orchestrator.runs.launch import RunRequest, plan_runs, run_one
from orchestrator.modelserver import ModelServer
from orchestrator.modelserver.tasksource import GraphTasks

from realclis import SUPERVISION, finished, git, module_tasks, need, served_experiment, slot_repo, write_graph

# conftest: private HOME, no git identity; real_cli: `-m "not real_cli"` skips these locally
pytestmark = [pytest.mark.usefixtures("no_git_identity"), pytest.mark.real_cli]


HISTORY: list[tuple[str, dict[str, str | None]]] = [
    ("base", {"README.md": "# demo\n\nintro\n", "src/util.py": "def f():\n    return 1\n", "old.txt": "remove me\n"}),
    ("Add the parser", {"src/parser.py": "def parse(s):\n    return s.split()\n"}),
    ("Document usage", {"README.md": "# demo\n\nintro\n\n## Usage\n\nrun it\n"}),
    ("Make f return 2", {"src/util.py": "def f():\n    return 2\n", "old.txt": None}),
    ("Parser strips", {"src/parser.py": "def parse(s):\n    return s.strip().split()\n"}),
    ("Add notes", {"notes/todo.txt": "no final newline"}),
]
# what a text edit can express (aider): no deletion, every file ending in a newline
TEXT_HISTORY = [("base", {"README.md": "# demo\n\nintro\n", "src/util.py": "def f():\n    return 1\n"}),
                *((msg, files) for msg, files in HISTORY[1:3]),
                ("Make f return 2", {"src/util.py": "def f():\n    return 2\n"}),
                HISTORY[4], ("Add notes", {"notes/todo.txt": "with a final newline\n"})]


def build_history(root: Path, steps: list[tuple[str, dict[str, str | None]]] = HISTORY) -> Path:
    """Tag A, then five commits up to tag B: new files, an edit of a shared file by two commits
    (the second on the first), a deletion, a file without a final newline."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for n, (msg, files) in enumerate(steps):
        for rel, text in files.items():
            p = root / rel
            if text is None:
                p.unlink()
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", msg, n=n)
        if n == 0:
            git(root, "tag", "A")
    git(root, "tag", "B")
    return root


def experiment(tmp_path: Path, template: Path, srv: ModelServer, cli_timeout_s: float = 120, **execution) -> Path:
    """An experiment whose claude agents talk to ``srv`` (started by the test), with its key."""
    exp = {"experiment": {"id": "real"}, "template": str(template),
           "execution": {"runs": 1, "seed": 3, "time_scale": 0.001, "timeout_s": 300, "supervision": SUPERVISION, **execution},
           "variants": [{"name": "pull-2", "policy": "pull", "agents": 2, "kind": "claude",
                         "kind_options": {"env": {"ANTHROPIC_BASE_URL": srv.url, "ANTHROPIC_API_KEY": srv.key},
                                          "timeout_s": cli_timeout_s}}]}
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(exp))
    return f


def patch_id(repo: Path, commit: str) -> str:
    diff = subprocess.run(["git", "diff", "--full-index", f"{commit}^", commit], cwd=repo, capture_output=True, check=True).stdout
    out = subprocess.run(["git", "patch-id", "--stable"], cwd=repo, input=diff, capture_output=True, check=True).stdout
    return out.decode().split()[0]


def test_claude_replays_a_history_pull_2(tmp_path):
    need("claude")
    from gitwork.history import build

    repo = build_history(tmp_path / "repo")
    tpl = tmp_path / "replay.json"
    save_file(tpl, build(repo, "A..B", "files").graph)
    with ModelServer("replay", tasks=GraphTasks(tpl), worktrees=[tmp_path]) as srv:
        [plan] = plan_runs(RunRequest(variant="pull-2", experiment=experiment(tmp_path, tpl, srv), repo=repo, base="A",
                                      results=tmp_path / "results"))
        out = run_one(*plan)
        requests = srv.requests
    dump, events = finished(out)
    # the merged branch is the original history's tree
    assert git(repo, "rev-parse", f"{out.spec.merged_branch}^{{tree}}") == git(repo, "rev-parse", "B^{tree}")
    # each task's commit on its agent's branch carries exactly the original commit's change
    by_agent: dict[str, list[str]] = {}
    for t in dump.tasks:
        done = next(r for r in dump.history if r.entity == "task" and r.entity_id == t.id and r.to_state == "completed")
        commit = done.data["commit"]
        branch = out.spec.agent_branch(t.completed_by)
        assert subprocess.run(["git", "merge-base", "--is-ancestor", commit, branch], cwd=repo).returncode == 0
        assert patch_id(repo, commit) == patch_id(repo, t.meta["commit"]), t.id
        by_agent.setdefault(t.completed_by, []).append(t.id)
    assert len(by_agent) == 2, by_agent  # both agents worked
    # tokens and cost came from claude's own result line, through the parser, into the store
    assert all(t.tokens_in > 0 and t.tokens_out > 0 and t.cost_usd > 0 for t in dump.tasks), \
        [(t.id, t.tokens_in, t.tokens_out, t.cost_usd) for t in dump.tasks]
    assert out.metrics.get("cost_usd", 0) > 0
    # the server saw every task's conversation: the patch as a Bash call, then the closing turn
    main = [r for r in requests if not r["side"]]
    assert {r["task"] for r in main} == {t.id for t in dump.tasks}
    assert all(r["status"] == 200 for r in main), [r for r in main if r["status"] != 200]
    assert {r["task"] for r in main if r["tool_calls"] == ["Bash"]} == {t.id for t in dump.tasks}
    # claude's tool calls became orch step events, one per task at least, from both agents
    bash_steps = [e for e in events if e.type == "step" and e.data.get("name") == "Bash"]
    assert {e.task for e in bash_steps} == {t.id for t in dump.tasks} and {e.agent for e in bash_steps} == set(by_agent)


def test_claude_sim_with_a_429_and_a_stalled_stream(tmp_path):
    """One task meets a 429 (claude retries; orch records back-pressure), another a stream that
    never ends (orch judges the agent stalled, kills it, requeues the task; the retry completes)."""
    need("claude")
    repo = slot_repo(tmp_path, 4)
    tasks = module_tasks(4)
    tasks[1]["meta"] = {"model_faults": [{"turn": 0, "kind": "rate_limit", "retry_after": 2}]}
    tasks[2]["meta"] = {"model_faults": [{"turn": 1, "kind": "hang"}]}
    tpl = write_graph(tmp_path, tasks)
    with ModelServer("sim", worktrees=[tmp_path]) as srv:
        # the CLI's own timeout is far above the stall threshold: the stall must be orch's verdict
        exp = experiment(tmp_path, tpl, srv, cli_timeout_s=40)
        [plan] = plan_runs(RunRequest(variant="pull-2", experiment=exp, repo=repo, results=tmp_path / "results"))
        srv.attach_run(plan[0].store_url, plan[0].run_id)
        out = run_one(*plan)
        requests = srv.requests
    dump, events = finished(out)
    # every task's sim edit landed in the merged branch
    for i in range(4):
        text = git(repo, "show", f"{out.spec.merged_branch}:m{i}.py")
        assert f"task t{i}: change module {i} [sim " in text and "orch-slot" not in text
    # the 429: served once, retried by claude, recorded by orch as back-pressure for t1
    limited = [r for r in requests if r["status"] == 429]
    assert [(r["task"], r["turn"]) for r in limited] == [("t1", 0)]
    assert any(e.type == "rate_limited" and e.task == "t1" for e in events)
    # the stall: one hanging stream for t2; orch judged its agent stalled and t2 ran again
    hung = [r for r in requests if r["fault"] == "hang"]
    assert [(r["task"], r["turn"]) for r in hung] == [("t2", 1)]
    t2 = next(t for t in dump.tasks if t.id == "t2")
    assert t2.attempt >= 2
    verdicts = [r for r in dump.history if r.entity == "agent" and r.to_state == "stalled"]
    assert verdicts, [(r.entity, r.entity_id, r.to_state, r.reason) for r in dump.history if r.entity == "agent"]
    assert any(r.entity == "task" and r.entity_id == "t2" and r.to_state == "pending" for r in dump.history)


def test_variant_model_server_key_runs_claude_through_orch_run(tmp_path):
    """`model_server: sim` in a variant: orch starts the server and points every agent at it."""
    need("claude")
    repo = slot_repo(tmp_path, 3)
    exp = served_experiment(tmp_path, write_graph(tmp_path, module_tasks(3)), {"name": "claude-2", "agents": 2, "kind": "claude"})
    [plan] = plan_runs(RunRequest(variant="claude-2", experiment=exp, repo=repo, results=tmp_path / "results"))
    out = run_one(*plan)
    assert out.status == "finished"
    assert out.metrics["tasks_completed"] == 3 and out.metrics["tokens"]["total"] > 0
    recorded = (out.run_dir / "model-requests.jsonl").read_text().splitlines()
    assert {json.loads(r)["task"] for r in recorded} >= {"t0", "t1", "t2"}
    for i in range(3):
        assert f"task t{i}: change module {i} [sim " in git(repo, "show", f"{out.spec.merged_branch}:m{i}.py")


def test_claude_tool_call_loop_is_judged_looping(tmp_path):
    """The server answers one task's turn with the same tool call forever: claude repeats it, orch
    sees identical steps, judges the agent looping, kills it and the task's next attempt completes."""
    need("claude")
    repo = slot_repo(tmp_path, 2)
    tasks = module_tasks(2)
    tasks[1]["meta"] = {"model_faults": [{"turn": 0, "kind": "loop"}]}
    exp = served_experiment(tmp_path, write_graph(tmp_path, tasks),
                            {"name": "claude-1", "agents": 1, "kind": "claude", "kind_options": {"timeout_s": 120}}, loop_repeats=4)
    [plan] = plan_runs(RunRequest(variant="claude-1", experiment=exp, repo=repo, results=tmp_path / "results"))
    out = run_one(*plan)
    dump, _ = finished(out)
    looping = [r for r in dump.history if r.entity == "agent" and r.to_state == "looping"]
    assert looping and looping[0].data.get("step"), [(r.entity_id, r.to_state) for r in dump.history if r.entity == "agent"]
    t1 = next(t for t in dump.tasks if t.id == "t1")
    assert t1.attempt >= 2


@pytest.mark.parametrize("cli", ["codex", "opencode", "gemini", "aider"])
def test_variant_model_server_key_runs_other_clis_through_orch_run(tmp_path, cli, monkeypatch):
    """The same with real codex (Responses API; the server declared as a provider), opencode (Chat
    Completions; a provider in its config) and gemini (Gemini API; GOOGLE_GEMINI_BASE_URL). PWD
    points elsewhere on purpose: opencode once took its project directory from it and edited the
    wrong tree."""
    need(cli)
    monkeypatch.setenv("PWD", str(tmp_path))
    decoy = tmp_path / "m0.py"
    repo = slot_repo(tmp_path, 2)
    exp = served_experiment(tmp_path, write_graph(tmp_path, module_tasks(2)),
                            {"name": f"{cli}-2", "agents": 2, "kind": cli}, stall_after_ms=30_000)
    [plan] = plan_runs(RunRequest(variant=f"{cli}-2", experiment=exp, repo=repo, results=tmp_path / "results"))
    out = run_one(*plan)
    dump, _ = finished(out)
    assert out.metrics["tasks_completed"] == 2 and out.metrics["tokens"]["total"] > 0
    for i in range(2):  # the slot line replaced, not appended to: the server knew the worktree
        text = git(repo, "show", f"{out.spec.merged_branch}:m{i}.py")
        assert f"task t{i}: change module {i} [sim " in text and "orch-slot" not in text, text
    assert not decoy.exists() and git(repo, "status", "--porcelain") == ""  # nothing edited outside the worktrees
    assert "[user]" not in (repo / ".git" / "config").read_text()  # no CLI wrote an identity into the repository


# aider makes one request per task, and the OpenAI SDK inside litellm retries a 429 twice without
# a word: only the third reaches aider, which then says so and retries itself
@pytest.mark.parametrize("cli,turn,times", [("gemini", 1, 1), ("aider", 0, 3)])
def test_429_through_orch_run_is_back_pressure(tmp_path, cli, turn, times):
    """A 429 with a suggested delay: gemini (Gemini API) and aider (litellm) wait and retry by
    themselves and say so in their output, orch records a rate_limited event for the task, and
    the run completes."""
    need(cli)
    repo = slot_repo(tmp_path, 2)
    tasks = module_tasks(2)
    tasks[0]["meta"] = {"model_faults": [{"turn": turn, "kind": "rate_limit", "retry_after": 0.5, "times": times}]}
    exp = served_experiment(tmp_path, write_graph(tmp_path, tasks), {"name": f"{cli}-1", "agents": 1, "kind": cli},
                            stall_after_ms=30_000)
    [plan] = plan_runs(RunRequest(variant=f"{cli}-1", experiment=exp, repo=repo, results=tmp_path / "results"))
    out = run_one(*plan)
    dump, events = finished(out)
    recorded = [json.loads(r) for r in (out.run_dir / "model-requests.jsonl").read_text().splitlines()]
    assert [(r["task"], r["turn"]) for r in recorded if r["status"] == 429] == [("t0", turn)] * times
    limited = [e for e in events if e.type == "rate_limited"]
    assert [e.task for e in limited] == ["t0"] and limited[0].data["retry_after"] > 0, [e.data for e in limited]
    for i in range(2):
        assert f"task t{i}: change module {i} [sim " in git(repo, "show", f"{out.spec.merged_branch}:m{i}.py")


def test_aider_replays_a_history_through_search_replace_blocks(tmp_path):
    """aider edits by text: the server turns each task's recorded commit into SEARCH/REPLACE blocks
    against the worktree's files, aider applies them, orch commits. The merged branch is the
    original history's tree; aider's token counts (and the variant's prices) reach the store."""
    need("aider")
    from gitwork.history import build

    repo = build_history(tmp_path / "repo", TEXT_HISTORY)
    tpl = tmp_path / "replay.json"
    save_file(tpl, build(repo, "A..B", "files").graph)
    exp = served_experiment(tmp_path, tpl, {"name": "aider-2", "agents": 2, "kind": "aider", "model_server": "replay",
                                            "kind_options": {"edit_format": "diff", "usd_per_mtok": {"in": 3, "out": 15}}},
                            stall_after_ms=30_000)
    [plan] = plan_runs(RunRequest(variant="aider-2", experiment=exp, repo=repo, base="A", results=tmp_path / "results"))
    out = run_one(*plan)
    dump, events = finished(out)
    assert git(repo, "rev-parse", f"{out.spec.merged_branch}^{{tree}}") == git(repo, "rev-parse", "B^{tree}")
    for t in dump.tasks:  # each task's commit carries exactly the original change
        done = next(r for r in dump.history if r.entity == "task" and r.entity_id == t.id and r.to_state == "completed")
        assert patch_id(repo, done.data["commit"]) == patch_id(repo, t.meta["commit"]), t.id
        assert t.tokens_in > 0 and t.tokens_out > 0 and t.cost_usd > 0, (t.id, t.tokens_in, t.tokens_out, t.cost_usd)
    recorded = [json.loads(r) for r in (out.run_dir / "model-requests.jsonl").read_text().splitlines()]
    assert {r["task"] for r in recorded if r["status"] == 200 and "<<<<<<< SEARCH" in r["text"]} == {t.id for t in dump.tasks}
    edits = [e for e in events if e.type == "step" and e.data.get("name") == "edit"]
    assert {e.task for e in edits} == {t.id for t in dump.tasks}  # aider's "Applied edit to" lines


def test_opencode_agents_starting_together_in_a_fresh_home_all_complete(tmp_path):
    """Four opencode agents start at once in a HOME opencode has never seen. They used to race on
    creating opencode's one session database ("table `workspace` already exists"): a task failed
    in about two runs of five. Each invocation now has a database of its own."""
    need("opencode")
    repo = slot_repo(tmp_path, 8)
    exp = served_experiment(tmp_path, write_graph(tmp_path, module_tasks(8)),
                            {"name": "opencode-4", "agents": 4, "kind": "opencode"}, stall_after_ms=30_000)
    [plan] = plan_runs(RunRequest(variant="opencode-4", experiment=exp, repo=repo, results=tmp_path / "results"))
    out = run_one(*plan)
    dump, _ = finished(out)  # names every task that did not complete, with its reason
    assert [t.attempt for t in dump.tasks] == [1] * 8  # no task needed a second attempt
    for i in range(8):
        assert f"task t{i}: change module {i} [sim " in git(repo, "show", f"{out.spec.merged_branch}:m{i}.py")
