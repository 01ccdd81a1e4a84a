"""orch's snapshot format: canonical bytes, gzip stability, atomic writes, one-line errors.

Store round trips (export -> import -> export through real backends) are in orchestrator/cli/test_orch_store.py.
"""

from __future__ import annotations

import gzip
import json

import pytest

from coordstore import snapshot
from coordstore.errors import GraphError, InputError
from coordstore.models import Agent, Dependency, Event, Run, RunDump, Task, Transition
from coordstore.templates import load_file


def make_dump(run_id: str = "r1") -> RunDump:
    tasks = [
        Task(id="root", title="Root ☃", priority=9),
        Task(id="a", title="A", points=2.5, tags=["x", "b"], status="completed", owner="w1", completed_by="w1",
             attempt=1, created_at=1000, completed_at=5000, tokens_in=10, tokens_image=3, tokens_audio=4, metric_6=5,
             metric_7=6, cost_usd=0.125),
        Task(id="b", title="B", time_estimate_ms=60_000, needed_tags=["py"], file_scope=["src/b.py"],
             meta={"commands": [["true"]]}, status="working", owner="w2", attempt=2),
        Task(id="c", title="C", description="line1\nline2 \"quoted\""),
    ]
    deps = [
        Dependency(from_id="root", to_id="a", type="contains"),
        Dependency(from_id="root", to_id="b", type="contains"),
        Dependency(from_id="a", to_id="b", type="blocks"),
        Dependency(from_id="c", to_id="b", type="follows"),
    ]
    agents = [Agent(id="w2", tags=["py"]), Agent(id="w1", pid=123, create_time=1.5)]
    events = [
        Event(agent="w2", seq=1, ts_ms=3000, type="step", task="b", data={"name": "edit"}),
        Event(agent="w1", seq=2, ts_ms=4000, type="done", task="a"),
        Event(agent="w1", seq=1, ts_ms=2000, type="started", task="a"),
    ]
    history = [
        Transition(seq=2, run_id=run_id, ts_ms=1001, entity="task", entity_id="a", from_state=None, to_state="pending", reason="import"),
        Transition(seq=1, run_id=run_id, ts_ms=1000, entity="run", entity_id=run_id, to_state="running"),
        Transition(seq=3, run_id=run_id, ts_ms=2000, entity="claim", entity_id="a", to_state="won", agent="w1", data={"n": 1.5}),
    ]
    run = Run(id=run_id, experiment="exp", variant="push-4", seed=7, created_at=1000, config={"k": [1, 2]})
    return RunDump(run=run, tasks=tasks, dependencies=deps, agents=agents, events=events, history=history)


def test_encode_is_canonical_and_round_trips():
    dump = make_dump()
    data = snapshot.dumps(dump)
    doc = json.loads(data)
    assert doc["format"] == "orch-snapshot" and doc["version"] == 1
    # canonical list orders: agents by id, events by (agent, seq), history by seq; tasks/deps as given
    assert [a["id"] for a in doc["agents"]] == ["w1", "w2"]
    assert [(e["agent"], e["seq"]) for e in doc["events"]] == [("w1", 1), ("w1", 2), ("w2", 1)]
    assert [t["seq"] for t in doc["history"]] == [1, 2, 3]
    assert [t["id"] for t in doc["tasks"]] == ["root", "a", "b", "c"]
    assert data.endswith(b"}\n") and "☃".encode() in data  # UTF-8, not \u escapes
    back = snapshot.loads(data, "mem")
    assert back.tasks == dump.tasks and back.dependencies == dump.dependencies and back.run == dump.run
    assert snapshot.dumps(back) == data  # byte-identical after a round trip


def test_all_8_metric_slots_travel_and_an_older_snapshot_reads_them_as_0():
    data = snapshot.dumps(make_dump())
    doc = json.loads(data)
    a = next(t for t in doc["tasks"] if t["id"] == "a")
    assert [a[k] for k in ("tokens_in", "tokens_image", "tokens_audio", "metric_6", "metric_7")] == [10, 3, 4, 5, 6]
    assert snapshot.loads(data, "mem").tasks[1].metrics == [10, 0, 0, 0, 3, 4, 5, 6]
    for t in doc["tasks"]:  # as an orch with 4 slots wrote it
        for k in ("tokens_image", "tokens_audio", "metric_6", "metric_7"):
            del t[k]
    old = snapshot.loads(json.dumps(doc).encode(), "old")
    assert [t.metrics[4:] for t in old.tasks] == [[0] * 4] * 4 and old.tasks[1].tokens_in == 10


