"""`orch template lint` / `show`: findings on the real fixtures, on defective files, never a crash."""

from __future__ import annotations

import functools
import json
from collections import Counter

import pytest
from fixtures_path import tgmcp_fixture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordstore import lint
from coordstore.models import Dependency, Task, TaskGraph
from orchestrator.cli.main import main


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def codes(report) -> Counter:
    return Counter(f.code for f in report.findings)


def write(tmp_path, doc, name="t.json"):
    p = tmp_path / name
    p.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return p


def graph_doc(tasks, deps):
    return {"format": "orch-graph", "version": 1, "tasks": tasks, "dependencies": deps}


def t(id, **kw):
    return {"id": id, "time_estimate_ms": 1000, **kw}


def d(a, b, type="blocks"):
    return {"from_id": a, "to_id": b, "type": type}


# ---------------------------------------------------------------------------- the real fixtures
def test_browser_flat_has_only_the_integer_priority_warning():
    r = lint.lint_file(tgmcp_fixture("browser-flat.json"))
    assert r.format == "task-graph-mcp" and r.errors == 0
    assert codes(r) == Counter({"priority-int": 1})
    assert "22 tasks have integer priorities" in r.findings[0].message


def test_browser_project_known_defects_are_reported():
    r = lint.lint_file(tgmcp_fixture("browser-project.json"))
    assert r.errors == 0
    c = codes(r)
    assert c["tag-mismatch"] == 24 and c["follows-direction"] == 1 and c["priority-int"] == 1
    tok = next(f for f in r.findings if f.task == "browser-html-tokenizer")
    assert "needed_tags [] vs task_needed_tags ['html']" in tok.message
    assert "wanted_tags ['html'] vs task_wanted_tags []" in tok.message
    follows = next(f for f in r.findings if f.code == "follows-direction")
    assert follows.message.startswith("24 follows edges")


# ---------------------------------------------------------------------------- defects
def test_graph_defects_each_become_an_error(tmp_path):
    doc = graph_doc(
        [t("a"), t("b"), t("c"), t("a"), t("x"), t("y"), t("p"), t("q")],
        [d("a", "b"), d("b", "c"), d("c", "a"), d("x", "ghost"), d("x", "y", "precedes"),
         d("p", "y", "contains"), d("q", "y", "contains"), d("x", "x")],
    )
    r = lint.lint_file(write(tmp_path, doc))
    c = codes(r)
    assert c == Counter({"cycle": 2, "duplicate-id": 1, "dangling-edge": 1, "unknown-dep-type": 1, "two-parents": 1})
    msgs = [f.message for f in r.findings]
    assert "a -> b -> c -> a" in msgs and "x -> x (blocks edge to itself)" in msgs
    assert any("no task 'ghost'" in m for m in msgs)
    assert any("unknown type 'precedes'" in m for m in msgs)


def test_file_scope_leaving_the_repository_or_reaching_git_is_an_error(tmp_path):
    doc = graph_doc([t("a", file_scope=["/tmp/x/canary.txt", "src/ok.py"]), t("b", file_scope=["src/../../up.txt"]),
                     t("c", file_scope=[".git/config", "lib/*.py"])], [])
    r = lint.lint_file(write(tmp_path, doc))
    assert r.errors == 3 and codes(r) == Counter({"unsafe-path": 3})
    assert [(f.task, f.message) for f in r.findings] == [
        ("a", "task 'a': file_scope entry '/tmp/x/canary.txt' is absolute: it must be a path within the repository's work tree"),
        ("b", "task 'b': file_scope entry 'src/../../up.txt' leads out through '..': it must be a path within the repository's work tree"),
        ("c", "task 'c': file_scope entry '.git/config' is inside .git: it must be a path within the repository's work tree"),
    ]


def test_numbers_that_overflow_to_infinity_are_errors(tmp_path):
    """JSON's 1e400 parses as inf: as points or an estimate it would stall every schedule."""
    for key in ("points", "time_estimate_ms"):
        text = json.dumps(graph_doc([t("a", **{key: 123456789})], [])).replace("123456789", "1e400")
        r = lint.lint_file(write(tmp_path, text))
        assert [(f.code, f.message) for f in r.findings if f.severity == "error"] == [("bad-field", f"tasks[0]: {key}: Input should be a finite number")]
    doc = fixture_doc_with(lambda d: d["tables"]["tasks"][3].update(points=123456789))
    r = lint.lint_file(write(tmp_path, json.dumps(doc).replace("123456789", "1e400")))
    assert any(f.code == "bad-field" and "points: expected a number, got inf" in f.message for f in r.findings), r.findings


def fixture_doc_with(mutate) -> dict:
    doc = json.loads(tgmcp_fixture("browser-project.json").read_text())
    mutate(doc)
    return doc


def test_several_cycles_are_each_named(tmp_path):
    doc = graph_doc([t(i) for i in "abcdef"], [d("a", "b"), d("b", "a"), d("c", "d"), d("d", "e"), d("e", "c"), d("f", "a")])
    r = lint.lint_file(write(tmp_path, doc))
    assert sorted(f.message for f in r.findings if f.code == "cycle") == ["a -> b -> a", "c -> d -> e -> c"]


