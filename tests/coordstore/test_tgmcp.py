"""task-graph-mcp interop: both real fixture files, every field variant, every bad-input error."""

from __future__ import annotations

import copy
import json

import pytest
from fixtures_path import tgmcp_fixture

from coordstore import graph, snapshot, tgmcp
from coordstore.tgmcp_export import to_doc
from coordstore.errors import GraphError, InputError
from coordstore.models import Dependency, Task, TaskGraph
from coordstore.templates import load_file, load_graph, save_file


def fixture_doc(name: str) -> dict:
    return json.loads(tgmcp_fixture(name).read_text())


def write(tmp_path, doc, name="t.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return str(p)


def test_browser_flat_imports_whole():
    g = load_graph(tgmcp_fixture("browser-flat.json"))
    assert len(g.tasks) == 22 and len(g.dependencies) == 21
    assert {d.type for d in g.dependencies} == {"contains"}
    ix = graph.validate(g)
    assert ix.children["browser-flat-root"] == [t.id for t in g.tasks[1:]]
    url = ix.tasks["browser-flat-01-url-parser"]
    assert (url.priority, url.points, url.time_estimate_ms) == (5, 3, 900_000)
    assert url.tags == ["networking", "parser"]
    assert ix.tasks["browser-flat-root"].priority == 8


def test_browser_project_follows_means_to_goes_first():
    g = load_graph(tgmcp_fixture("browser-project.json"))
    assert len(g.tasks) == 31 and len(g.dependencies) == 54
    ix = graph.validate(g)
    # "browser-html-tree-builder follows browser-html-tokenizer": the tokenizer completes first
    assert ix.blockers["browser-html-tree-builder"] == {"browser-html-tokenizer"}
    assert ix.blockers["browser-layout-box-model"] == {"browser-css-values", "browser-dom-tree"}
    assert "browser-html-tree-builder" not in ix.blockers.get("browser-html-tokenizer", set())
    status = {t.id: t.status for t in g.tasks}
    ready = [t for t in graph.work_ids(ix) if graph.is_ready(t, ix, status)]
    assert ready == ["browser-html-tokenizer", "browser-css-parser", "browser-js-lexer", "browser-dom-tree"]
    assert ix.tasks["browser-html-parser"].phase == "phase-1"


def test_browser_project_tags_are_the_union_of_inline_lists_and_tables():
    ix = graph.validate(load_graph(tgmcp_fixture("browser-project.json")))
    tok = ix.tasks["browser-html-tokenizer"]  # inline wanted [html], table needed [html]
    assert tok.needed_tags == ["html"] and tok.wanted_tags == ["html"]
    cssom = ix.tasks["browser-dom-cssom"]  # inline wanted [dom, css], table wanted [css], needed [dom]
    assert cssom.wanted_tags == ["css", "dom"] and cssom.needed_tags == ["dom"]
    assert ix.tasks["browser-html-parser"].wanted_tags == ["html"]


@pytest.mark.parametrize(
    "value, expected",
    [(7, 7), ("7", 7), (" 3 ", 3), ("high", 8), ("LOW", 2), ("medium", 5), ("critical", 10), (None, 5), (6.0, 6)],
)
def test_priority_forms(tmp_path, value, expected):
    doc = fixture_doc("browser-flat.json")
    doc["tables"]["tasks"][1]["priority"] = value
    assert load_graph(write(tmp_path, doc)).tasks[1].priority == expected


def test_tag_lists_as_json_strings_metrics_and_extensions(tmp_path):
    doc = fixture_doc("browser-flat.json")
    row = doc["tables"]["tasks"][1]
    row.update(
        tags='["zeta", "alpha"]', needed_tags='["py"]', wanted_tags="", status="in_progress", worker_id="w1",
        metrics=[100, 20, 30, 4, 9, 9, 9, 9], cost_usd=0.5, file_scope='["src/url.py"]', orch_meta={"commands": [["make"]]},
    )
    doc["tables"]["task_tags"] = [r for r in doc["tables"]["task_tags"] if r["task_id"] != row["id"]]
    row2 = doc["tables"]["tasks"][2]
    del row2["metrics"]
    row2.update({f"metric_{i}": i + 1 for i in range(8)}, file_scope=["src/http.py", "src/conn.py"])
    doc["tables"]["attachments"] = [{"task_id": row2["id"], "order_index": 0, "name": "spec", "mime_type": "text/plain", "content": "hi", "created_at": 1}]
    g = load_graph(write(tmp_path, doc))
    t1, t2 = g.tasks[1], g.tasks[2]
    assert t1.tags == ["alpha", "zeta"] and t1.needed_tags == ["py"] and t1.wanted_tags == []
    assert (t1.tokens_in, t1.tokens_out, t1.tokens_cached, t1.tokens_thinking, t1.cost_usd) == (100, 20, 30, 4, 0.5)
    assert (t1.tokens_image, t1.tokens_audio, t1.metric_6, t1.metric_7) == (9, 9, 9, 9)
    assert t1.status == "working" and t1.owner == "w1"
    assert t1.file_scope == ["src/url.py"] and t1.meta == {"commands": [["make"]]}
    assert t2.metrics == [1, 2, 3, 4, 5, 6, 7, 8]  # from the metric_N columns, every slot
    assert t2.file_scope == ["src/conn.py", "src/http.py"]
    # attachments and all 8 metric slots survive an export and a re-import
    exported = to_doc(g)["tables"]["tasks"][2]
    assert exported["metrics"] == [1, 2, 3, 4, 5, 6, 7, 8] and exported["metric_5"] == 6
    again = tgmcp.to_graph(to_doc(g), "re")
    assert again.tasks[2].meta == t2.meta and again.tasks[2].metrics == t2.metrics
    assert to_doc(again)["tables"]["attachments"] == doc["tables"]["attachments"]


def _mutations():
    def tasks(d):
        return d["tables"]["tasks"]

    def deps(d):
        return d["tables"]["dependencies"]

    return [
        ("cycle", lambda d: deps(d).append({"from_task_id": "browser-html-tokenizer", "to_task_id": "browser-html-error-recovery", "dep_type": "follows"}),
         GraphError, ["cycle: ", "browser-html-tokenizer", "browser-html-error-recovery"]),
        ("dangling", lambda d: deps(d).append({"from_task_id": "browser-js-vm", "to_task_id": "browser-ghost", "dep_type": "blocks"}),
         GraphError, ["no task 'browser-ghost'"]),
        ("dep-type", lambda d: deps(d).__setitem__(40, {**deps(d)[40], "dep_type": "precedes"}),
         GraphError, ["tables.dependencies[40]", "unknown dep_type 'precedes'"]),
        ("negative", lambda d: tasks(d)[2].update(time_estimate_ms=-1),
         GraphError, ["tables.tasks[2] (id 'browser-html-tokenizer')", "time_estimate_ms: must be >= 0"]),
        ("points-type", lambda d: tasks(d)[3].update(points="three"),
         GraphError, ["tables.tasks[3]", "points: expected a number, got 'three'"]),
        ("priority-name", lambda d: tasks(d)[4].update(priority="urgent"),
         GraphError, ["tables.tasks[4]", "priority: unknown name 'urgent'"]),
        ("priority-bool", lambda d: tasks(d)[4].update(priority=True),
         GraphError, ["priority: expected an integer"]),
        ("tags-type", lambda d: tasks(d)[5].update(tags=[1, 2]),
         GraphError, ["tables.tasks[5]", "tags: expected an array of strings"]),
        ("tags-json", lambda d: tasks(d)[5].update(tags="[not json"),
         GraphError, ["tags: not a JSON array string"]),
        ("metrics", lambda d: tasks(d)[6].update(metrics=[1, 2, 3]),
         GraphError, ["metrics: expected an array of 8 integers"]),
        ("status", lambda d: tasks(d)[6].update(status="blocked"),
         GraphError, ["status: unknown status 'blocked'"]),
        ("no-id", lambda d: tasks(d)[7].pop("id"),
         GraphError, ["tables.tasks[7]", "id: expected a non-empty string"]),
        ("duplicate", lambda d: tasks(d).append(copy.deepcopy(tasks(d)[1])),
         GraphError, ["task id 'browser-html-parser' appears twice"]),
        ("tag-row", lambda d: d["tables"]["task_needed_tags"].append({"task_id": "nobody", "tag": "x"}),
         GraphError, ["tables.task_needed_tags[24]: no task 'nobody'"]),
        ("schema", lambda d: d.update(schema_version=2),
         InputError, ["schema_version 2 is not supported"]),
        ("tables", lambda d: d["tables"].update(dependencies={"a": 1}),
         InputError, ["tables.dependencies: expected an array"]),
    ]


@pytest.mark.parametrize("name, mutate, exc, needles", _mutations(), ids=[m[0] for m in _mutations()])
def test_bad_input_is_one_line_naming_file_and_row(tmp_path, name, mutate, exc, needles):
    doc = fixture_doc("browser-project.json")
    mutate(doc)
    path = write(tmp_path, doc)
    with pytest.raises(exc) as e:
        load_file(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    for n in needles:
        assert n in msg, msg


def test_malformed_json_file(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(tgmcp_fixture("browser-flat.json").read_text()[:500])
    with pytest.raises(InputError, match=r"malformed JSON at line \d+ column \d+") as e:
        load_file(p)
    assert str(e.value).startswith(str(p))


def test_export_writes_what_task_graph_mcps_importer_reads():
    g = load_graph(tgmcp_fixture("browser-project.json"))
    doc = to_doc(g)
    assert doc["schema_version"] == 3 and set(doc["tables"]) == set(tgmcp.TABLES)
    for row in doc["tables"]["tasks"]:
        assert isinstance(row["priority"], str) and row["priority"].isdigit()
        for k in ("tags", "needed_tags", "wanted_tags"):
            assert isinstance(json.loads(row[k]), list)
        assert isinstance(row["created_at"], int) and isinstance(row["updated_at"], int)
        assert row["metrics"] == [row[f"metric_{i}"] for i in range(8)]
    tok = next(r for r in doc["tables"]["tasks"] if r["id"] == "browser-html-tokenizer")
    assert json.loads(tok["needed_tags"]) == ["html"]
    assert {"task_id": "browser-html-tokenizer", "tag": "html"} in doc["tables"]["task_needed_tags"]
    assert {"task_id": "browser-html-tokenizer", "tag": "html"} in doc["tables"]["task_wanted_tags"]
    follows = [r for r in doc["tables"]["dependencies"] if r["dep_type"] == "follows"]
    assert follows[0] == {"from_task_id": "browser-html-tree-builder", "to_task_id": "browser-html-tokenizer", "dep_type": "follows"}


@pytest.mark.parametrize("name", ["browser-flat.json", "browser-project.json"])
def test_export_import_export_is_stable(tmp_path, name):
    g = load_graph(tgmcp_fixture(name))
    first = tmp_path / "first.json.gz"
    save_file(first, g, "task-graph-mcp")
    g2 = load_graph(first)
    assert [t.model_dump() for t in g2.tasks] == [t.model_dump() for t in g.tasks]
    assert g2.dependencies == g.dependencies
    second = tmp_path / "second.json.gz"
    save_file(second, g2, "task-graph-mcp")
    assert first.read_bytes() == second.read_bytes()
    assert graph.critical_path(graph.validate(g2)) == graph.critical_path(graph.validate(g))


def test_orch_graph_exports_to_tgmcp_and_back(tmp_path):
    g = TaskGraph(
        tasks=[
            Task(id="p", title="parent"),
            Task(id="a", title="a", priority=9, points=1.5, needed_tags=["py"], wanted_tags=["fast"], file_scope=["a.py"]),
            Task(id="b", title="b", time_estimate_ms=1000, phase="two", status="completed", owner="w", started_at=10, completed_at=30),
        ],
        dependencies=[Dependency(from_id="p", to_id="a", type="contains"), Dependency(from_id="a", to_id="b", type="blocks")],
    )
    doc = to_doc(g)
    assert doc["tables"]["tasks"][2]["time_actual_ms"] == 20
    back = tgmcp.to_graph(json.loads(snapshot.canonical_json(doc)), "mem")
    for orig, new in zip(g.tasks, back.tasks):
        assert new.model_dump(exclude={"created_at", "updated_at"}) == orig.model_dump(exclude={"created_at", "updated_at"})
    assert back.dependencies == g.dependencies
