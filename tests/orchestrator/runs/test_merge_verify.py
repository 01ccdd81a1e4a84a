"""The merged branch verified: a variant's ``verify:`` command run on the merged tree at the end
of a run (and after each merge, if asked) in a scratch worktree, its result a metric
(``merged_verified``) in metrics.json, the summary, `orch run`'s output and the report. Real git
repositories, real runners of the script kind, real pytest runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from coordstore.errors import InputError
from gitfixtures import git, make_repo
from orchestrator.cli.main import main
from orchestrator.rundir import RunPaths, RunSpec
from orchestrator.runs.experiment import load_experiment
from orchestrator.runs.launch import RunRequest, plan_runs, run_one
from orchestrator.runs.mergeverify import VerifySpec, verify_commit

pytestmark = pytest.mark.usefixtures("no_git_identity")

PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
PASSING = {"README": "demo\n", "calc.py": "def add(a, b):\n    return a + b\n",
           "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"}
BREAKING = "def add(a, b):\n    return a - b\n"  # a task's edit that makes test_calc fail


def script_task(tid: str, *commands: str) -> dict:
    return {"id": tid, "title": f"do {tid}", "time_estimate_ms": 1000, "meta": {"shell": True, "commands": list(commands)}}


def write_file(path: str, text: str) -> str:
    """A shell command writing ``text`` to ``path`` (one line per element, printf-safe)."""
    return "printf '%s\\n' " + " ".join(json.dumps(line) for line in text.rstrip("\n").split("\n")) + f" > {path}"


VERIFIED = [{"metric": "merged_verified", "op": "==", "value": 1}]  # a yes/no metric judged as 1 or 0


def experiment(tmp_path: Path, tasks: list[dict], deps=(), agents: int = 2, criteria=(), **variant) -> Path:
    tpl = tmp_path / "graph.json"
    tpl.write_text(json.dumps({"format": "orch-graph", "version": 1, "tasks": tasks,
                               "dependencies": [{"from_id": a, "to_id": b, "type": "blocks"} for a, b in deps]}))
    exp = {"experiment": {"id": "verify"}, "template": str(tpl),
           "execution": {"runs": 1, "seed": 1, "time_scale": 0.01, "timeout_s": 120},
           "variants": [{"name": "v", "policy": "pull", "agents": agents, "kind": "script", **variant}],
           "success_criteria": list(criteria)}
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(exp))
    return f


def run(tmp_path: Path, exp: Path):
    repo = make_repo(tmp_path / "repo", PASSING)
    [plan] = plan_runs(RunRequest(variant="v", experiment=exp, repo=repo, results=tmp_path / "results"))
    return run_one(*plan), repo


def verify_notes(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "transitions.jsonl").read_text().splitlines()]
    return [{**r["data"], "reason": r["reason"]} for r in rows if r["entity"] == "run" and r["data"].get("action") == "verify"]


def untouched(repo: Path, run_dir: Path) -> None:
    """The user's checkout is as it was, and no scratch worktree is left, registered or on disk."""
    assert git(repo, "status", "--porcelain") == "" and git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    scratch = run_dir / "verify"
    assert all(not line.startswith(f"worktree {scratch}") for line in git(repo, "worktree", "list", "--porcelain").splitlines())
    assert not scratch.exists() or not list(scratch.iterdir())


def test_a_merged_tree_whose_tests_pass_is_verified(tmp_path):
    tasks = [script_task("notes", "echo hi > notes.txt"), script_task("more", "echo more > more.txt")]
    out, repo = run(tmp_path, experiment(tmp_path, tasks, criteria=VERIFIED, verify=PYTEST))
    assert out.status == "finished"
    m = out.metrics
    tip = git(repo, "rev-parse", out.spec.merged_branch)
    assert m["merged_verified"] is True and m["merged_verify_exit"] == 0 and m["merged_verify_sha"] == tip
    assert m["merged_verify_ms"] > 0 and m["merges_verified"] is None  # not asked after each merge
    assert [c["passed"] for c in out.criteria] == [True]
    [note] = verify_notes(out.run_dir)
    assert note["scope"] == "final" and note["ok"] and "1 passed" in note["output"] and note["reason"] is None
    assert "| merged_verified | true (passed, at " in (out.run_dir / "summary.md").read_text()
    assert json.loads((out.run_dir / "metrics.json").read_text())["merged_verified"] is True
    untouched(repo, out.run_dir)


