"""`orch run` / `compare` / `report` / `metrics` through the real CLI, on the shipped experiments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.experiment import load_experiment
from orchestrator.resources import experiment_files

pytestmark = pytest.mark.usefixtures("no_git_identity")
FAST = "0.00005"  # an estimated minute runs in 3 ms


def orch(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_pull4_two_runs_exports_compare_and_same_seed(tmp_path, capsys):
    results = tmp_path / "results"
    code, out, err = orch(capsys, "run", "--variant", "pull-4", "--template", "tiny-feature", "--runs", "2",
                          "--time-scale", FAST, "--results", str(results), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["variant"] == "pull-4" and len(doc["runs"]) == 2
    for r in doc["runs"]:
        d = Path(r["run_dir"])
        for name in ("snapshot.json.gz", "transitions.jsonl", "metrics.json", "summary.md", "experiment.yaml", "run.json"):
            assert (d / name).is_file(), name
        assert r["metrics"]["tasks_completed"] == r["metrics"]["tasks_total"] == 5
    code, out, err = orch(capsys, "compare", str(results / "coordination" / "pull-4"), "--json", "--html", str(tmp_path / "c.html"))
    assert code == 0, err
    cmp_ = json.loads(out)
    assert cmp_["variants"]["pull-4"]["metrics"]["wall_clock_ms"]["n"] == 2
    assert (tmp_path / "c.html").read_text().startswith("<!doctype html>")
    code, out, err = orch(capsys, "metrics", doc["runs"][0]["run_dir"], "--json")
    assert code == 0 and json.loads(out)["tasks_completed"] == 5

    # the same seed again: the same per-task planned durations and outcomes
    def plan(run_dir):
        rows = [json.loads(x) for x in (Path(run_dir) / "transitions.jsonl").read_text().splitlines()]
        return {r["entity_id"]: (r["to_state"], (r["data"] or {}).get("sim", {}).get("duration_ms"))
                for r in rows if r["entity"] == "task" and r["to_state"] in ("completed", "failed")}

    code, out, err = orch(capsys, "run", "--variant", "pull-4", "--template", "tiny-feature", "--runs", "1",
                          "--time-scale", FAST, "--results", str(tmp_path / "again"), "--json")
    assert code == 0, err
    first, again = plan(doc["runs"][0]["run_dir"]), plan(json.loads(out)["runs"][0]["run_dir"])
    assert first == again and all(d is not None for _, d in first.values())
    assert plan(doc["runs"][1]["run_dir"]) != first  # replication 2 has its own seed


def test_report_writes_markdown_html_and_charts(tmp_path, capsys):
    results = tmp_path / "results"
    for variant in ("pull-2", "solo-1"):
        code, _, err = orch(capsys, "run", "--variant", variant, "--template", "tiny-feature", "--runs", "2",
                            "--time-scale", FAST, "--results", str(results), "--json")
        assert code == 0, err
    # one experiment directory per experiment: report the coordination one, compare across both
    code, out, err = orch(capsys, "report", str(results / "coordination"))
    assert code == 0, err
    rep = results / "coordination"
    assert (rep / "report.md").is_file() and (rep / "report.html").is_file()
    pngs = sorted(p.name for p in (rep / "charts").glob("*.png"))
    assert "completion.png" in pngs and sum(p.startswith("gantt-") for p in pngs) == 2
    assert "PASS" in (rep / "report.md").read_text()  # success criteria evaluated
    code, out, err = orch(capsys, "compare", str(results / "coordination"), str(results / "baseline"), "--json")
    assert code == 0, err
    assert json.loads(out)["baseline"] == "solo-1" and "pull-2" in json.loads(out)["speedup"]


@pytest.mark.parametrize("args,needle", [
    (["--variant", "no-such"], "no such variant"),
    (["--variant", "pull-4", "--template", "missing.json"], "missing.json"),
    (["--variant", "pull-4", "--runs", "0"], "--runs 0"),
])
def test_bad_run_arguments_fail_cleanly(tmp_path, capsys, args, needle):
    results = tmp_path / "results"
    code, out, err = orch(capsys, "run", *args, "--results", str(results))
    assert code == 1
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not results.exists()


def test_yaml_error_names_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: {id: x}\ntemplate: tiny-feature\nvariants:\n  - {name: a, policy: pull\n")
    code, _, err = orch(capsys, "run", "--variant", "a", "--experiment", str(bad), "--results", str(tmp_path / "r"))
    assert code == 1 and "bad.yaml" in err and "line" in err
    assert not (tmp_path / "r").exists()


def test_ambiguous_variant_fails_cleanly(tmp_path, capsys, monkeypatch):
    (tmp_path / "experiments").mkdir()
    for n in ("a", "b"):
        (tmp_path / "experiments" / f"{n}.yaml").write_text(
            f"experiment: {{id: {n}}}\ntemplate: tiny-feature\nvariants:\n  - {{name: twin, policy: pull, agents: 1}}\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = orch(capsys, "run", "--variant", "twin", "--results", str(tmp_path / "r"))
    assert code == 1 and "ambiguous" in err and "a/twin" in err and "b/twin" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("entry", ["{canary}", "../../../../../outside/canary.txt", ".git/config", "src/.GIT/x"],
                         ids=["absolute", "dotdot", "git-config", "git-any-case"])
def test_file_scope_outside_the_repository_is_refused_at_plan_time(tmp_path, capsys, entry):
    """The demo repository is built from the file scopes: an entry leading out of it (or into its
    .git) would be written there. Refused before anything exists; the file outside is untouched."""
    canary = tmp_path / "outside" / "canary.txt"
    canary.parent.mkdir()
    canary.write_text("KEEP\n")
    entry = entry.format(canary=canary)
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"tasks": [{"id": "a", "file_scope": [entry]}]}))
    results = tmp_path / "results"
    code, out, err = orch(capsys, "run", "--variant", "solo-1", "--template", str(template), "--runs", "1",
                          "--time-scale", FAST, "--results", str(results))
    assert code == 1, out
    assert err.startswith(f"orch: error: {template}: task 'a': file_scope entry {entry!r} ") and err.count("\n") == 1, err
    assert canary.read_text() == "KEEP\n"
    assert not results.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "t.json"]
    code, out, _ = orch(capsys, "template", "lint", str(template))
    assert code == 1 and "error: unsafe-path: task 'a': file_scope entry" in out


def test_demo_builder_confines_its_writes_itself(tmp_path):
    """Even a graph that skipped validation cannot make the demo builder write outside its directory."""
    from coordstore.errors import InputError
    from coordstore.models import Task, TaskGraph
    from orchestrator.demo import build_demo_repo

    canary = tmp_path / "canary.txt"
    canary.write_text("KEEP\n")
    for entry in (str(canary), "../canary.txt", ".git/config"):
        dest = tmp_path / "repo"
        with pytest.raises(InputError, match=f"task 'a': file_scope entry {entry!r}"):
            build_demo_repo(dest, TaskGraph(tasks=[Task(id="a", file_scope=["ok.py", entry])]), "t")
        assert canary.read_text() == "KEEP\n"
        assert not dest.exists()


@pytest.mark.parametrize("key,head,variant", [
    ("variants.0.name", "x", "../../escaped"),
    ("experiment.id", "../../escaped", "v"),
])
def test_experiment_names_that_would_leave_the_results_directory_are_refused(tmp_path, capsys, key, head, variant):
    exp = tmp_path / "exp.yaml"
    exp.write_text(f'experiment: {{id: "{head}"}}\ntemplate: tiny-feature\nvariants:\n'
                   f'  - {{name: "{variant}", policy: solo, agents: 1}}\n')
    results = tmp_path / "deep" / "results"
    code, out, err = orch(capsys, "run", "--variant", variant, "--experiment", str(exp), "--runs", "1",
                          "--time-scale", FAST, "--results", str(results))
    assert code == 1, out
    assert err.startswith(f"orch: error: {exp}: {key} (line ") and "a single path component" in err, err
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


def _variants():
    return [(f.name, v.name) for f in experiment_files() for v in load_experiment(f).variants]


@pytest.mark.parametrize("exp_file,variant", _variants())
def test_every_shipped_variant_runs_end_to_end(tmp_path, exp_file, variant):
    """Each shipped variant on its own template, through the installed console entry point."""
    r = subprocess.run([sys.executable, "-m", "orchestrator", "run", "--variant", variant, "--runs", "1",
                        "--time-scale", FAST, "--results", str(tmp_path), "--json"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    [run] = json.loads(r.stdout)["runs"]
    assert run["status"] == "finished"
    assert run["metrics"]["tasks_completed"] == run["metrics"]["tasks_total"]
