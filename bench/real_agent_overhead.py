"""Real-agent overhead: what orch adds around a real ``claude`` process, against the bare CLI.

Same run, same scripted model server (the ``sim`` script: one edit turn, then a closing turn per
task), same prompt and argv:

- bare: ``claude -p ...`` run directly in a scratch worktree, per task: spawn -> first stdout
  line, spawn -> last line (the result), spawn -> exit (after one untimed warm-up run);
- orch: ``orch run`` of the same tasks with the ``claude`` kind, per task from the recorded
  history and events: task start -> CLI spawn (the kind's argv log), spawn -> first event parsed
  from claude, spawn -> last event (claude's result line), last event -> task completed (commit,
  merge, store), and task start -> completed in all.

Prints a per-task table, then a JSON line with the medians and ``ratio`` = orch task time /
bare CLI time (1.0 would be no overhead at all).

Then one coordination call (agent-driven variants): an agent-driven pull run of the same tasks,
one long-lived claude session per agent playing a worker through orch's coordination server.
From the model server's record, per orch tool call claude made: the time from the response that
asked for it to claude's next request (claude runs the call through MCP over HTTP, orch's server
runs it against the store, claude sends the result back), beside the same gap after a shell
call (claude's own floor), the server-side latency of the calls (their history rows), and the
same reads made directly on the run's store in the same process (``list_tasks``, ``get_task``).
``ratio`` = the CLI's coordination call / the direct store call.

    python bench/real_agent_overhead.py [--tasks 4] [--agents 1] [--coordination-tasks 6]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IDENT = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env={**os.environ, **IDENT}, check=True, capture_output=True, text=True).stdout


def build(work: Path, n: int) -> tuple[Path, Path, list[dict]]:
    repo = work / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for i in range(n):
        (repo / f"m{i}.py").write_text(f"# module {i}\n# orch-slot: t{i}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    # an estimate under 45 agent-seconds makes the sim plan one step: one edit turn, then the end
    tasks = [{"id": f"t{i}", "title": f"change module {i}", "file_scope": [f"m{i}.py"], "time_estimate_ms": 20_000}
             for i in range(n)]
    tpl = work / "graph.json"
    tpl.write_text(json.dumps({"format": "orch-graph", "version": 1, "tasks": tasks, "dependencies": []}))
    return repo, tpl, tasks


def bare_argv(binary: str, task, worktree: Path, scratch: Path) -> list[str]:
    """The argv the claude kind builds for this task (its prompt, its flags)."""
    from agents.clis.base import Invocation
    from agents.clis.config import CliConfig
    from agents.clis.prompt import build_prompt

    cfg = CliConfig.build("claude", {}, "claude")
    prompt = build_prompt(task, "w1", "worker", 1, cfg.prompt_template)
    (scratch / "prompt.md").write_text(prompt)
    inv = Invocation(prompt=prompt, prompt_file=str(scratch / "prompt.md"), worktree=str(worktree), scratch=str(scratch),
                     file_scope=tuple(task.file_scope), settings=dict(cfg.settings))
    return [binary, *cfg.preset.build(inv)]


def bare_run(binary: str, srv, repo: Path, work: Path, task) -> dict[str, float]:
    from orchestrator.modelserver import agent_env

    wt = work / f"bare-{task.id}"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), "HEAD")
    scratch = Path(tempfile.mkdtemp(dir=work))
    env = {**os.environ, **IDENT, **agent_env(f"{srv.url}/s/bare-{task.id}", srv.key)}
    argv = bare_argv(binary, task, wt, scratch)
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=wt, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    stamps, out = [], b""
    for line in iter(p.stdout.readline, b""):
        stamps.append(time.perf_counter())
        out += line
    rc = p.wait()
    t_end = time.perf_counter()
    if rc != 0 or not stamps:
        raise SystemExit(f"bare claude run of {task.id} failed (exit {rc}): {out[-500:]!r}")
    changed = git(wt, "status", "--porcelain").strip()
    if not changed:
        raise SystemExit(f"bare claude run of {task.id} changed nothing: the scripted turn did not run")
    return {"first_ms": (stamps[0] - t0) * 1000, "last_ms": (stamps[-1] - t0) * 1000, "cli_ms": (t_end - t0) * 1000}


def orch_run(srv, work: Path, repo: Path, tpl: Path, agents: int):
    import yaml

    from coordstore import open_store
    from orchestrator.runs.launch import RunRequest, plan_runs, run_one

    exp = {"experiment": {"id": "overhead"}, "template": str(tpl),
           "execution": {"runs": 1, "seed": 1, "time_scale": 0.001, "timeout_s": 600},
           "variants": [{"name": f"pull-{agents}", "policy": "pull", "agents": agents, "kind": "claude",
                         "kind_options": {"env": {"ANTHROPIC_BASE_URL": srv.url, "ANTHROPIC_API_KEY": srv.key}, "timeout_s": 120}}]}
    f = work / "exp.yaml"
    f.write_text(yaml.safe_dump(exp))
    [plan] = plan_runs(RunRequest(variant=f"pull-{agents}", experiment=f, repo=repo, results=work / "results"))
    srv.attach_run(plan[0].store_url, plan[0].run_id)
    out = run_one(*plan)
    with open_store(out.spec.store_url) as s:
        tasks = s.list_tasks(out.spec.run_id)
        history = s.history(out.spec.run_id, entity="task")
        events = s.read_events(out.spec.run_id)
    bad = {t.id: t.reason for t in tasks if t.status != "completed"}
    if out.status != "finished" or bad:
        raise SystemExit(f"orch run {out.status}: {bad}")
    per: dict[str, dict[str, float]] = {}
    for t in tasks:
        start = max(r.ts_ms for r in history if r.entity_id == t.id and r.to_state == "working")
        done = max(r.ts_ms for r in history if r.entity_id == t.id and r.to_state == "completed")
        mine = sorted((e for e in events if e.task == t.id and start <= e.ts_ms <= done), key=lambda e: (e.ts_ms, e.seq))
        spawn = next(e.ts_ms for e in mine if e.type == "log" and str(e.data.get("msg", "")).startswith("claude: "))
        cli = [e for e in mine if e.ts_ms >= spawn and e.type in ("step", "tokens", "rate_limited", "error")
               or (e.type == "log" and "claude session" in str(e.data.get("msg", "")))]
        per[t.id] = {"start_to_spawn_ms": spawn - start, "first_ms": cli[0].ts_ms - spawn, "cli_ms": cli[-1].ts_ms - spawn,
                     "last_to_done_ms": done - cli[-1].ts_ms, "task_ms": done - start}
    return per


def driven_run(work: Path, tpl: Path, repo: Path, agents: int):
    """An agent-driven pull run of claude workers on the run's own model server (role sessions)."""
    import yaml

    from orchestrator.runs.launch import RunRequest, plan_runs, run_one

    exp = {"experiment": {"id": "coordination-call"}, "template": str(tpl),
           "execution": {"runs": 1, "seed": 1, "time_scale": 0.001, "timeout_s": 600},
           "variants": [{"name": f"driven-pull-{agents}", "policy": "pull", "coordination": "agents", "agents": agents,
                         "kind": "claude", "model_server": "sim"}]}
    f = work / "exp-driven.yaml"
    f.write_text(yaml.safe_dump(exp))
    [plan] = plan_runs(RunRequest(variant=f"driven-pull-{agents}", experiment=f, repo=repo, results=work / "results-driven"))
    out = run_one(*plan)
    if out.status != "finished":
        raise SystemExit(f"agent-driven run {out.status}: see {out.run_dir}")
    return out


