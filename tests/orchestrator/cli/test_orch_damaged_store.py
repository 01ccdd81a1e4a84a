"""The read commands against real runs, one per backend: they work while the run goes and after
it, reading the store without changing a byte of it; a damaged store (empty, cut short, foreign, a
corrupt record) is one stderr line naming it and exit 1, never an empty run, and stays as it was.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from cliruns import SLOW_SCALE, cli, env, run_quietly, start_run  # noqa: F401 (env: a module fixture)
from damage_helpers import FILE_DAMAGE, SQLITE_DAMAGE, fingerprint, store_path

from coordstore import open_store
from orchestrator.rundir import RunPaths


def read_commands(run_dir: Path, url: str, results: Path, out: Path) -> dict[str, list]:
    """Every command that reads a run's store, as argv; none of them may write it."""
    return {
        "status": ["status", run_dir, "--json"],
        "history": ["history", run_dir, "--json"],
        "metrics": ["metrics", run_dir, "--json"],
        "watch": ["watch", run_dir, "--interval", "0.05"],
        "branches": ["branches", run_dir, "--json"],
        "clean": ["clean", run_dir, "--json"],  # a dry run: it reads the store to tell whether the run is over
        "export": ["export", "--store", url, "-o", out],
        "runs": ["runs", "--results", results, "--json"],
    }


COMMANDS = list(read_commands(Path(), "", Path(), Path()))


def _run_and_watch(backend: str, env: dict, tmp_path_factory) -> dict:
    """A real `orch run` on a ``backend`` store; `orch status` and `orch history` are run against
    it over and over while it goes (their outcomes are kept) until it ends."""
    results = tmp_path_factory.mktemp(f"results-{backend}")
    proc, run_dir = start_run(results, SLOW_SCALE, env, tmp_path_factory.mktemp("cwd"), "--store", backend)
    seen: list[tuple] = []
    try:
        while proc.poll() is None:
            status = run_quietly("status", run_dir, "--json")
            if seen or status[0] == 0:  # from the first answer on (before it, the run is still being set up)
                seen.append((status, run_quietly("history", run_dir, "--json")))
            time.sleep(0.05)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return {"run_dir": run_dir, "results": results, "url": RunPaths(run_dir).read_spec().store_url, "seen": seen}


@pytest.fixture(scope="module")
def sqlite_run(env, tmp_path_factory) -> dict:
    return _run_and_watch("sqlite", env, tmp_path_factory)


@pytest.fixture(scope="module")
def file_run(env, tmp_path_factory) -> dict:
    return _run_and_watch("file", env, tmp_path_factory)


def copy_run(run: dict, dest: Path) -> tuple[Path, str]:
    """The run's spec and a copy of its store under ``dest/<run id>``; (run dir, store URL)."""
    src_dir, src = run["run_dir"], store_path(run["url"])
    copy = dest / src_dir.name
    copy.mkdir(parents=True)
    for p in src.parent.glob(src.name + "*"):  # the store, and SQLite's -wal if one is left
        if p.is_dir():
            shutil.copytree(p, copy / p.name)
        elif not p.name.endswith("-shm"):
            shutil.copy(p, copy / p.name)
    url = f"{run['url'].partition('://')[0]}://{copy / src.name}"
    open_store(url).close()  # a writer, on the copy: SQLite checkpoints its WAL into the database file
    spec = json.loads((src_dir / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**spec, "store_url": url}, indent=2))
    return copy, url


# ---------------------------------------------------------------------------------- healthy
@pytest.mark.parametrize("backend", ["sqlite", "file"])
def test_read_commands_work_while_the_run_goes_and_after_it(request, capsys, tmp_path, backend):
    run = request.getfixturevalue(f"{backend}_run")
    assert run["seen"], "no `orch status` answered while the run went"
    for (code, out, err), (hcode, hout, herr) in run["seen"]:
        assert (code, hcode) == (0, 0), err + herr
        assert json.loads(hout)["transitions"], "a live run has history"
    assert any(json.loads(out)["status"] == "running" for (_, out, _), _ in run["seen"])
    before = fingerprint(run["url"])
    commands = read_commands(run["run_dir"], run["url"], run["results"], tmp_path / "export.json")
    for name, argv in commands.items():
        code, out, err = cli(capsys, *argv)
        assert code == 0, f"{name}: {err}"
    assert json.loads(cli(capsys, *commands["history"])[1])["transitions"][-1]["to"] == "finished"
    assert fingerprint(run["url"]) == before


# ---------------------------------------------------------------------------------- damaged
DAMAGES = [
    *(("sqlite", d) for d in ("empty", "cut inside a page", "cut at a page boundary", "not SQLite")),
    *(("file", d) for d in ("journal cut inside its last record", "journal with a middle record cut", "empty store.json")),
]


def damage_store(backend: str, damage: str, url: str) -> None:
    if backend == "sqlite":
        SQLITE_DAMAGE[damage](store_path(url))
    else:
        name, act = FILE_DAMAGE[damage]
        act(store_path(url) / name)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("backend,damage", DAMAGES)
def test_read_commands_report_a_damaged_store_and_leave_it_alone(request, capsys, tmp_path, backend, damage, command):
    run_dir, url = copy_run(request.getfixturevalue(f"{backend}_run"), tmp_path / "results")
    damage_store(backend, damage, url)
    before = fingerprint(url)
    out_file = tmp_path / "export.json"
    code, out, err = cli(capsys, *read_commands(run_dir, url, tmp_path / "results", out_file)[command])
    assert code == 1, out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(store_path(url)) in lines[0] and "damaged" in lines[0], err
    assert fingerprint(url) == before
    assert not out_file.exists()


@pytest.mark.parametrize("backend", ["sqlite", "file"])
def test_history_of_a_run_missing_from_its_store_is_an_error(request, capsys, tmp_path, backend):
    """A store replaced by an empty one (of the right kind) has no history of the run, not an empty one."""
    run_dir, url = copy_run(request.getfixturevalue(f"{backend}_run"), tmp_path / "results")
    path = store_path(url)
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    open_store(url).close()
    code, out, err = cli(capsys, "history", run_dir, "--json")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "no run" in err and run_dir.name in err
