"""`orch run` / `compare` / `report` / `metrics` through the real CLI, on the shipped experiments."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli.main import main
from orchestrator.runs.experiment import load_experiment
from orchestrator.runs.resources import experiment_files

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
    # the report holds the comparison, written beside it too
    assert "## Comparison: coordination" in (rep / "report.md").read_text()
    assert json.loads((rep / "comparison.json").read_text())["variants"]["pull-2"]["n"] == 2
    assert "95% CI" in (rep / "comparison.md").read_text() and (rep / "comparison.html").is_file()
    code, out, err = orch(capsys, "compare", str(results / "coordination"), str(results / "baseline"), "--json")
    assert code == 0, err
    speedup = json.loads(out)["speedup"]
    assert speedup["solo"] == "solo-1" and "pull-2" in speedup["variants"]


def test_plain_output_states_the_overhead_and_when_orchestrating_pays(tmp_path, capsys):
    code, out, err = orch(capsys, "run", "--variant", "pull-2", "--template", "tiny-feature", "--runs", "1",
                          "--time-scale", FAST, "--results", str(tmp_path / "results"), "--quiet")
    assert code == 0, err
    [line] = [ln for ln in out.splitlines() if ln.startswith("overhead: ")]
    assert re.fullmatch(r"overhead: setup \d+\.\ds, spawn \d+\.\ds, drain \d+\.\ds, merge \d+\.\ds "
                        r"\(\d+% of wall\+overhead\); speedup vs solo \d+\.\d\dx; "
                        r"(orchestrating pays off for tasks longer than \d+\.\ds|orchestrating this graph never pays off .*)", line), line


def test_several_runs_share_one_overhead_line_and_one_criteria_line(tmp_path, capsys):
    code, out, err = orch(capsys, "run", "--variant", "pull-2", "--template", "tiny-feature", "--runs", "2",
                          "--time-scale", FAST, "--results", str(tmp_path / "results"), "--quiet")
    assert code == 0, err
    lines = out.splitlines()
    assert not any(ln.startswith("overhead: ") for ln in lines)  # not once per run
    [mean] = [ln for ln in lines if ln.startswith("mean of 2 runs: overhead: setup ")]
    assert "speedup vs solo" in mean
    assert [ln for ln in lines if ln.startswith("success criteria")] == ["success criteria: 2/2 passed in every run"]
    assert sum(ln.startswith("results: ") for ln in lines) == 2  # every run's directory stays copyable


@pytest.mark.parametrize("args,needle,exit_code", [
    (["--variant", "no-such"], "no such variant", 2),  # a usage error: the name names nothing
    (["--variant", "pull-4", "--template", "missing.json"], "missing.json", 1),  # a missing file
    (["--variant", "pull-4", "--runs", "0"], "--runs 0", 2),
])
def test_bad_run_arguments_fail_cleanly(tmp_path, capsys, args, needle, exit_code):
    results = tmp_path / "results"
    code, out, err = orch(capsys, "run", *args, "--results", str(results))
    assert code == exit_code
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not results.exists()


def write_experiment(tmp_path, variant: str = "policy: pull, agents: 2", execution: str = "") -> Path:
    """A one-variant experiment (``v``) on tiny-feature; ``variant`` and ``execution`` are YAML flow items."""
    f = tmp_path / "exp.yaml"
    f.write_text(f"experiment: {{id: t}}\ntemplate: tiny-feature\nexecution: {{runs: 1, time_scale: {FAST}{execution}}}\n"
                 f"variants:\n  - {{name: v, {variant}}}\n")
    return f


@pytest.mark.parametrize("variant,execution,needle", [
    ("policy: pull", ", time_scale: .nan", "execution.time_scale (line 3): Input should be a finite number"),
    ("policy: pull", ", supervision: {stall_after_ms: .inf}", "execution.supervision.stall_after_ms (line 3)"),
    ("policy: pull, agents: [{count: 0}]", "", "variants.0.agents.0.count (line 5): Input should be greater than or equal to 1"),
    ("policy: pull, agents: 1000", "", "variants.0.agents (line 5): Input should be less than or equal to 256"),
    ("policy: pull, kind_options: {p_fail: .nan}", "", "sim option p_fail=nan"),
    ("policy: pull, kind_options: {retry_after_s: .inf}", "", "sim option retry_after_s=inf"),
    ("policy: push, policy_options: {dispatch_latency_ms: .inf}", "", "policy_options.dispatch_latency_ms=inf"),
    ("policy: pull, policy_options: {dispatch_latency_ms: 5}", "", "unknown policy_options.dispatch_latency_ms"),
])
def test_bad_values_in_the_experiment_leave_no_run_dir(tmp_path, capsys, variant, execution, needle):
    """Refused while planning, before any run directory exists (a NaN time scale used to run and
    leave a run.json no command could read; bad sim or policy options used to crash runners)."""
    exp = write_experiment(tmp_path, variant, execution)
    results = tmp_path / "results"
    code, out, err = orch(capsys, "run", "--variant", "v", "--experiment", str(exp), "--results", str(results))
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert not results.exists()


def test_results_below_a_file_and_a_binary_experiment_are_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, out, err = orch(capsys, "run", "--variant", "pull-2", "--results", str(afile / "sub"))
    assert code == 1 and err == f"orch: error: --results {afile / 'sub'}: {afile} is not a directory\n"
    binary = tmp_path / "exp.yaml"
    binary.write_bytes(bytes(range(128, 256)))
    code, out, err = orch(capsys, "run", "--variant", "v", "--experiment", str(binary), "--results", str(tmp_path / "r"))
    assert code == 1 and err == f"orch: error: {binary}: not a text file (not UTF-8 at byte 0)\n"
    assert not (tmp_path / "r").exists()


def test_failed_tasks_fail_the_run_unless_the_experiment_allows_them(tmp_path, capsys):
    """Every task fails or is cancelled: without success criteria the run used to say finished, exit 0."""
    strict = write_experiment(tmp_path, "policy: pull, agents: 2, kind_options: {p_fail: 1.0}")
    code, out, err = orch(capsys, "run", "--variant", "v", "--experiment", str(strict), "--results", str(tmp_path / "a"), "--json")
    assert code == 1, err
    [run] = json.loads(out)["runs"]
    m = run["metrics"]
    assert run["status"] == "failed" and m["tasks_failed"] >= 1 and m["tasks_failed"] + m["tasks_cancelled"] == m["tasks_total"] == 5
    summary = (Path(run["run_dir"]) / "summary.md").read_text()
    assert f"| status | failed ({m['tasks_failed']} failed, {m['tasks_cancelled']} cancelled of 5 tasks) |" in summary
    assert f"| tasks failed / cancelled | {m['tasks_failed']} / {m['tasks_cancelled']} |" in summary
    full = json.loads((Path(run["run_dir"]) / "metrics.json").read_text())
    assert f"| tokens / cost | {full['tokens']['total']} total, {full['billable_tokens']} billable, " \
           f"{full['cache_hit_rate']:.1%} cache hits / ${full['cost_usd']:.4f} |" in summary and full["billable_tokens"] > 0
    # why each task did not complete, on one line each: the reason a reader of the summary needs
    listed = summary.split("Tasks that did not complete:\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(listed) == 5 and any(" failed: " in line and "injected failure" in line for line in listed), listed
    code, out, _ = orch(capsys, "runs", "--results", str(tmp_path / "a"), "--json")
    assert [r["status"] for r in json.loads(out)["runs"]] == ["failed"]
    code, out, _ = orch(capsys, "watch", run["run_dir"], "--exit-status")
    assert code == 1

    allowed = write_experiment(tmp_path, "policy: pull, agents: 2, kind_options: {p_fail: 1.0}", ", allow_failures: true")
    code, out, err = orch(capsys, "run", "--variant", "v", "--experiment", str(allowed), "--results", str(tmp_path / "b"))
    assert code == 0, err
    assert "│ finished │" in out and "; the experiment allows failures" in out
    shown = [line for line in out.splitlines() if line.startswith("  failed ") or line.startswith("  cancelled ")]
    assert len(shown) == 5 and any("injected failure" in line for line in shown), out
    [summary] = (tmp_path / "b").rglob("summary.md")
    assert "| status | finished (" in summary.read_text() and "cancelled of 5 tasks (allow_failures)) |" in summary.read_text()


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
    assert code == 2 and "ambiguous" in err and "a/twin" in err and "b/twin" in err  # a usage error
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
    from gitwork.demo import build_demo_repo

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
    """Every shipped variant; those whose agents are real CLIs carry the real_cli mark."""
    out = []
    for f in experiment_files():
        exp = load_experiment(f)
        for v in exp.variants:
            real = v.kind not in ("sim", "script", "replay")
            lossy = v.execution.get("allow_failures", exp.execution.allow_failures)  # loses tasks by design
            out.append(pytest.param(f.name, v.name, lossy, marks=[pytest.mark.real_cli] if real else []))
    return out


@pytest.mark.parametrize("exp_file,variant,lossy", _variants())
def test_every_shipped_variant_runs_end_to_end(tmp_path, exp_file, variant, lossy):
    """Each shipped variant on its own template, through the installed console entry point."""
    r = subprocess.run([sys.executable, "-m", "orchestrator", "run", "--variant", variant, "--runs", "1",
                        "--time-scale", FAST, "--results", str(tmp_path), "--json"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    [run] = json.loads(r.stdout)["runs"]
    assert run["status"] == "finished"
    m = run["metrics"]
    if lossy:  # every task ended one way or the other, and most of the work got done
        assert m["tasks_completed"] + m["tasks_failed"] + m["tasks_cancelled"] == m["tasks_total"]
        assert m["tasks_completed"] * 2 >= m["tasks_total"], m
    else:
        assert m["tasks_completed"] == m["tasks_total"]
