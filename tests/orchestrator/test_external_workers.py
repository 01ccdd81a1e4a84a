"""External workers for real, on the live PostgreSQL (unreachable, these tests fail): a coordinator
(`orch run --workers external`) and `orch worker` processes, each in its own directory and given
only the store URL.

The several-hosts tests put each worker in its own network namespace (``tests/netns_hosts.py``:
veth pair, the store reached through a relay on the host's side, the remote through
``git daemon`` at ``git://<hub>/remote.git``), with the coordinator's run directory and the
remote's directory covered by an empty tmpfs in the worker's mount namespace. One worker is
SIGKILLed (its process group) mid-run; another is cut off from the store. The resume test runs
plain processes and a path remote.

Sim content carries a stamp of its attempt (``[sim <digest>]``); a task a kill requeued runs again
as attempt 2, so trees are compared with stamps masked.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import PG_BASE, make_store_url
from coordstore import open_store
from netns_hosts import Network
import tcprelay

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = """\
experiment: {id: ext, name: external workers}
template: browser-parallel
execution: {runs: 1, seed: 7, time_scale: 0.0004, timeout_s: 150, store: sqlite, merge_mode: immediate,
            supervision: {lease_ms: 3000}}
variants:
  - {name: pull-4, policy: pull, agents: 4, policy_options: {order: critical-path}}
"""


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _orch(*args) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def _wait(what, cond, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _tree(repo: Path, ref: str) -> dict[str, str]:
    """path -> content of ``ref``'s tree, each sim stamp masked."""
    out = {}
    for path in _git(repo, "ls-tree", "-r", "--name-only", ref).splitlines():
        out[path] = re.sub(r"\[sim [0-9a-f]+\]", "[sim *]", _git(repo, "show", f"{ref}:{path}"))
    return out


def _held(url: str, run_id: str, pid: int) -> list[str]:
    with open_store(url, readonly=True) as s:
        return [a.id for a in s.list_agents(run_id) if a.meta.get("pid") == pid and a.status not in ("stopped", "dead", "killed")]


def _busy(url: str, run_id: str, pid: int):
    """The worker's agents once one completed a task and one works on another."""
    with open_store(url, readonly=True) as s:
        mine = {a.id for a in s.list_agents(run_id) if a.meta.get("pid") == pid}
        done = [t for t in s.list_tasks(run_id) if t.status == "completed" and t.completed_by in mine]
        working = [t for t in s.list_tasks(run_id, status=["working"]) if t.owner in mine]
        return mine if done and working else None


def _run_id(url: str):
    with open_store(url) as s:  # not read-only: the schema may not exist yet
        return next((r.id for r in s.list_runs()), None)


def _completed_once(url: str, run_id: str):
    """Every task completed exactly once (history), and the run's task and agent rows."""
    with open_store(url, readonly=True) as s:
        tasks, rows, agent_rows = s.list_tasks(run_id), s.history(run_id, entity="task"), s.history(run_id, entity="agent")
    completed = [r for r in rows if r.to_state == "completed" and not r.is_note]
    assert sorted(r.entity_id for r in completed) == sorted(t.id for t in tasks)
    assert all(t.status == "completed" for t in tasks)
    return completed, rows, agent_rows


def _agent_rows(url: str, run_id: str) -> list:
    with open_store(url, readonly=True) as s:
        return s.history(run_id, entity="agent")


def _taken(agent_rows, pid: int) -> list:
    return [r for r in agent_rows if r.data.get("action") == "slot-taken" and r.data.get("pid") == pid]


