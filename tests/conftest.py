"""Shared fixtures: a store URL for every backend, an injectable clock, small graphs, git isolation.

``store_url`` is parametrized over every key of ``coordstore.BACKENDS``: a backend that cannot be
opened fails the suite (never skips), and a new backend without a URL builder here fails loudly.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

import pytest

from coordstore import BACKENDS, open_store
from coordstore.models import Dependency, Run, Task, TaskGraph

T0 = 1_700_000_000_000  # a fixed epoch-ms start, so timestamps in assertions are exact


def _file_url(base: Path) -> str:
    return f"file://{base / 'store'}"


def _sqlite_url(base: Path) -> str:
    return f"sqlite://{base / 'orch.db'}"


# the live PostgreSQL of these machines and CI; unreachable, it fails the tests (never skips them)
PG_BASE = os.environ.get("ORCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_pg_schemas: list[str] = []  # made by this test, dropped at its teardown (drop_pg_schemas)


def _pg_url(base: Path) -> str:
    """A fresh, unique schema (nothing is created until the store opens it)."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    _pg_schemas.append(schema)
    return f"{PG_BASE}?schema={schema}"


def drop_pg_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_BASE, autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(autouse=True)
def drop_pg_schemas():
    """Drop the PostgreSQL schemas the test made (autouse: torn down after the test's stores close)."""
    yield
    while _pg_schemas:
        drop_pg_schema(_pg_schemas.pop())


# scheme -> how to build a fresh URL under a directory; every BACKENDS key must have one
URL_BUILDERS = {"file": _file_url, "sqlite": _sqlite_url, "postgresql": _pg_url}


def make_store_url(scheme: str, base: Path) -> str:
    """A fresh URL for backend ``scheme`` rooted in directory ``base`` (created)."""
    if scheme not in URL_BUILDERS:
        pytest.fail(f"backend {scheme!r} is in coordstore.BACKENDS but tests/conftest.py has no URL builder for it")
    base.mkdir(parents=True, exist_ok=True)
    return URL_BUILDERS[scheme](base)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request) -> str:
    return request.param


@pytest.fixture
def store_url(backend, tmp_path) -> str:
    return make_store_url(backend, tmp_path / f"{backend}-a")


@pytest.fixture
def other_store_url(backend, tmp_path) -> str:
    """A second, empty store of the same backend (round trips)."""
    return make_store_url(backend, tmp_path / f"{backend}-b")


class FakeClock:
    """A ``coordstore.clock.Clock`` in integer ms that only tests move: ``advance`` explicitly,
    or ``sleep``, which moves the time instead of waiting (``slept`` records each call)."""

    def __init__(self, start: int = T0):
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int = 1) -> int:
        self.now += ms
        return self.now

    def sleep(self, ms: float) -> None:
        self.slept.append(ms)
        if ms > 0:
            self.now += math.ceil(ms)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(store_url, clock):
    with open_store(store_url, clock=clock) as s:
        yield s


def make_graph(tasks, deps=()) -> TaskGraph:
    """tasks: ids or dicts of Task fields; deps: (from, type, to) triples, e.g. ("a", "blocks", "b")."""
    ts = [Task(id=t, title=t.upper()) if isinstance(t, str) else Task(**t) for t in tasks]
    return TaskGraph(tasks=ts, dependencies=[Dependency(from_id=f, type=k, to_id=t) for f, k, t in deps])


@pytest.fixture
def new_run(store):
    """Factory: create a run (default id ``r``) in ``store`` and add a graph to it."""

    def make(tasks=(), deps=(), run_id: str = "r", on_blocker_failure: str = "cancel") -> str:
        store.create_run(Run(id=run_id, experiment="exp", variant="v", on_blocker_failure=on_blocker_failure))
        if tasks:
            store.add_graph(run_id, make_graph(tasks, deps))
        return run_id

    return make


@pytest.fixture
def git_env(tmp_path, monkeypatch) -> dict[str, str]:
    """Isolate git from the machine: fixed identity, no global/system config, a private HOME."""
    home = tmp_path / "git-home"
    home.mkdir(exist_ok=True)
    env = {
        "GIT_AUTHOR_NAME": "orch-test",
        "GIT_AUTHOR_EMAIL": "orch-test@example.invalid",
        "GIT_COMMITTER_NAME": "orch-test",
        "GIT_COMMITTER_EMAIL": "orch-test@example.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(home),
        "GIT_TERMINAL_PROMPT": "0",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def no_git_identity(tmp_path_factory, monkeypatch):
    """A HOME and global config with no user, and git told never to guess one: anything orch
    commits must carry its own identity (as on a CI machine where git has no user configured)."""
    from agents.harness import IDENTITY_VARS, no_git_identity_env

    for k, v in no_git_identity_env(tmp_path_factory.mktemp("home")).items():
        monkeypatch.setenv(k, v)
    for var in IDENTITY_VARS:
        monkeypatch.delenv(var, raising=False)


LOCAL_SCALE = 0.003  # agent-run tests: one estimated minute runs in 180 ms


@pytest.fixture
def local(tmp_path):
    """Factory of agents.harness.LocalRun (runners without an orchestrator), all closed afterwards."""
    from agents.harness import LocalRun

    runs = []

    def make(g, name: str = "run", **kw):
        r = LocalRun(tmp_path / name, g, time_scale=kw.pop("time_scale", LOCAL_SCALE), **kw)
        runs.append(r)
        return r

    yield make
    for r in runs:
        r.close()


def wait_for(cond, timeout: float = 20.0, every: float = 0.02):
    """Poll ``cond`` until it returns something truthy (returned), or fail after ``timeout`` s."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def serve(tmp_path):
    """``serve(script, **kw)`` -> a started model server (``script``: sim, replay, a path, or a
    list of turns written to a file script; files read below ``tmp_path`` unless ``worktrees``
    says otherwise); every one is stopped after the test."""
    from modelserver_helpers import script_file
    from orchestrator.modelserver import ModelServer

    started: list = []

    def start(script, **kw):
        if isinstance(script, list):
            script = str(script_file(tmp_path, script, f"s{len(started)}.yaml"))
        srv = ModelServer(script, **{"worktrees": [tmp_path], **kw}).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
