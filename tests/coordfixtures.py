"""A prepared agent-driven run for the coordination tools' tests: a real run directory (run.json,
tokens, store with the graph, the demo git repository, a worktree per working agent) made by
``prepare_run``, and a coordination server process serving it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from coordstore.models import Dependency, Task, TaskGraph
from orchestrator.coordination.tokens import read_tokens
from orchestrator.rundir import AgentSpec, RunPaths, RunSpec
from orchestrator.runs.prepare import prepare_run

from conftest import make_store_url

ROOT = Path(__file__).resolve().parents[1]


def small_graph() -> TaskGraph:
    """a and b independent; c blocked by a; box a container of box.1 and box.2 (box.2 follows box.1)."""
    tasks = [Task(id="a", title="do a", file_scope=["a.txt"]), Task(id="b", title="do b", file_scope=["b.txt"]),
             Task(id="c", title="do c", file_scope=["a.txt"]), Task(id="box", title="a box"),
             Task(id="box.1", title="first inside", file_scope=["box.txt"]), Task(id="box.2", title="second inside")]
    deps = [Dependency(from_id="a", to_id="c", type="blocks"), Dependency(from_id="box", to_id="box.1", type="contains"),
            Dependency(from_id="box", to_id="box.2", type="contains"), Dependency(from_id="box.2", to_id="box.1", type="follows")]
    return TaskGraph(tasks=tasks, dependencies=deps)


def agent_run(base: Path, scheme: str = "sqlite", run_id: str = "r1", graph: TaskGraph | None = None,
              workers: int = 2, policy: str = "push") -> tuple[RunSpec, RunPaths]:
    """A prepared ``coordination: agents`` run under ``base``: a coordinator and ``workers`` workers."""
    paths = RunPaths(base / run_id)
    agents = [AgentSpec(id="coordinator", role="coordinator", kind="none", instruction="assign every task")]
    agents += [AgentSpec(id=f"w{i}", role="worker", tags=["py"] if i == 1 else None) for i in range(1, workers + 1)]
    spec = RunSpec(run_id=run_id, experiment_id="e", variant="v", policy=policy, coordination="agents", agents=agents,
                   template=str(base / "graph.json"), repo=str(paths.demo_repo), base="main",
                   store_url=make_store_url(scheme, base / f"store-{run_id}"), seed=1, time_scale=0.01, timeout_s=60)
    prepare_run(spec, paths, graph or small_graph(), None, demo=True)
    return spec, paths


def tokens(paths: RunPaths) -> dict[str, str]:
    return read_tokens(paths)


class ServerProcess:
    """``python -m orchestrator.coordination --run-dir DIR`` in its own process; ``url`` once it listens."""

    def __init__(self, run_dir: Path, *extra: str):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.coordination", "--run-dir", str(run_dir), *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        first = self.proc.stdout.readline().strip()
        if not first.startswith("listening "):
            self.stop()
            raise AssertionError(f"server did not start: {first!r} {self.proc.stderr.read()}")
        self.url = first.split(" ", 1)[1]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=10)
        finally:
            for f in (self.proc.stdout, self.proc.stderr):
                f.close()


def payload(result) -> object:
    """A tool result's JSON (the text content), as the tools return it."""
    return json.loads(result.content[0].text)


@asynccontextmanager
async def http_client(url: str, token: str | None):
    """The official SDK's client over streamable HTTP, every request carrying ``token``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers) as hc:
        async with Client(streamable_http_client(url, http_client=hc)) as c:
            yield c
