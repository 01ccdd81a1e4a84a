"""The documented view of a run (``runview``): a run driven by hand through a real store of every
backend, with exact timestamps, read back through the view's tables; and a query that would write,
in any of the ways SQL can, refused with one line before anything runs."""

from __future__ import annotations

import pytest

from conftest import T0
from coordstore.models import Agent, Event
from orchestrator.views.runview import TABLES, QueryError, RunView

TASKS = [{"id": "a", "points": 2, "time_estimate_ms": 1000}, {"id": "b", "points": 3}, "c", "box", "box.1"]
DEPS = [("a", "blocks", "c"), ("box", "contains", "box.1")]


@pytest.fixture
def dump(store, new_run):
    """Two agents on a, b, c and a box holding box.1; b fails once and is worked again. Times are
    ms after T0, in the order the store sees them (its clock only moves forward)."""
    run = new_run(TASKS, DEPS)
    for i, agent in enumerate(("w1", "w2")):
        store.register_agent(run, Agent(id=agent, tags=["py"] if i == 0 else []), now=T0)
    a = store.claim(run, "a", "w1", now=T0 + 10).attempt
    store.start(run, "a", "w1", a, now=T0 + 20)
    b = store.claim(run, "b", "w2", now=T0 + 25).attempt
    store.start(run, "b", "w2", b, now=T0 + 30)
    store.fail(run, "b", "w2", b, "broke", now=T0 + 80)
    store.requeue(run, "b", "retry", now=T0 + 90)
    store.note(run, "task", "b", "handoff", agent="w1", now=T0 + 95)  # a note: no status period of its own
    store.add_usage(run, "a", tokens_in=10, tokens_out=5, tokens_cached=2, tokens_thinking=1, cost_usd=0.5,
                    tokens_image=4, tokens_audio=3, metric_6=6, metric_7=7)
    store.complete(run, "a", "w1", a, now=T0 + 120)
    b = store.claim(run, "b", "w1", now=T0 + 130).attempt
    store.start(run, "b", "w1", b, now=T0 + 140)
    c = store.claim(run, "c", "w2", now=T0 + 145).attempt
    store.start(run, "c", "w2", c, now=T0 + 150)
    store.complete(run, "c", "w2", c, now=T0 + 170)
    inner = store.claim(run, "box.1", "w2", now=T0 + 180).attempt
    store.start(run, "box.1", "w2", inner, now=T0 + 190)
    store.complete(run, "b", "w1", b, now=T0 + 200)
    store.complete(run, "box.1", "w2", inner, now=T0 + 260)  # its container completes with it
    store.append_events(run, [Event(agent="w1", seq=0, ts_ms=T0 + 5, type="step", data={"name": "turn", "ms": 7})])
    store.finish_run(run, "finished", now=T0 + 300)
    return store.dump_run(run)


def rows(view, sql):
    return view.db.execute(sql).fetchall()


def test_tasks_carry_task_graph_mcps_columns_with_orchs_statuses(dump):
    with RunView(dump) as view:
        got = {r[0]: r[1:] for r in rows(view, "SELECT id, status, worker_id, owner, points, time_estimate_ms, time_actual_ms, "
                                               "cost_usd, metric_0, metric_1, metric_2, metric_3, metric_4, metric_7, "
                                               "deleted_at, is_work, started_at, completed_at FROM tasks")}
    assert got["a"] == ("completed", "w1", "w1", 2.0, 1000, 100, 0.5, 10, 5, 2, 1, 4, 7, None, 1, T0 + 20, T0 + 120)
    with RunView(dump) as view:  # the 8 slots in task-graph-mcp's order
        assert rows(view, "SELECT " + ", ".join(f"metric_{i}" for i in range(8)) + " FROM tasks WHERE id = 'a'") == [
            (10, 5, 2, 1, 4, 3, 6, 7)]
    # b worked twice: its actual time is both working periods (50 + 60 ms), its start the last one
    assert got["b"][:2] + got["b"][5:6] + got["b"][15:] == ("completed", "w1", 110, T0 + 140, T0 + 200)
    assert got["box"][14] == 0 and got["box"][0] == "completed" and got["box"][5] is None  # a container is no work
    assert set(got) == {"a", "b", "c", "box", "box.1"}


def test_task_sequence_is_each_status_a_task_entered_until_its_next(dump):
    with RunView(dump) as view:
        b = rows(view, "SELECT status, worker_id, timestamp, end_timestamp FROM task_sequence WHERE task_id = 'b' ORDER BY id")
        history = [h for h in dump.history if h.entity == "task" and not h.is_note]
        assert rows(view, "SELECT COUNT(*) FROM task_sequence") == [(len(history),)]
        assert [r[0] for r in rows(view, "SELECT id FROM task_sequence ORDER BY id")] == [h.seq for h in history]
    statuses = [r[0] for r in b]
    assert statuses == ["pending", "assigned", "working", "failed", "pending", "assigned", "working", "completed"]
    assert [r[3] for r in b[:-1]] == [r[2] for r in b[1:]]  # each period ends where the next begins
    assert b[2][1:] == ("w2", T0 + 30, T0 + 80) and b[6][1:] == ("w1", T0 + 140, T0 + 200)
    assert b[-1][2] == b[-1][3] == T0 + 200  # a terminal status lasts no time


