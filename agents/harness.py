"""Run agents without the orchestrator: a git repo, a store holding the graph, a worktree and a
runner process per agent. For tests and benchmarks of the agent side (like rq's burst mode):
no supervision, no watcher -- the store's history and the event files are the evidence.

    run = LocalRun(tmp_path, graph, seed=7, time_scale=0.001)
    run.add_agent("w1"); run.add_agent("w2")
    run.start_all(); run.wait(timeout=30)
    run.history(), run.events("w1"), run.merged_text("src/a.py")
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from coordstore import open_store
from coordstore.models import Agent, Run, TaskGraph, works
from coordstore.paths import confine

from agents.config import LEASE_MS, RunnerConfig

from gitwork.demo import demo_files
from gitwork.merging import Merger
from gitwork.runner import git, identity
from gitwork.worktrees import Worktrees

REPO_ROOT = Path(__file__).resolve().parents[1]  # so runners import this checkout's packages
BASE_IDENTITY = identity("orch harness", "harness@orch.invalid")


def no_git_identity_env(home: Path) -> dict[str, str]:
    """Environment of a machine where git has NO user configured (and must not guess one):
    a private HOME whose global config only says ``useConfigOnly``. Identity variables to unset
    are listed in ``IDENTITY_VARS``."""
    cfg = Path(home) / ".gitconfig"
    cfg.write_text("[user]\n\tuseConfigOnly = true\n[init]\n\tdefaultBranch = main\n")
    return {"HOME": str(home), "GIT_CONFIG_GLOBAL": str(cfg), "GIT_CONFIG_NOSYSTEM": "1"}


IDENTITY_VARS = ("EMAIL", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
                 "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")


def _git(cwd: Path, *args: str) -> str:
    """stdout of ``git ARGS`` in ``cwd``, as git printed it (file contents stay exact)."""
    return git(cwd, *args, env=BASE_IDENTITY).stdout


class LocalRun:
    def __init__(self, root: Path, graph: TaskGraph, *, run_id: str = "r1", seed: int = 0, time_scale: float = 0.001,
                 merge_mode: str = "immediate", files: dict[str, str | bytes] | None = None, on_blocker_failure: str = "cancel",
                 heartbeat_ms: int = 200, lease_ms: int = LEASE_MS, poll_ms: int = 10, store: str = "sqlite",
                 symlinks: dict[str, str] | None = None):
        """``files``: the base commit's files (text or bytes; default the demo files of ``graph``);
        ``symlinks``: links committed with them (path -> target, as ``ln -s target path``)."""
        self.root = Path(root).resolve()  # absolute: git runs with -C from other directories
        self.run_id, self.seed, self.time_scale, self.merge_mode = run_id, seed, time_scale, merge_mode
        self.timing = {"heartbeat_ms": heartbeat_ms, "lease_ms": lease_ms, "poll_ms": poll_ms}
        self.repo = self.root / "repo"
        self.repo.mkdir(parents=True)
        for rel, content in (demo_files(graph) if files is None else files).items():
            p = confine(self.repo, rel)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
        for rel, target in (symlinks or {}).items():
            link = confine(self.repo, rel, follow=False)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
        _git(self.repo, "init", "-q", "-b", "main")
        _git(self.repo, "add", "-A")
        _git(self.repo, "commit", "-q", "-m", "base")
        self.base = _git(self.repo, "rev-parse", "HEAD").strip()
        self.merged_ref = f"refs/heads/orch/{run_id}/merged"
        Merger(self.repo, self.merged_ref).create(self.base)
        self.store_url = {"sqlite": f"sqlite://{self.root / 'orch.db'}", "file": f"file://{self.root / 'store'}"}.get(store, store)
        self.store = open_store(self.store_url)
        self.store.create_run(Run(id=run_id, seed=seed, on_blocker_failure=on_blocker_failure))
        self.store.add_graph(run_id, graph)
        self.configs: dict[str, Path] = {}
        self.procs: dict[str, subprocess.Popen] = {}

    def add_agent(self, agent_id: str, *, role: str = "worker", tags: list[str] | None = None, kind: str = "sim",
                  kind_options: dict[str, Any] | None = None, policy: str = "pull", policy_options: dict[str, Any] | None = None,
                  **overrides: Any) -> Path:
        """Worktree, config file and store registration of one agent (as the orchestrator does)."""
        branch = f"orch/{self.run_id}/{agent_id}"
        wt = Worktrees(self.repo, self.root / "worktrees").add(agent_id, branch, self.base) if works(role) else None
        cfg = RunnerConfig(**{
            "store_url": self.store_url, "run_id": self.run_id, "agent_id": agent_id, "role": role, "tags": tags,
            "kind": kind if works(role) else "none", "kind_options": kind_options or {}, "policy": policy,
            "policy_options": policy_options or {}, "worktree": str(wt) if wt else None, "repo": str(self.repo),
            "events_dir": str(self.events_dir(agent_id)), "merged_ref": self.merged_ref, "branch": branch,
            "merge_mode": self.merge_mode, "seed": self.seed, "time_scale": self.time_scale, **self.timing, **overrides,
        })
        path = self.root / "agents" / f"{agent_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        cfg.write(path)
        self.configs[agent_id] = path
        self.store.register_agent(self.run_id, Agent(id=agent_id, kind=cfg.kind, role=role, tags=tags or []), lease_ms=cfg.lease_ms)
        return path

    def events_dir(self, agent_id: str) -> Path:
        return self.root / "events" / agent_id

    def start(self, agent_id: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        penv = {**os.environ, **(env or {})}
        penv["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), penv.get("PYTHONPATH", "")]))
        with open(logs / f"{agent_id}.log", "ab") as log:
            p = subprocess.Popen([sys.executable, "-m", "agents.runner", "--config", str(self.configs[agent_id])],
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=penv, cwd=self.root)
        self.procs[agent_id] = p
        return p

    def start_all(self) -> None:
        for a in self.configs:
            self.start(a)

    def wait(self, timeout: float = 60.0) -> dict[str, int]:
        """Exit status of every runner; stragglers past ``timeout`` are killed and reported as None."""
        end = time.monotonic() + timeout
        out: dict[str, int] = {}
        for a, p in self.procs.items():
            try:
                out[a] = p.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                out[a] = None  # type: ignore[assignment]
        return out

    def terminate(self, agent_id: str, timeout: float = 10.0) -> int:
        p = self.procs[agent_id]
        p.send_signal(signal.SIGTERM)
        return p.wait(timeout=timeout)

    def kill_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    def log(self, agent_id: str) -> str:
        p = self.root / "logs" / f"{agent_id}.log"
        return p.read_text() if p.exists() else ""

    # ------------------------------------------------------------------ evidence
    def events(self, agent_id: str) -> list[dict]:
        d = self.events_dir(agent_id)
        if not d.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(d.iterdir()) if p.name.endswith(".json") and not p.name.startswith(".")]

    def history(self, **filters: Any) -> list:
        return self.store.history(self.run_id, **filters)

    def tasks(self) -> dict:
        return {t.id: t for t in self.store.list_tasks(self.run_id)}

    def merged_text(self, rel: str) -> str:
        return _git(self.repo, "show", f"{self.merged_ref}:{rel}")

    def text_at(self, commit: str, rel: str) -> str:
        return _git(self.repo, "show", f"{commit}:{rel}")

    def git(self, *args: str) -> str:
        return _git(self.repo, *args)

    def close(self) -> None:
        self.kill_all()
        self.store.close()