def call_gaps(record: Path) -> tuple[list[float], list[float]]:
    """(ms from a response asking for one orch tool call to the client's next request, the same
    after one shell call that is not a wait), over every session of the model server's record."""
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    by_session: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("status") == 200 and not r.get("side"):
            by_session.setdefault(r["session"], []).append(r)
    orch, shell = [], []
    for turns in by_session.values():
        turns.sort(key=lambda r: r["seq"])
        for asked, nxt in zip(turns, turns[1:]):
            calls = asked.get("tool_calls") or []
            if len(calls) != 1:
                continue
            gap = float(nxt["ts_ms"] - asked["ts_ms"])
            if asked.get("mcp"):
                orch.append(gap)
            elif "waiting" not in (asked.get("text") or "").lower() and calls[0] in ("Bash", "bash"):  # not a wait
                shell.append(gap)
    return orch, shell


def direct_reads(store_url: str, run_id: str, n: int = 300) -> list[float]:
    """ms per direct store read, the tools' own reads: the run's tasks, then one task."""
    from coordstore import open_store

    out = []
    with open_store(store_url) as s:
        ids = [t.id for t in s.list_tasks(run_id)]
        for i in range(n):
            t0 = time.perf_counter()
            s.list_tasks(run_id, status=["pending", "completed"])
            s.get_task(run_id, ids[i % len(ids)])
            out.append((time.perf_counter() - t0) * 1000 / 2)
    return out