class Cluster:
    """A coordinator on this machine and workers, each on a host of ``net`` (None: plain processes
    here, the remote a path); the store a fresh PostgreSQL schema, dropped at teardown."""

    def __init__(self, tmp: Path, net: Network | None):
        self.tmp, self.net = tmp, net
        self.url = make_store_url("postgresql", tmp / "pg")
        self.exp = tmp / "ext.yaml"
        self.exp.write_text(EXPERIMENT)
        self.srv, self.coord_dir = tmp / "srv", tmp / "coord"
        for d in (self.srv, self.coord_dir, tmp / "local"):
            d.mkdir()
        if net is None:
            self.remote = str(self.srv / "remote.git")  # the coordinator creates it
        else:
            _git(tmp, "init", "-q", "--bare", str(self.srv / "remote.git"))
            self.remote = net.serve_git(self.srv) + "/remote.git"
            net.wait_git(self.remote)
        self.procs: list[subprocess.Popen] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self.hosts: dict = {}

    def coordinator(self) -> subprocess.Popen:
        # its output into files, read once it exited: a pipe read only at the end could fill and stall it mid-run
        with open(self.tmp / "coord.out", "w") as out, open(self.tmp / "coord.err", "w") as err:
            p = subprocess.Popen(_orch("run", "-e", str(self.exp), "-v", "pull-4", "--store", self.url, "--workers", "external",
                                       "--remote", self.remote, "--results", str(self.coord_dir), "--json"),
                                 env=_env(), cwd=self.tmp, stdout=out, stderr=err, start_new_session=True)
        self.procs.append(p)
        return p

    def outcome(self, coord: subprocess.Popen) -> dict:
        """The coordinator's run, once it exited 0 (its stderr in the failure otherwise)."""
        assert coord.wait(timeout=150) == 0, (self.tmp / "coord.err").read_text()
        return json.loads((self.tmp / "coord.out").read_text())["runs"][0]

    def worker(self, name: str, slots: int = 2, url: str | None = None, once: bool = True) -> subprocess.Popen:
        d = self.tmp / name
        d.mkdir()
        url = url or self.url
        if self.net is not None:
            host = self.hosts[name] = self.net.add_host(name)
            url = host.store_url(self.url)
        argv = _orch("worker", "--store", url, "--slots", str(slots), "--dir", str(d), *(["--once"] if once else []))
        if self.net is not None:  # the coordinator's directories are not there for it
            argv = self.hosts[name].cmd(argv, hide=[self.coord_dir, self.srv, self.tmp / "local"])
        p = subprocess.Popen(argv, env=_env(), cwd=d, stdout=subprocess.DEVNULL, stderr=open(d / "worker.log", "w"),
                             start_new_session=True)  # its own process group, killed whole
        self.procs.append(p)
        self.workers[name] = p
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


@pytest.fixture
def net():
    with Network(PG_BASE) as n:
        yield n


def _one_machine(tmp: Path) -> dict:
    local = subprocess.run(_orch("run", "-e", str(tmp / "ext.yaml"), "-v", "pull-4", "--results", str(tmp / "local"), "--json"),
                           env=_env(), cwd=tmp, capture_output=True, text=True, timeout=150)
    assert local.returncode == 0, local.stderr
    return json.loads(local.stdout)["runs"][0]


def _three_workers_b_busy(c: Cluster) -> tuple:
    """The coordinator and workers a and b (two agents each) and c (nothing to take until b's slots
    reopen), back once b has completed a task and works on another: (coordinator, run id, b)."""
    coord = c.coordinator()
    rid = _wait("the run", lambda: _run_id(c.url))
    a = c.worker("a")
    _wait("worker a's agents", lambda: len(_held(c.url, rid, a.pid)) == 2)
    b = c.worker("b")
    _wait("worker b's agents", lambda: len(_held(c.url, rid, b.pid)) == 2)
    c.worker("c")
    _wait("worker b to complete a task and work on another", lambda: _busy(c.url, rid, b.pid))
    return coord, rid, b