def test_cycle_through_a_container_is_found(tmp_path):
    # p contains c; c blocks p: p cannot complete before c, c cannot start before p completes
    doc = graph_doc([t("p"), t("c")], [d("p", "c", "contains"), d("c", "p")])
    r = lint.lint_file(write(tmp_path, doc))
    assert [f.code for f in r.findings if f.severity == "error"] == ["cycle"]


def test_warnings_unreachable_unestimated_duplicate_edge(tmp_path):
    doc = graph_doc(
        [t("root"), t("a"), {"id": "b"}, t("lonely"), {"id": "box"}],
        [d("root", "a", "contains"), d("root", "b", "contains"), d("a", "b"), d("a", "b")],
    )
    r = lint.lint_file(write(tmp_path, doc))
    assert r.errors == 0
    found = {(f.code, f.task) for f in r.findings}
    assert ("unreachable", "lonely") in found and ("unreachable", "box") in found
    assert ("unestimated", "b") in found and ("unestimated", "box") in found
    assert ("unestimated", "root") not in found  # a container's estimate comes from its children
    assert codes(r)["duplicate-edge"] == 1


def test_graph_without_edges_has_no_unreachable_warnings(tmp_path):
    r = lint.lint_file(write(tmp_path, graph_doc([t("a"), t("b")], [])))
    assert r.findings == []


def test_tgmcp_row_defects_and_priority_kinds(tmp_path):
    doc = json.loads(tgmcp_fixture("browser-flat.json").read_text())
    rows = doc["tables"]["tasks"]
    rows[1]["priority"] = "high"
    rows[2]["priority"] = "7"
    rows[3]["time_estimate_ms"] = -10
    rows[4]["priority"] = "urgent"
    rows[5]["points"] = -1
    rows[6]["tags"] = 12
    doc["tables"]["dependencies"][0]["dep_type"] = "parent_of"
    doc["tables"]["task_tags"].append({"task_id": "ghost", "tag": "x"})
    r = lint.lint_file(write(tmp_path, doc))
    c = codes(r)
    assert c["negative-estimate"] == 2 and c["bad-field"] == 2 and c["unknown-dep-type"] == 1
    assert c["dangling-tag-row"] == 1 and c["priority-name"] == 1
    prio = next(f for f in r.findings if f.code == "priority-int")
    assert "mixed with string priorities" in prio.message
    assert [f.severity for f in r.findings] == sorted((f.severity for f in r.findings), key=lambda s: s != "error")


def test_inline_tag_arrays_with_empty_tables_are_flagged(tmp_path):
    doc = json.loads(tgmcp_fixture("browser-flat.json").read_text())
    doc["tables"]["task_tags"] = []
    r = lint.lint_file(write(tmp_path, doc))
    msg = next(f.message for f in r.findings if f.code == "tag-mismatch")
    assert msg.startswith("22 tasks list tags inline as arrays but table task_tags is empty")


@pytest.mark.parametrize(
    "content, code",
    [
        ("", "malformed-json"),
        ("{not json", "malformed-json"),
        ("[1, 2, 3]", "format"),
        ('"just a string"', "format"),
        ('{"hello": 1}', "format"),
        ('{"format": "orch-graph", "tasks": 5}', "format"),
        ('{"schema_version": 2, "tables": {}}', "schema-version"),
        ('{"schema_version": 3, "tables": []}', "format"),
        ('{"schema_version": 3, "tables": {"tasks": [1, null, "x"]}}', "bad-row"),
        ('{"format": "orch-snapshot", "version": 1, "run": {"id": ""}, "tasks": [], "dependencies": []}', "bad-field"),
    ],
)
def test_unusable_files_are_error_findings(tmp_path, content, code):
    r = lint.lint_file(write(tmp_path, content))
    assert r.errors >= 1 and code in codes(r)


def test_missing_directory_and_binary_files(tmp_path):
    assert codes(lint.lint_file(tmp_path / "absent.json")) == Counter({"unreadable": 1})
    assert codes(lint.lint_file(tmp_path)) == Counter({"unreadable": 1})
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    assert codes(lint.lint_file(tmp_path / "bin.json")) == Counter({"malformed-json": 1})
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip at all")
    assert codes(lint.lint_file(tmp_path / "bad.json.gz")) == Counter({"unreadable": 1})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12,
)


@functools.cache
def flat_text() -> str:
    return tgmcp_fixture("browser-flat.json").read_text()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=st.sampled_from(["tasks", "dependencies", "task_tags", "attachments"]), index=st.integers(0, 20),
       key=st.sampled_from(["id", "priority", "tags", "points", "time_estimate_ms", "metrics", "status", "from_task_id",
                            "dep_type", "task_id", "tag", "file_scope", "orch_meta", "needed_tags"]),
       value=json_values)
