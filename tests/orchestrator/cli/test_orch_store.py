"""`orch import` / `orch export` against every real store backend (``store_url`` from conftest)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_store_url
from fixtures_path import tgmcp_fixture

from coordstore import open_store
from coordstore.models import Agent, Event, Transition
from orchestrator.cli.main import main


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def runs_in(url) -> list[str]:
    with open_store(url) as s:
        return [r.id for r in s.list_runs()]


def assert_one_line_error(code, out, err, *needles, exit_code=1):
    assert code == exit_code and out == ""
    assert err.startswith("orch: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err


def test_import_fixture_json_summary_and_store_content(store_url, capsys):
    code, out, err = run_cli(capsys, "import", tgmcp_fixture("browser-project.json"), "--store", store_url, "--json")
    assert code == 0 and err == ""
    result = json.loads(out)
    assert result["run"].startswith("browser-project-") and len(result["run"]) == len("browser-project-") + 6
    assert (result["tasks"], result["dependencies"]) == (31, 54)
    assert result["by_type"] == {"blocks": 0, "follows": 24, "contains": 30}
    with open_store(store_url) as s:
        tasks = s.list_tasks(result["run"])
        assert [t.id for t in tasks][:3] == ["browser-root", "browser-html-parser", "browser-html-tokenizer"]
        tok = s.get_task(result["run"], "browser-html-tokenizer")
        assert tok.needed_tags == ["html"] and tok.time_estimate_ms == 1_500_000
        assert len(s.dependencies(result["run"])) == 54
        # follows read as the templates mean it: the tokenizer is ready, the tree builder waits for it
        ready = {t.id for t in s.ready_tasks(result["run"], agent_tags=["html", "css", "javascript", "dom"])}
        assert ready == {"browser-html-tokenizer", "browser-css-parser", "browser-js-lexer", "browser-dom-tree"}


def test_import_human_output_and_explicit_run(store_url, capsys):
    code, out, err = run_cli(capsys, "import", tgmcp_fixture("browser-flat.json"), "--store", store_url, "--run", "flat1")
    assert code == 0 and err == ""
    assert out == f"imported 22 tasks, 21 dependencies (21 contains) from {tgmcp_fixture('browser-flat.json')} into run flat1\n"
    code, out, err = run_cli(capsys, "import", tgmcp_fixture("browser-flat.json"), "--store", store_url, "--run", "flat1")
    assert_one_line_error(code, out, err, "run 'flat1' already exists")
    assert runs_in(store_url) == ["flat1"]


def _bad_files(tmp_path):
    doc = json.loads(tgmcp_fixture("browser-project.json").read_text())
    cases = {}
    p = tmp_path / "malformed.json"
    p.write_text(tgmcp_fixture("browser-project.json").read_text()[:-40])
    cases["malformed"] = (p, ["malformed.json: malformed JSON at line"])
    d = json.loads(json.dumps(doc))
    d["tables"]["dependencies"].append({"from_task_id": "browser-js-lexer", "to_task_id": "browser-js-builtins", "dep_type": "follows"})
    cases["cycle"] = (d, ["cycle: ", "browser-js-lexer", "browser-js-builtins"])
    d = json.loads(json.dumps(doc))
    d["tables"]["dependencies"][0]["dep_type"] = "parent"
    cases["dep-type"] = (d, ["tables.dependencies[0]", "unknown dep_type 'parent'"])
    d = json.loads(json.dumps(doc))
    d["tables"]["dependencies"].append({"from_task_id": "browser-root", "to_task_id": "browser-nothing", "dep_type": "contains"})
    cases["dangling"] = (d, ["no task 'browser-nothing'"])
    d = json.loads(json.dumps(doc))
    d["tables"]["tasks"][9]["points"] = -3
    cases["negative"] = (d, ["tables.tasks[9] (id 'browser-css-values')", "points: must be >= 0"])
    d = json.loads(json.dumps(doc))
    d["tables"]["tasks"][3]["time_estimate_ms"] = "soon"
    cases["type"] = (d, ["tables.tasks[3]", "time_estimate_ms: expected an integer, got 'soon'"])
    d = json.loads(json.dumps(doc))
    d["tables"]["tasks"][3]["file_scope"] = ["/home/someone/.bashrc"]
    cases["escaping-path"] = (d, [f"task {doc['tables']['tasks'][3]['id']!r}: file_scope entry '/home/someone/.bashrc' is absolute"])
    out = {}
    for name, (content, needles) in cases.items():
        if isinstance(content, dict):
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(content))
        else:
            path = content
        out[name] = (path, needles)
    return out


@pytest.mark.parametrize("case", ["malformed", "cycle", "dep-type", "dangling", "negative", "type", "escaping-path"])
def test_bad_input_is_one_line_and_leaves_the_store_unchanged(store_url, tmp_path, capsys, case):
    code, _, _ = run_cli(capsys, "import", tgmcp_fixture("browser-flat.json"), "--store", store_url, "--run", "before")
    assert code == 0
    path, needles = _bad_files(tmp_path)[case]
    code, out, err = run_cli(capsys, "import", path, "--store", store_url)
    assert_one_line_error(code, out, err, str(path), *needles)
    assert runs_in(store_url) == ["before"]


def test_bad_input_does_not_even_create_the_store(backend, tmp_path, capsys):
    url = make_store_url(backend, tmp_path / "fresh")
    before = sorted(p.name for p in (tmp_path / "fresh").iterdir())
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 3, "tables": {"tasks": [{"id": "a", "points": -1}]}}')
    code, out, err = run_cli(capsys, "import", bad, "--store", url)
    assert_one_line_error(code, out, err, "tables.tasks[0] (id 'a'): points: must be >= 0, got -1")
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == before == []


def test_export_defaults_to_the_only_run_and_refuses_ambiguity(store_url, tmp_path, capsys):
    out_file = tmp_path / "out.json"
    store_path = Path(store_url.partition("://")[2])
    code, out, err = run_cli(capsys, "export", "--store", store_url, "-o", out_file)
    assert_one_line_error(code, out, err, str(store_path), "no such")  # a reader creates no store
    assert not out_file.exists() and not store_path.exists()
    open_store(store_url).close()
    code, out, err = run_cli(capsys, "export", "--store", store_url, "-o", out_file)
    assert_one_line_error(code, out, err, "holds no runs")
    assert not out_file.exists()
    run_cli(capsys, "import", tgmcp_fixture("browser-flat.json"), "--store", store_url, "--run", "one")
    code, out, err = run_cli(capsys, "export", "--store", store_url, "-o", out_file)
    assert code == 0 and out == f"exported run one (22 tasks, 21 dependencies) to {out_file} as orch-snapshot\n"
    assert json.loads(out_file.read_text())["run"]["id"] == "one"
    run_cli(capsys, "import", tgmcp_fixture("browser-project.json"), "--store", store_url, "--run", "two")
    code, out, err = run_cli(capsys, "export", "--store", store_url, "-o", tmp_path / "x.json")
    assert_one_line_error(code, out, err, "holds 2 runs (one, two); choose one with --run", exit_code=2)  # usage: --run missing
    code, out, err = run_cli(capsys, "export", "--store", store_url, "-o", tmp_path / "x.json", "--run", "nope")
    assert code == 1 and "nope" in err and err.count("\n") == 1
    code, out, err = run_cli(capsys, "export", "--store", store_url, "-o", tmp_path / "x.json", "--run", "two", "--format", "yaml")
    assert_one_line_error(code, out, err, "--format: unknown format 'yaml'", exit_code=2)
    assert not (tmp_path / "x.json").exists()


def _populate(url, run_id):
    """Give a run some life: a claim, a start, a completion, events and a recorded transition."""
    with open_store(url, clock=lambda: 1_700_000_000_000) as s:
        s.register_agent(run_id, Agent(id="w1", tags=["html"]), lease_ms=60_000)
        t = s.claim_next(run_id, "w1", agent_tags=["html"])
        s.start(run_id, t.id, "w1", t.attempt)
        s.add_usage(run_id, t.id, tokens_in=100, tokens_out=7, cost_usd=0.01)
        s.complete(run_id, t.id, "w1", t.attempt, data={"commit": "abc123"})
        s.append_events(run_id, [Event(agent="w1", seq=i, ts_ms=1_700_000_000_000 + i, type="step", task=t.id, data={"i": i}) for i in range(3)])
        s.record(Transition(run_id=run_id, ts_ms=1_700_000_000_005, entity="merge", entity_id=t.id, to_state="merged", key="m1"))
        return t.id


def test_orch_snapshot_export_import_export_is_byte_identical(store_url, other_store_url, tmp_path, capsys):
    run_cli(capsys, "import", tgmcp_fixture("browser-project.json"), "--store", store_url, "--run", "live")
    done = _populate(store_url, "live")
    first, second = tmp_path / "first.json.gz", tmp_path / "second.json.gz"
    assert run_cli(capsys, "export", "--store", store_url, "-o", first)[0] == 0
    code, out, err = run_cli(capsys, "import", first, "--store", other_store_url, "--json")
    assert code == 0 and json.loads(out)["run"] == "live"  # a snapshot keeps its own run id
    assert run_cli(capsys, "export", "--store", other_store_url, "-o", second)[0] == 0
    assert first.read_bytes() == second.read_bytes()
    doc = json.loads(gzip.decompress(first.read_bytes()))
    assert next(t for t in doc["tasks"] if t["id"] == done)["status"] == "completed"
    assert len(doc["events"]) == 3 and any(h["entity"] == "merge" for h in doc["history"])
    # the same snapshot again is refused, under a new id it loads
    code, out, err = run_cli(capsys, "import", first, "--store", other_store_url)
    assert_one_line_error(code, out, err, "run 'live' already exists")
    code, out, _ = run_cli(capsys, "import", first, "--store", other_store_url, "--run", "copy", "--json")
    assert code == 0 and json.loads(out)["run"] == "copy"
    with open_store(other_store_url) as s:
        assert s.get_task("copy", done).status == "completed"
        assert {h.run_id for h in s.history("copy")} == {"copy"}


@pytest.mark.parametrize("src, dst", [("sqlite", "file"), ("file", "sqlite")])
def test_a_snapshot_moves_between_backends_byte_identical(tmp_path, capsys, src, dst):
    src_url, dst_url = make_store_url(src, tmp_path / src), make_store_url(dst, tmp_path / dst)
    run_cli(capsys, "import", tgmcp_fixture("browser-project.json"), "--store", src_url, "--run", "moved")
    _populate(src_url, "moved")
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert run_cli(capsys, "export", "--store", src_url, "-o", first)[0] == 0
    assert run_cli(capsys, "import", first, "--store", dst_url)[0] == 0
    assert run_cli(capsys, "export", "--store", dst_url, "-o", second)[0] == 0
    assert first.read_bytes() == second.read_bytes()


def test_task_graph_mcp_export_reimports_the_same_graph(store_url, tmp_path, capsys):
    run_cli(capsys, "import", tgmcp_fixture("browser-project.json"), "--store", store_url, "--run", "p")
    out = tmp_path / "p.tgmcp.json"
    code, stdout, _ = run_cli(capsys, "export", "--store", store_url, "-o", out, "--format", "task-graph-mcp", "--json")
    assert code == 0 and json.loads(stdout)["format"] == "task-graph-mcp"
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == 3 and len(doc["tables"]["tasks"]) == 31
    code, stdout, _ = run_cli(capsys, "import", out, "--store", store_url, "--run", "p2", "--json")
    assert code == 0 and json.loads(stdout)["by_type"] == {"blocks": 0, "follows": 24, "contains": 30}
    with open_store(store_url) as s:
        a = [(t.id, t.priority, t.needed_tags, t.wanted_tags, t.time_estimate_ms) for t in s.list_tasks("p")]
        b = [(t.id, t.priority, t.needed_tags, t.wanted_tags, t.time_estimate_ms) for t in s.list_tasks("p2")]
        assert a == b
        assert s.dependencies("p") == s.dependencies("p2")


def test_every_store_option_has_help(capsys):
    for cmd, opts in (("import", ["--store", "--run", "--json"]), ("export", ["--store", "--output", "--run", "--format", "--json"])):
        code, out, _ = run_cli(capsys, cmd, "--help")
        assert code == 0
        for o in opts:
            line = next(line for line in out.splitlines() if o in line)
            assert len(line.split(o, 1)[1].strip(" │")) > 10, f"{cmd} {o} lacks help: {line!r}"


def test_real_console_script_in_a_subprocess(store_url, tmp_path):
    env_cmd = [sys.executable, "-m", "orchestrator"]
    p = subprocess.run([*env_cmd, "import", str(tgmcp_fixture("browser-flat.json")), "--store", store_url, "--run", "sub"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr == "" and "into run sub" in p.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    p = subprocess.run([*env_cmd, "import", str(bad), "--store", store_url], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == f"orch: error: {bad}: malformed JSON at line 1 column 2: Expecting property name enclosed in double quotes\n"
    assert runs_in(store_url) == ["sub"]