def test_three_hosts_one_killed_same_tree_as_one_machine(tmp_path, net):
    c = Cluster(tmp_path, net)
    try:
        coord, rid, b = _three_workers_b_busy(c)
        os.killpg(b.pid, signal.SIGKILL)
        b.wait()
        result = c.outcome(coord)
        assert result["status"] == "finished"
        for name in ("a", "c"):
            assert c.workers[name].wait(timeout=30) == 0, (tmp_path / name / "worker.log").read_text()
    finally:
        c.close()

    completed, rows, agent_rows = _completed_once(c.url, rid)
    assert any(r.reason and r.reason.startswith("lease expired") for r in rows if r.to_state == "pending")
    taken_by_c = _taken(agent_rows, c.workers["c"].pid)
    assert taken_by_c and all(r.data["gen"] == 2 for r in taken_by_c)  # c ran the reopened slots
    assert {r.data["host"] for r in agent_rows if r.data.get("action") == "slot-taken"} == {os.uname().nodename}

    repo, merged = Path(result["repo"]), result["merged_branch"]
    killed = {r.entity_id for r in _taken(agent_rows, b.pid)}
    reopened = max(x.ts_ms for x in taken_by_c)
    b_commits = [r.data.get("commit") for r in completed if r.agent in killed and r.ts_ms < reopened]
    assert b_commits
    for sha in filter(None, b_commits):  # kept on the remote and in the merged branch
        assert _git(c.srv / "remote.git", "for-each-ref", f"refs/orch/{rid}/c/{sha}").strip()
        _git(repo, "merge-base", "--is-ancestor", sha, merged)

    one = _one_machine(tmp_path)
    assert one["seed"] == result["seed"]
    assert _tree(Path(one["repo"]), one["merged_branch"]) == _tree(repo, merged)


def test_worker_cut_off_from_the_store_stops_its_runners(tmp_path, net):
    """b loses the store (its relay dies) while it works: its runners cannot renew and exit, their
    leases expire, c takes the slots over; nothing is completed twice; b rides the outage out."""
    c = Cluster(tmp_path, net)
    try:
        coord, rid, b = _three_workers_b_busy(c)
        c.hosts["b"].cut_store()
        assert c.outcome(coord)["status"] == "finished"
        # b's runners stopped by themselves (lease lost), so b, --once, exits by itself: 0
        assert b.wait(timeout=30) == 0
        for name in ("a", "c"):
            assert c.workers[name].wait(timeout=30) == 0
    finally:
        c.close()

    completed, rows, agent_rows = _completed_once(c.url, rid)
    b_agents = {r.entity_id for r in _taken(agent_rows, b.pid)}
    expired = {r.reason for r in rows if r.to_state == "pending" and r.reason and r.reason.startswith("lease expired")}
    assert expired and all(r.split()[-1] in b_agents for r in expired)
    assert _taken(agent_rows, c.workers["c"].pid)
    wlog = (tmp_path / "b" / "worker.log").read_text()
    assert "store unreachable" in wlog
    errs = [p.read_text() for p in (tmp_path / "b").glob("*/g1/logs/*.err.log")]
    assert len(errs) == 2 and all("lease lost" in e or "cannot reach PostgreSQL" in e for e in errs), errs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_worker_takes_slots_again_when_the_store_is_back(tmp_path):
    """A worker reaching the store through a relay (plain processes) holds every agent; the relay
    stops for longer than a lease (a short blip the store's reconnect rides out: tests/coordstore),
    then comes back on the same port. Its runners cannot renew and exit, the coordinator reopens
    their slots, and the reconnected worker takes them (generation 2) and finishes the run, every
    task completed once."""
    c = Cluster(tmp_path, None)
    pg, port = urlsplit(c.url), _free_port()
    user = pg.netloc.rsplit("@", 1)[0] + "@" if "@" in pg.netloc else ""
    via = urlunsplit(pg._replace(netloc=f"{user}127.0.0.1:{port}"))  # the store, through the relay
    relay = tcprelay.start("127.0.0.1", port, pg.hostname, pg.port or 5432)
    log = tmp_path / "w" / "worker.log"
    try:
        coord = c.coordinator()
        rid = _wait("the run", lambda: _run_id(c.url))
        w = c.worker("w", slots=4, url=via, once=False)
        _wait("the worker to complete a task and work on another", lambda: _busy(c.url, rid, w.pid))
        relay.kill()
        relay.wait()
        _wait("the worker to say the store is unreachable", lambda: "store unreachable" in log.read_text(), timeout=10)
        _wait("the coordinator to reopen a slot", lambda: any(r.data.get("action") == "slot-open" and r.data["gen"] == 2
                                                            for r in _agent_rows(c.url, rid)), timeout=20)
        relay = tcprelay.start("127.0.0.1", port, pg.hostname, pg.port or 5432)
        _wait("the worker to take a slot again", lambda: any(r.data["gen"] == 2 for r in _taken(_agent_rows(c.url, rid), w.pid)),
              timeout=20)
        assert c.outcome(coord)["status"] == "finished"
        w.send_signal(signal.SIGTERM)  # no --once: it would have exited when the outage ended its first runners
        assert w.wait(timeout=30) == 0, log.read_text()
    finally:
        c.close()
        relay.kill()
        relay.wait()

    text = log.read_text()
    assert text.index("store unreachable") < text.index("store reachable again"), text
    completed, rows, agent_rows = _completed_once(c.url, rid)
    taken = _taken(agent_rows, w.pid)
    assert sorted(r.data["gen"] for r in taken) == [1] * 4 + [2] * 4, [(r.entity_id, r.data) for r in taken]
    assert any(r.reason and r.reason.startswith("lease expired") for r in rows if r.to_state == "pending")
    again = min(r.ts_ms for r in taken if r.data["gen"] == 2)
    assert any(r.ts_ms > again for r in completed)  # the generation-2 runners did work