def test_a_scratch_checkout_left_by_a_killed_orchestrator_is_cleared(tmp_path):
    """What a verification cut short by SIGKILL leaves (a registered detached worktree with the
    command's files in it) goes at the next start or resume, and with `orch clean`."""
    exp = experiment(tmp_path, [script_task("notes", "echo hi > notes.txt")], agents=1, verify=PYTEST)
    repo = make_repo(tmp_path / "repo", PASSING)
    p = subprocess.run([sys.executable, "-m", "orchestrator", "run", "--experiment", str(exp), "--variant", "v", "--repo", str(repo),
                        "--results", str(tmp_path / "results"), "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr  # in another process: this one must not be the run's (live) orchestrator
    [r] = json.loads(p.stdout)["runs"]
    assert r["metrics"]["merged_verified"] is True
    run_dir = Path(r["run_dir"])
    left = run_dir / "verify" / "0123abcd-x"
    git(repo, "worktree", "add", "--detach", str(left), r["merged_branch"])
    (left / "junk.pyc").write_text("build output")
    def clean(*args: str) -> str:
        p = subprocess.run([sys.executable, "-m", "orchestrator", "clean", str(run_dir), *args], capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        return p.stdout

    dry = json.loads(clean("--json"))  # no --yes, no terminal: a dry run
    assert str(left) in {i["name"] for i in dry["removed"]} and left.is_dir()
    assert "scratch checkout of a verification cut short" in clean("--yes")
    untouched(repo, run_dir)
    assert not left.exists()


def test_without_verify_merged_verified_is_null_not_false(tmp_path):
    out, _ = run(tmp_path, experiment(tmp_path, [script_task("notes", "echo hi > notes.txt")], agents=1))
    m = json.loads((out.run_dir / "metrics.json").read_text())
    assert "merged_verified" in m and m["merged_verified"] is None and m["merges_verified"] is None
    assert verify_notes(out.run_dir) == [] and "merged_verified" not in (out.run_dir / "summary.md").read_text()


def test_a_task_that_breaks_a_test_shows_false_in_metrics_summary_run_output_and_report(tmp_path, capsys):
    tasks = [script_task("notes", "echo hi > notes.txt"), script_task("break", write_file("calc.py", BREAKING))]
    exp = experiment(tmp_path, tasks, criteria=VERIFIED, verify=" ".join(PYTEST))  # the shell-string form
    repo = make_repo(tmp_path / "repo", PASSING)
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as e:
        main(["run", "--experiment", str(exp), "--variant", "v", "--repo", str(repo), "--results", str(results), "-q"])
    stdout, err = capsys.readouterr()
    assert e.value.code == 0, err  # a measurement: the run itself finished
    assert "merged_verified: false (exited 1: " in stdout and "1 failed" in stdout
    assert "FAIL merged_verified == 1 (got False)" in stdout
    [run_dir] = [p.parent for p in results.rglob("metrics.json")]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["merged_verified"] is False and m["merged_verify_exit"] == 1
    assert m["merged_verify_sha"] == git(repo, "rev-parse", f"orch/{run_dir.name}/merged")
    assert "| merged_verified | false (exited 1: " in (run_dir / "summary.md").read_text()
    [note] = verify_notes(run_dir)
    assert "assert -1 == 5" in note["output"] and note["reason"].startswith("exited 1: ")
    untouched(repo, run_dir)
    with pytest.raises(SystemExit) as e:
        main(["report", str(results / "verify")])
    _, err = capsys.readouterr()
    assert e.value.code == 0, err
    report = (results / "verify" / "report.md").read_text()
    assert "## Merged tree verified" in report and "v: 0/1 runs' merged trees verified" in report
    assert f"v {run_dir.name}: merged_verified: false (exited 1: " in report
    assert "merged_verified: false" in (results / "verify" / "report.html").read_text()


def test_after_each_merge_every_merged_tip_is_verified_and_the_breaking_merge_counted(tmp_path):
    """A chain: a harmless task, one that breaks the test, one that repairs it. Base and each of
    the three merges are verified, in order; one merge broke the tree; the final tree passes."""
    tasks = [script_task("notes", "echo hi > notes.txt"), script_task("break", write_file("calc.py", BREAKING)),
             script_task("fix", write_file("calc.py", PASSING["calc.py"]))]
    exp = experiment(tmp_path, tasks, deps=[("notes", "break"), ("break", "fix")], agents=1,
                     verify={"command": PYTEST, "after_each_merge": True, "timeout_s": 120})
    out, repo = run(tmp_path, exp)
    assert out.status == "finished"
    line = git(repo, "rev-list", "--first-parent", "--reverse", out.spec.merged_branch).split()[-4:]  # base + 3 merges
    merges = [n for n in verify_notes(out.run_dir) if n["scope"] == "merge"]
    assert [n["sha"] for n in merges] == line
    assert [n["ok"] for n in merges] == [True, True, False, True]
    m = out.metrics
    assert (m["merges_verified"], m["merges_failing_verify"], m["merges_broke_verify"]) == (4, 1, 1)
    assert m["merged_verified"] is True and m["merged_verify_sha"] == line[-1]
    assert "after each merge: 4 verified, 1 failing, 1 broke it" in (out.run_dir / "summary.md").read_text()
    untouched(repo, out.run_dir)


def spec_for(repo: Path, tmp_path: Path) -> tuple[RunSpec, RunPaths]:
    base = git(repo, "rev-parse", "HEAD")
    spec = RunSpec(run_id="r1", experiment_id="e", variant="v", policy="pull", agents=[], template="t", repo=str(repo),
                   base=base, store_url="sqlite:///unused", seed=1, time_scale=1.0, timeout_s=10)
    return spec, RunPaths(tmp_path / "run")


def test_a_verify_that_cannot_start_is_a_false_result_with_its_reason(tmp_path):
    repo = make_repo(tmp_path / "repo", PASSING)
    spec, paths = spec_for(repo, tmp_path)
    for command in (["no-such-verify-program-3f9"], "no-such-verify-program-3f9 --all"):
        res = verify_commit(spec, paths, VerifySpec.model_validate(command), spec.base)
        assert res["ok"] is False and res["exit"] == 127
        assert res["reason"].startswith("cannot start ") and "no-such-verify-program-3f9" in res["reason"]
    untouched(repo, paths.root)


def test_a_timeout_kills_the_verify_commands_whole_process_group(tmp_path):
    repo = make_repo(tmp_path / "repo", PASSING)
    spec, paths = spec_for(repo, tmp_path)
    pid_file = tmp_path / "child.pid"
    # the shell's child outlives a kill of the shell alone
    verify = VerifySpec(command=f"sleep 300 & echo $! > {pid_file}; wait", timeout_s=1)
    t0 = time.monotonic()
    res = verify_commit(spec, paths, verify, spec.base)
    assert time.monotonic() - t0 < 60  # the timeout, not the sleep, ended it
    assert res["ok"] is False and res["exit"] == 124 and res["reason"] == "timed out after 1s"
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    untouched(repo, paths.root)


@pytest.mark.parametrize("verify, key", [
    ("", "variants.0.verify"),
    ([], "variants.0.verify"),
    ({"command": "pytest", "timeout_s": 0}, "variants.0.verify.timeout_s"),
    ({"command": "pytest", "after_each_merge": "often"}, "variants.0.verify.after_each_merge"),
    ({"command": "pytest", "pass_env": ["NOT A NAME"]}, "variants.0.verify.pass_env"),
    ({"command": "pytest", "every": 2}, "variants.0.verify.every"),
])
def test_a_bad_verify_names_its_key_and_line(tmp_path, verify, key):
    exp = experiment(tmp_path, [script_task("a", "true")], verify=verify)
    with pytest.raises(InputError) as e:
        load_experiment(exp)
    assert f"{exp}: {key} (line " in str(e.value)


def test_verify_forms_and_the_experiments_default(tmp_path):
    exp = experiment(tmp_path, [script_task("a", "true")])
    doc = yaml.safe_load(exp.read_text())
    doc["verify"] = "make test"
    doc["variants"].append({**doc["variants"][0], "name": "own", "verify": {"command": ["tox", "-q"], "after_each_merge": True}})
    exp.write_text(yaml.safe_dump(doc))
    loaded = load_experiment(exp)
    assert loaded.variant("v").verify is None and loaded.verify.command == "make test"
    assert loaded.variant("own").verify.command == ["tox", "-q"] and loaded.variant("own").verify.after_each_merge
    plans = {v: plan_runs(RunRequest(variant=v, experiment=exp, results=tmp_path / "results"))[0][0].verify for v in ("v", "own")}
    assert plans["v"] == {"command": "make test", "after_each_merge": False, "timeout_s": 600.0, "pass_env": []}
    assert plans["own"]["command"] == ["tox", "-q"] and plans["own"]["after_each_merge"] is True


def test_a_resumed_run_verifies_each_merge_once_and_its_final_tree(tmp_path):
    """The orchestrator SIGKILLed mid-run (a verification may be under way), then `orch resume`:
    every commit of the merged branch's first-parent line is verified exactly once across both
    orchestrators, and the final tree once."""
    from coordstore import open_store
    from runfixtures import task, write_experiment

    repo = make_repo(tmp_path / "repo", PASSING)
    tasks = [task(f"t{i}", [f"f{i}.txt"], est_ms=4000) for i in range(6)]
    check = [sys.executable, "-c", "import calc; assert calc.add(2, 3) == 5"]  # quicker than pytest, 7 times over
    exp = write_experiment(tmp_path, tasks, [], {"policy": "pull", "agents": 2, "kind": "sim",
                                                  "verify": {"command": check, "after_each_merge": True}}, time_scale=0.1)
    results = tmp_path / "results"
    orch = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "--variant", "v", "--experiment", str(exp),
                             "--repo", str(repo), "--results", str(results), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline, run_dir, spec = time.time() + 60, None, None
    while time.time() < deadline:
        found = list(results.glob("t/v/*/run.json"))
        if found:
            run_dir, spec = found[0].parent, json.loads(found[0].read_text())
            try:
                with open_store(spec["store_url"], readonly=True) as s:
                    if sum(r.data.get("action") == "verify" for r in s.history(spec["run_id"], entity="run")) >= 2:
                        break
            except Exception:
                pass
        time.sleep(0.1)
    assert run_dir is not None, orch.stderr.read() if orch.poll() is not None else "no run dir"
    os.kill(orch.pid, signal.SIGKILL)
    orch.wait()
    r = subprocess.run([sys.executable, "-m", "orchestrator", "resume", str(run_dir)], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "merged_verified: true (passed, at " in r.stdout and "after each merge: 7 verified, 0 failing" in r.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    line = git(repo, "rev-list", "--first-parent", "--reverse", f"main..orch/{spec['run_id']}/merged").split()
    notes = verify_notes(run_dir)
    merges = [n["sha"] for n in notes if n["scope"] == "merge"]
    assert merges == [git(repo, "rev-parse", "main")] + line and all(n["ok"] for n in notes)
    assert [n["sha"] for n in notes if n["scope"] == "final"] == [line[-1]]
    assert metrics["merges_verified"] == len(tasks) + 1 and metrics["merged_verified"] is True
    untouched(repo, run_dir)