def test_dependencies_history_agents_events_and_run(dump):
    with RunView(dump) as view:
        assert sorted(rows(view, "SELECT from_task_id, to_task_id, dep_type FROM dependencies")) == [
            ("a", "c", "blocks"), ("box", "box.1", "contains")]
        assert rows(view, "SELECT COUNT(*), MAX(seq) FROM history") == [(len(dump.history), dump.history[-1].seq)]
        assert rows(view, "SELECT to_state, json_extract(data, '$.action') FROM history "
                          "WHERE entity = 'task' AND entity_id = 'b' AND from_state = to_state") == [("pending", "handoff")]
        assert rows(view, "SELECT id, role, status, tags FROM agents ORDER BY id") == [
            ("w1", "worker", "registered", '["py"]'), ("w2", "worker", "registered", "[]")]
        assert rows(view, "SELECT COUNT(*) FROM workers") == [(2,)]
        assert rows(view, "SELECT agent, type, json_extract(data, '$.ms') FROM events") == [("w1", "step", 7)]
        assert rows(view, "SELECT id, status, finished_at FROM run") == [(dump.run.id, "finished", T0 + 300)]
        # task-graph-mcp's tags as JSON: json_each reads them (an eponymous virtual table, allowed)
        assert view.value("SELECT COUNT(*) FROM agents, json_each(agents.tags)") == 1


def test_seed_004s_rework_and_blocking_queries_as_written(dump):
    with RunView(dump) as view:
        rework = view.value("SELECT 100.0 * COUNT(CASE WHEN cnt > 1 THEN 1 END) / COUNT(*) FROM (SELECT task_id, "
                            "COUNT(*) as cnt FROM task_sequence WHERE status = 'working' GROUP BY task_id)")
        blocking = view.value("""SELECT 100.0 * SUM(CASE WHEN status IN ('pending','assigned') THEN
              COALESCE(end_timestamp, CAST(strftime('%s','now') AS INTEGER)*1000) - timestamp ELSE 0 END) / SUM(
              COALESCE(end_timestamp, CAST(strftime('%s','now') AS INTEGER)*1000) - timestamp) FROM task_sequence""")
    assert rework == 100.0 * 1 / 4  # b of a, b, c, box.1
    # by hand, from the history: time in pending/assigned over all time in a status, every task
    spans: dict[str, list[int]] = {}
    periods = []
    for h in (h for h in dump.history if h.entity == "task" and not h.is_note):
        if h.entity_id in spans:
            periods.append((spans[h.entity_id][1], h.ts_ms - spans[h.entity_id][0]))
        spans[h.entity_id] = [h.ts_ms, h.to_state]
    waiting = sum(ms for status, ms in periods if status in ("pending", "assigned"))
    assert blocking == pytest.approx(100.0 * waiting / sum(ms for _, ms in periods))


def test_values_are_one_number_or_none():
    with RunView() as empty:
        assert empty.value("SELECT COUNT(*) FROM tasks") == 0
        assert empty.value("SELECT id FROM tasks") is None  # no row
        assert empty.value("SELECT MAX(points) FROM tasks") is None  # NULL
        with pytest.raises(QueryError, match="returned 'text', not a number"):
            empty.value("SELECT 'text'")
        assert set(TABLES) == {"tasks", "task_sequence", "dependencies", "history", "agents", "events", "run"}


@pytest.mark.parametrize("sql,says", [
    ("DELETE FROM tasks", "would DELETE tasks"),
    ("UPDATE tasks SET status = 'completed'", "would UPDATE tasks"),
    ("INSERT INTO history (seq) VALUES (0)", "would INSERT history"),
    ("WITH x AS (SELECT 1) DELETE FROM tasks", "would DELETE tasks"),
    ("REPLACE INTO run (id) VALUES ('x')", "would INSERT run"),
    ("CREATE TABLE t (x)", "would CREATE"),
    ("CREATE TEMP VIEW v AS SELECT 1", "would CREATE"),
    ("DROP TABLE history", "would DROP"),
    ("ALTER TABLE tasks ADD COLUMN y", "would ALTER_TABLE"),
    ("ATTACH DATABASE 'other.db' AS other", "would ATTACH other.db"),
    ("DETACH main", "would DETACH"),
    ("PRAGMA query_only = OFF", "would PRAGMA query_only"),
    ("BEGIN", "would TRANSACTION"),
    ("REINDEX", "would REINDEX"),
    ("VACUUM INTO 'copy.db'", "only reads (SELECT, WITH or VALUES)"),
    ("SELECT 1; DELETE FROM tasks", "one statement: this one has more"),
    ("SELECT 1; SELECT 2", "one statement: this one has more"),
    ("SELECT load_extension('x')", "would call load_extension"),
])
def test_a_query_that_would_write_is_refused_before_it_runs(sql, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an ATTACH or VACUUM INTO would have left a file
    with RunView() as view:
        with pytest.raises(QueryError) as e:
            view.check(sql)
        assert says in str(e.value) and "\n" not in str(e.value)
        with pytest.raises(QueryError):
            view.value(sql)
        assert view.value("SELECT COUNT(*) FROM sqlite_master WHERE name = 'history'") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_runaway_query_is_stopped(monkeypatch):
    monkeypatch.setattr("orchestrator.views.runview.MAX_STEPS", 1_000_000)
    with RunView() as view, pytest.raises(QueryError, match="stopped after 1,000,000 steps"):
        view.value("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT MAX(x) FROM c")