def test_equal_dumps_in_any_list_order_give_equal_bytes():
    a = make_dump()
    b = a.model_copy(update={"agents": a.agents[::-1], "events": a.events[::-1], "history": a.history[::-1]})
    assert snapshot.dumps(a) == snapshot.dumps(b)


def test_gzip_is_byte_stable_and_read_back(tmp_path):
    dump = make_dump()
    p1, p2 = tmp_path / "one.json.gz", tmp_path / "two.json.gz"
    snapshot.write_snapshot(p1, dump)
    snapshot.write_snapshot(p2, dump)
    raw = p1.read_bytes()
    assert raw == p2.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[4:8] == b"\x00\x00\x00\x00", "gzip header mtime must be 0"
    assert raw[3] & 0x08 == 0, "gzip header must not carry a file name"
    assert gzip.decompress(raw) == snapshot.dumps(dump)
    assert snapshot.read_snapshot(p1) == snapshot.loads(snapshot.dumps(dump))
    assert load_file(p1).run.id == "r1"


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "snap.json"
    target.write_text("old content")
    snapshot.write_snapshot(target, make_dump())
    assert snapshot.read_snapshot(target).run.id == "r1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.json"]


def test_write_into_missing_directory_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist") as e:
        snapshot.write_snapshot(tmp_path / "nope" / "snap.json", make_dump())
    assert "\n" not in str(e.value) and "nope" in str(e.value)


def _write_doc(tmp_path, doc, name="bad.json"):
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


@pytest.mark.parametrize(
    "mutate, exc, needles",
    [
        (lambda d: d.update(version=2), InputError, ["version 2", "not supported"]),
        (lambda d: d.update(format="other"), InputError, ["not an orch snapshot"]),
        (lambda d: d["tasks"][1].update(priority="high"), InputError, ["tasks[1] (id 'a').priority"]),
        (lambda d: d["tasks"][2].update(time_estimate_ms=-5), InputError, ["tasks[2] (id 'b').time_estimate_ms", "greater than or equal"]),
        (lambda d: d["dependencies"].append({"from_id": "c", "to_id": "b", "type": "blocks"}), GraphError, ["cycle: b -> c -> b"]),
        (lambda d: d["dependencies"].append({"from_id": "a", "to_id": "ghost", "type": "blocks"}), GraphError, ["no task 'ghost'"]),
        (lambda d: d["dependencies"].append({"from_id": "a", "to_id": "c", "type": "precedes"}), InputError, ["dependencies[4].type"]),
        (lambda d: d["history"][0].update(run_id="other"), InputError, ["history[0].run_id 'other'"]),
        (lambda d: d.pop("run"), InputError, ["run: Field required"]),
    ],
)
def test_bad_snapshot_is_one_line_naming_file_and_field(tmp_path, mutate, exc, needles):
    doc = json.loads(snapshot.dumps(make_dump()))
    mutate(doc)
    path = _write_doc(tmp_path, doc)
    with pytest.raises(exc) as e:
        snapshot.read_snapshot(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path))
    for n in needles:
        assert n in msg


def test_malformed_json_names_file_line_and_column(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"format": "orch-snapshot",\n  "version": 1,\n  "run": {oops}\n}')
    with pytest.raises(InputError) as e:
        snapshot.read_snapshot(p)
    assert str(e.value).startswith(f"{p}: malformed JSON at line 3 column")


def test_nan_is_refused_both_ways(tmp_path):
    p = tmp_path / "nan.json"
    p.write_text('{"format": "orch-snapshot", "version": 1, "x": NaN}')
    with pytest.raises(InputError, match="NaN"):
        snapshot.read_snapshot(p)
    with pytest.raises(InputError, match="cannot write JSON"):
        snapshot.canonical_json({"x": float("nan")})


def test_corrupt_gzip_and_missing_file(tmp_path):
    p = tmp_path / "snap.json.gz"
    p.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InputError, match="not a valid gzip file") as e:
        snapshot.read_snapshot(p)
    assert str(e.value).startswith(str(p))
    with pytest.raises(InputError, match="no such file"):
        snapshot.read_snapshot(tmp_path / "absent.json")