def coordination_call(work: Path, n_tasks: int, agents: int) -> dict:
    from coordstore import open_store

    sub = work / "driven"
    sub.mkdir()
    repo, tpl, _ = build(sub, n_tasks)
    out = driven_run(sub, tpl, repo, agents)
    orch, shell = call_gaps(out.run_dir / "model-requests.jsonl")
    with open_store(out.spec.store_url) as s:
        server = [r.data["latency_ms"] for r in s.history(out.spec.run_id, entity="tool") if "latency_ms" in r.data]
    direct = direct_reads(out.spec.store_url, out.spec.run_id)
    if not orch or not shell:
        raise SystemExit(f"no coordination or shell calls found in {out.run_dir / 'model-requests.jsonl'}")
    med = lambda xs: round(statistics.median(xs), 3)  # noqa: E731
    return {"coordination_calls": len(orch), "cli_coordination_call_ms": med(orch), "cli_shell_call_ms": med(shell),
            "server_tool_ms": med(server), "direct_store_call_ms": med(direct),
            "ratio": round(statistics.median(orch) / statistics.median(direct), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--agents", type=int, default=1, help="orch agents (1: no contention for the 2 cores with the bare runs' numbers)")
    ap.add_argument("--coordination-tasks", type=int, default=6, help="tasks of the agent-driven run (0: skip it)")
    args = ap.parse_args()
    binary = shutil.which("claude")
    if binary is None:
        raise SystemExit("the real claude CLI is not installed: npm install -g @anthropic-ai/claude-code")
    from coordstore.models import Task
    from orchestrator.modelserver import ModelServer

    with tempfile.TemporaryDirectory(prefix="orch-overhead-") as tmp, ModelServer("sim", worktrees=[tmp]) as srv:
        work = Path(tmp)
        os.environ["HOME"] = str(work)  # claude writes its config under HOME: keep it in the scratch tree
        repo, tpl, raw_tasks = build(work, args.tasks)
        from orchestrator.modelserver.tasksource import GraphTasks

        srv.tasks = GraphTasks(tpl)  # the bare runs: the task comes from the prompt
        bare_run(binary, srv, repo, work, Task(**{**raw_tasks[0], "id": "warmup"}))  # claude's first start in a new HOME sets up its config
        bare = {t["id"]: bare_run(binary, srv, repo, work, Task(**t)) for t in raw_tasks}
        orch = orch_run(srv, work, repo, tpl, args.agents)
        coord = coordination_call(work, args.coordination_tasks, args.agents) if args.coordination_tasks else None
    print(f"claude {subprocess.run([binary, '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"{args.tasks} tasks, orch pull-{args.agents}; all times in ms")
    print(f"{'':<5} {'bare CLI':^26} | {'orch':^45}")
    print(f"{'task':<5} {'first':>6} {'last':>6} {'exit':>6}  | {'start>spawn':>11} {'first':>6} {'last':>6} {'last>done':>9} "
          f"{'task':>6} {'ratio':>6}")
    for tid in sorted(bare):
        b, o = bare[tid], orch[tid]
        print(f"{tid:<5} {b['first_ms']:>6.0f} {b['last_ms']:>6.0f} {b['cli_ms']:>6.0f}  | {o['start_to_spawn_ms']:>11.0f} "
              f"{o['first_ms']:>6.0f} {o['cli_ms']:>6.0f} {o['last_to_done_ms']:>9.0f} {o['task_ms']:>6.0f} "
              f"{o['task_ms'] / b['cli_ms']:>6.2f}")
    med = lambda xs: round(statistics.median(xs), 1)  # noqa: E731
    summary = {
        "tasks": args.tasks, "agents": args.agents,
        "bare_first_ms": med([b["first_ms"] for b in bare.values()]), "bare_last_ms": med([b["last_ms"] for b in bare.values()]),
        "bare_cli_ms": med([b["cli_ms"] for b in bare.values()]),
        "orch_start_to_spawn_ms": med([o["start_to_spawn_ms"] for o in orch.values()]),
        "orch_spawn_to_first_event_ms": med([o["first_ms"] for o in orch.values()]),
        "orch_cli_ms": med([o["cli_ms"] for o in orch.values()]),
        "orch_last_event_to_commit_ms": med([o["last_to_done_ms"] for o in orch.values()]),
        "orch_task_ms": med([o["task_ms"] for o in orch.values()]),
    }
    summary["overhead_ms"] = round(summary["orch_task_ms"] - summary["bare_cli_ms"], 1)
    summary["ratio"] = round(summary["orch_task_ms"] / summary["bare_cli_ms"], 3)
    print(json.dumps(summary, sort_keys=True))
    if coord:
        print(f"coordination call: claude -> orch's MCP server -> store p50 {coord['cli_coordination_call_ms']:.0f} ms "
              f"({coord['coordination_calls']} calls; claude after a shell call p50 {coord['cli_shell_call_ms']:.0f} ms, "
              f"server-side p50 {coord['server_tool_ms']:.2f} ms) vs direct store call p50 "
              f"{coord['direct_store_call_ms']:.3f} ms: ratio {coord['ratio']:,}")
        print(json.dumps({"coordination": coord}, sort_keys=True))


if __name__ == "__main__":
    main()