def test_lint_never_raises_on_mutated_fixture_rows(table, index, key, value):
    doc = json.loads(flat_text())
    rows = doc["tables"][table]
    if rows:
        row = rows[index % len(rows)]
        row[key] = value
    else:
        rows.append({key: value})
    report = lint.lint_document(doc, "fuzz.json")
    assert all(f.severity in ("error", "warning") for f in report.findings)


@settings(max_examples=150, deadline=None)
@given(doc=json_values)
def test_lint_never_raises_on_arbitrary_json(doc):
    report = lint.lint_document(doc, "fuzz.json")
    assert report.errors >= 1 or report.format is not None


# ---------------------------------------------------------------------------- show
def test_show_numbers_on_a_known_graph():
    g = TaskGraph(
        tasks=[Task(id="a", time_estimate_ms=10), Task(id="b", time_estimate_ms=20), Task(id="c", time_estimate_ms=5),
               Task(id="d", time_estimate_ms=50), Task(id="box"), Task(id="e", points=0.001)],
        dependencies=[Dependency(from_id="a", to_id="b", type="blocks"), Dependency(from_id="c", to_id="b", type="follows"),
                      Dependency(from_id="box", to_id="e", type="contains"), Dependency(from_id="a", to_id="box", type="blocks")],
    )
    info = lint.show(g)
    assert (info["tasks"], info["work_tasks"], info["containers"]) == (6, 5, 1)
    assert info["by_type"] == {"blocks": 2, "follows": 1, "contains": 1}
    assert info["depth"] == 3  # a -> b -> c (c follows b)
    assert info["nesting"] == 1
    assert info["ready_at_start"] == 2  # a and d; e waits for a through its container
    assert info["total_estimate_ms"] == 10 + 20 + 5 + 50 + 60
    # chains: a -> b -> c = 35, d = 50, a -> e (in box, which a blocks) = 10 + 60 (0.001 points)
    assert info["critical_path"] == {"length_ms": 70.0, "tasks": ["a", "e"]}
    assert info["parallelism_ceiling"] == round(145 / 70, 2)


def test_show_of_the_project_fixture():
    info = lint.show_file(tgmcp_fixture("browser-project.json"))
    assert info["format"] == "task-graph-mcp"
    assert info["by_type"] == {"blocks": 0, "follows": 24, "contains": 30}
    assert info["critical_path"]["tasks"][0] == "browser-css-parser"
    assert info["critical_path"]["tasks"][-1] == "browser-render-compositing"
    assert info["ready_at_start"] == 4 and info["depth"] == 10
    assert info["parallelism_ceiling"] == round(info["total_estimate_ms"] / info["critical_path"]["length_ms"], 2)


# ---------------------------------------------------------------------------- CLI
def test_cli_lint_exit_codes_and_json(tmp_path, capsys):
    code, out, err = run_cli(capsys, "template", "lint", str(tgmcp_fixture("browser-project.json")))
    assert code == 0 and err == ""
    assert out.splitlines()[-1].endswith("(task-graph-mcp): 0 errors, 26 warnings")
    assert "warning: follows-direction: 24 follows edges" in out
    bad = write(tmp_path, graph_doc([t("a"), t("b")], [d("a", "b"), d("b", "a")]))
    code, out, err = run_cli(capsys, "template", "lint", str(bad), "--json")
    assert code == 1
    data = json.loads(out)
    assert data["errors"] == 1 and data["format"] == "orch-graph"
    assert data["findings"] == [{"severity": "error", "code": "cycle", "message": "a -> b -> a", "task": "a"}]
    code, out, _ = run_cli(capsys, "template", "lint", str(bad))
    assert code == 1 and out.splitlines()[0] == "error: cycle: a -> b -> a"  # the code once, not "cycle: cycle:"
    code, out, _ = run_cli(capsys, "template", "lint", str(tmp_path / "absent.json"))
    assert code == 1 and "error: unreadable: no such file" in out


def test_cli_show_text_json_and_invalid(tmp_path, capsys):
    code, out, err = run_cli(capsys, "template", "show", str(tgmcp_fixture("browser-flat.json")), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["tasks"] == 22 and data["by_type"]["contains"] == 21 and data["ready_at_start"] == 21
    code, out, err = run_cli(capsys, "template", "show", str(tgmcp_fixture("browser-project.json")))
    assert code == 0 and "critical path    280.0 min: browser-css-parser ->" in out
    assert "parallelism      2.70" in out
    bad = write(tmp_path, graph_doc([t("a")], [d("a", "zz")]))
    code, out, err = run_cli(capsys, "template", "show", str(bad))
    assert code == 1 and out == ""
    assert err == f"orch: error: {bad}: dependency a -blocks-> zz: no task 'zz'\n"


def test_every_template_option_has_help(capsys):
    for cmd in ("lint", "show"):
        code, out, _ = run_cli(capsys, "template", cmd, "--help")
        assert code == 0 and "--json" in out
        assert "Print the" in out and "FILE" in out.upper()