def test_resume_of_an_external_run(tmp_path):
    """The coordinator SIGKILLed mid-run, `orch resume` finishes it: the workers never stopped,
    every task completed once, the merged branch holds them all."""
    c = Cluster(tmp_path, None)
    try:
        coord = c.coordinator()
        rid = _wait("the run", lambda: _run_id(c.url))
        a = c.worker("a")
        c.worker("b")
        _wait("worker a to complete a task and work on another", lambda: _busy(c.url, rid, a.pid))
        os.killpg(coord.pid, signal.SIGKILL)
        coord.wait()
        with open_store(c.url, readonly=True) as s:
            assert s.get_run(rid).status == "running"
            left = [t.id for t in s.list_tasks(rid) if t.status != "completed"]
        assert left
        run_dir = next(c.coord_dir.rglob("run.json")).parent
        p = subprocess.run(_orch("resume", str(run_dir), "--json"), env=_env(), cwd=tmp_path, capture_output=True,
                           text=True, timeout=150)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["status"] == "finished"
        for name in ("a", "b"):
            assert c.workers[name].wait(timeout=30) == 0
    finally:
        c.close()
    completed, _, _ = _completed_once(c.url, rid)
    run = json.loads((run_dir / "run.json").read_text())
    repo, branch = Path(run["repo"]), f"orch/{run['run_id']}/merged"
    commits = [r.data["commit"] for r in completed if r.data.get("commit")]  # tasks that changed the code
    assert len(commits) >= len(completed) // 2
    for sha in commits:
        _git(repo, "merge-base", "--is-ancestor", sha, branch)


@pytest.mark.parametrize("args, env, says", [
    (["--workers", "external"], {}, "--workers external needs --remote URL"),
    (["--remote", "R"], {}, "--remote is for --workers external"),
    (["--workers", "external", "--remote", "R"], {"ORCH_SAME_MACHINE": ""}, "a sqlite:// store cannot be reached from another host"),
    (["--workers", "external", "--remote", "R", "--store", "sqlite"], {}, "would live in the run directory"),
    (["--workers", "external", "--remote", "/no/such/dir/r.git"], {}, "directory /no/such/dir does not exist"),
    (["--workers", "elsewhere"], {}, "--workers elsewhere: one of local, external"),
])
def test_bad_external_arguments_are_one_line_exit_2(tmp_path, args, env, says):
    exp = tmp_path / "ext.yaml"
    exp.write_text(EXPERIMENT)
    store = [] if "--store" in args else ["--store", f"sqlite://{tmp_path}/orch.db"]
    p = subprocess.run(_orch("run", "-e", str(exp), "-v", "pull-4", *store, "--results", str(tmp_path / "r"), *args),
                       env=_env(**{"ORCH_SAME_MACHINE": "1", **env}), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert says in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() and not (tmp_path / "orch.db").exists()
