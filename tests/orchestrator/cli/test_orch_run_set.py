"""`orch run --set KEY=VALUE` and `orch run --repo PATH --history A..B`: runs configured from the
command line alone, on the shipped experiments and a repository holding every kind of file."""

from __future__ import annotations

import json

import pytest

from cliruns import cli as orch
from orchestrator.runs.launch import RunRequest, plan_runs

from filekinds import every_kind_repo, fgit

pytestmark = pytest.mark.usefixtures("no_git_identity")
FAST = "0.00005"


def plan(tmp_path, *sets: str, variant: str = "pull-4", **kw):
    return plan_runs(RunRequest(variant=variant, results=tmp_path / "results", sets=list(sets), **kw))


def test_set_reaches_variant_execution_and_kind_options(tmp_path):
    [spec, *_], *more = plan(tmp_path, "kind=replay", "agents=8", "policy_options.order=fifo", "seed=7", "runs=2",
                             "supervision.stall_after_ms=9000", "replay.pace=false", "experiment.id=cli")
    assert len(more) == 1  # runs=2
    assert [(a.id, a.kind, a.role) for a in spec.agents] == [(f"w{i}", "replay", "worker") for i in range(1, 9)]
    assert spec.policy_options == {"order": "fifo"} and spec.kind_options == {"pace": False}
    assert spec.seed == 7 and spec.supervision["stall_after_ms"] == 9000 and spec.experiment_id == "cli"
    # a list of agents, one of them changed by index; `<kind>.X` is the variant's own kind's option
    [[spec, *_]] = plan(tmp_path, "agents=[{count: 2}, {count: 1, tags: [ui]}]", "agents.1.kind=replay", "sim.p_fail=0.1",
                        "execution.runs=1")
    assert [(a.kind, a.tags) for a in spec.agents] == [("sim", None), ("sim", None), ("replay", ["ui"])]
    assert spec.kind_options == {"p_fail": 0.1}
    # push adds its coordinator to the N workers, as `agents: N` in a file does
    [[spec, *_]] = plan(tmp_path, "agents=3", "runs=1", variant="push-4")
    assert [a.role for a in spec.agents] == ["coordinator", "worker", "worker", "worker"]


@pytest.mark.parametrize("sets,line,exit_code", [
    (["agents.x=1"], "--set agents.x: agents is 4 here, not a mapping or list to set x in", 2),
    (["agents=x"], "--set agents: Input should be a valid integer, unable to parse string as an integer", 2),
    (["agents=0"], "--set agents: Input should be greater than or equal to 1", 2),
    (["agents=[{count: 2}]", "agents.0.bogus=1"], "--set agents.0.bogus: Extra inputs are not permitted", 2),
    (["agents=[{count: 2}]", "agents.3.kind=sim"], "--set agents.3.kind: agents is a list of 1; give an index below 1", 2),
    (["runs=0"], "--set runs: Input should be greater than or equal to 1", 2),
    (["execution.time_scale=.nan"], "--set execution.time_scale: Input should be a finite number", 2),
    (["supervision.stall_after_ms=-1"], "--set supervision.stall_after_ms: Input should be greater than 0", 2),
    (["policy=swarm"], "--set policy: Input should be 'pull', 'push', 'hybrid', 'solo', 'relay' or 'best_of'", 2),
    (["agents=[1"], "--set agents=[1: the value is not YAML: expected ',' or ']', but got '<stream end>'", 2),
    (["noequals"], "--set noequals: expected KEY=VALUE with a dotted KEY, e.g. --set policy_options.order=fifo", 2),
    (["bogus.key=1"], "--set bogus.key: no such key; variant keys: policy,", 2),
    (["policy_options.order=nope"], "policy_options.order='nope' is not one of", 1),
    (["kind=replay", "replay.pace=maybe"], "kind replay: option pace 'maybe' must be true or false", 1),
    (["sim.p_fail=2"], "sim option p_fail=2: must be a number in [0, 1]", 1),
])
def test_bad_sets_are_one_line_naming_the_key_and_write_nothing(tmp_path, capsys, sets, line, exit_code):
    results = tmp_path / "results"
    args = [a for s in sets for a in ("--set", s)]
    code, out, err = orch(capsys, "run", "--variant", "pull-4", *args, "--results", str(results))
    assert code == exit_code and out == "" and len(err.strip().splitlines()) == 1, err
    assert line in err
    assert not results.exists()


@pytest.fixture(scope="module")
def ek(tmp_path_factory):
    return every_kind_repo(tmp_path_factory.mktemp("kinds"))


def test_history_replay_from_the_command_line_reproduces_b(ek, tmp_path, capsys):
    """No file written by hand: the shipped pull-4, the history, and the replay kind set here."""
    code, out, err = orch(capsys, "run", "--variant", "pull-4", "--repo", str(ek.repo), "--history", "A..B",
                          "--set", "kind=replay", "--runs", "1", "--time-scale", FAST,
                          "--results", str(tmp_path / "results"), "--json")
    assert code == 0, err
    [run] = json.loads(out)["runs"]
    assert run["status"] == "finished" and run["metrics"]["tasks_completed"] == run["metrics"]["tasks_total"] == 14
    assert fgit(ek.repo, "rev-parse", f"{run['merged_branch']}^{{tree}}") == ek.tree("B")
    spec = json.loads((tmp_path / "results" / "coordination" / "pull-4" / run["run_id"] / "run.json").read_text())
    assert spec["base"] == ek.A and spec["template"] == f"A..B of {ek.repo} (deps files)"


@pytest.mark.parametrize("args,line", [
    (["--history", "A..B"], "--history A..B: give the repository whose history it is with --repo PATH"),
    (["--history", "A..B", "--repo", "{repo}", "--base", "A"], "--base A: --history A..B runs on the range's start; give one of them"),
    (["--history", "A..B", "--repo", "{repo}", "--template", "tiny-feature"], "give --template or --history, not both"),
    (["--history", "A..B", "--repo", "{repo}", "--history-deps", "some"], "--history-deps some: one of none, files, linear"),
    (["--history", "A", "--repo", "{repo}"], "range 'A': expected A..B"),
    (["--history", "B..A", "--repo", "{repo}"], "holds no commits; nothing to replay"),
    (["--history", "nope..B", "--repo", "{repo}"], "unknown git ref 'nope'"),
])
def test_bad_history_arguments_are_one_line(ek, tmp_path, capsys, args, line):
    results = tmp_path / "results"
    args = [a.format(repo=ek.repo) for a in args]
    code, out, err = orch(capsys, "run", "--variant", "pull-4", *args, "--set", "kind=replay", "--results", str(results))
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1, err
    assert line in err
    assert not results.exists()


def test_with_all_every_variant_takes_the_sets(tmp_path):
    from orchestrator.runs.resources import experiment_files
    from orchestrator.runs.schedule import plan_experiment

    [exp] = [f for f in experiment_files() if f.name == "coordination.yaml"]
    req = RunRequest(variant="", experiment=exp, results=tmp_path / "results", sets=["runs=1", "agents=2", "kind=replay"])
    planned = plan_experiment(req, plan_runs)
    assert len(planned) == len({s.spec.variant for s in planned}) > 2  # one run each
    for s in planned:
        workers = [a for a in s.spec.agents if a.works]
        assert (len(workers), {a.kind for a in workers}) == (1 if s.spec.policy == "solo" else 2, {"replay"}), s.spec.variant
