"""File backend specifics: the journal on disk, torn lines, error translation, container details,
agreement with SQLite (real processes: test_filestore_processes.py). The shared semantics are in
test_store_contract.py; these tests look at what only the file backend has."""

from __future__ import annotations

import json

import pytest

from coordstore import jsonlog, open_store
from coordstore.errors import InputError, InvalidTransition, StaleAttempt, StoreDamaged, StoreError, StoreURLError
from coordstore.filestore import FileStore
from coordstore.models import Agent, Dependency, Event, Run, Task, TaskGraph

from filestore_helpers import flat_graph, journal, url_of

def chain_graph() -> TaskGraph:
    deps = [Dependency(from_id="a", to_id="b", type="blocks"), Dependency(from_id="b", to_id="c", type="blocks")]
    return TaskGraph(tasks=[Task(id=x) for x in "abc"], dependencies=deps)


@pytest.fixture
def store(tmp_path):
    with FileStore(url_of(tmp_path), clock=lambda: 1000) as s:
        s.create_run(Run(id="r"))
        yield s


# ---------------------------------------------------------------- layout and replay
def test_every_operation_is_one_complete_json_line(tmp_path, store):
    store.add_graph("r", chain_graph())
    t = store.claim_next("r", "w1")
    store.start("r", t.id, "w1", t.attempt)
    store.complete("r", t.id, "w1", t.attempt)
    lines = journal(tmp_path).read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline: no torn tail
    recs = [json.loads(x) for x in lines[:-1]]
    assert len(recs) == 5  # create_run, add_graph, claim, start, complete
    # the claim line holds both the claim row and the task row, with consecutive seqs
    assert [(r["entity"], r["to_state"], r["seq"]) for r in recs[2]["t"]] == [("claim", "won", 5), ("task", "assigned", 6)]
    seqs = [r["seq"] for rec in recs for r in rec["t"]]
    assert seqs == list(range(1, len(seqs) + 1))


def test_second_instance_replays_to_the_same_state(tmp_path, store):
    store.add_graph("r", chain_graph())
    t = store.claim_next("r", "w1")
    store.register_agent("r", Agent(id="w1"), lease_ms=5000)
    store.append_events("r", [Event(agent="w1", seq=i, ts_ms=i, type="step") for i in range(3)])
    other = FileStore(url_of(tmp_path))
    assert other.dump_run("r") == store.dump_run("r")
    # and it keeps following: a write by the first is seen by the second's next read
    store.start("r", t.id, "w1", t.attempt)
    assert other.get_task("r", t.id).status == "working"
    other.close()


def test_replay_in_small_read_slices(tmp_path, store, monkeypatch):
    store.add_graph("r", flat_graph(40))
    for i in range(10):
        store.claim_next("r", f"w{i}")
    monkeypatch.setattr(jsonlog, "READ_CHUNK", 64)  # lines are longer than a slice
    with FileStore(url_of(tmp_path)) as other:
        assert other.dump_run("r") == store.dump_run("r")


def test_refused_call_writes_nothing(tmp_path, store):
    store.add_graph("r", chain_graph())
    t = store.claim_next("r", "w1")
    size = journal(tmp_path).stat().st_size
    with pytest.raises(StaleAttempt):
        store.complete("r", t.id, "w2", t.attempt)
    with pytest.raises(InvalidTransition, match="not ready"):
        store.assign("r", "b", "w2", by="lead")  # its blocker is not completed
    with pytest.raises(InvalidTransition):
        store.add_graph("r", chain_graph())  # ids exist
    assert journal(tmp_path).stat().st_size == size


def test_unserializable_data_is_refused_and_memory_stays_consistent(tmp_path, store):
    store.add_graph("r", chain_graph())
    t = store.claim_next("r", "w1")
    size = journal(tmp_path).stat().st_size
    with pytest.raises(InputError, match="JSON"):
        store.complete("r", t.id, "w1", t.attempt, data={"x": object()})
    assert journal(tmp_path).stat().st_size == size
    # the instance dropped its half-applied memory and replayed: the task is still assigned
    assert store.get_task("r", t.id).status == "assigned"
    assert store.complete("r", t.id, "w1", t.attempt).status == "completed"
    assert store.get_task("r", "b").status == "pending" and [x.id for x in store.ready_tasks("r")] == ["b"]


# ---------------------------------------------------------------- torn lines
def test_torn_last_line_is_ignored_then_truncated_by_the_next_writer(tmp_path, store):
    store.add_graph("r", chain_graph())
    good = journal(tmp_path).read_bytes()
    with open(journal(tmp_path), "ab") as f:  # what a writer killed inside os.write leaves
        f.write(b'{"r":"r","p":[["task","a",{"status":"comp')
    reader = FileStore(url_of(tmp_path))
    assert reader.get_task("r", "a").status == "pending"  # the torn line is not an operation
    assert store.get_task("r", "a").status == "pending"
    t = reader.claim_next("r", "w1")  # a writer: truncates the tail, then appends
    data = journal(tmp_path).read_bytes()
    assert data.startswith(good) and b"comp" not in data[len(good):]
    assert all(json.loads(x) for x in data.split(b"\n")[:-1])
    assert store.get_task("r", t.id).owner == "w1"
    with FileStore(url_of(tmp_path)) as fresh:
        assert fresh.dump_run("r") == reader.dump_run("r")
    reader.close()


def test_torn_events_line(tmp_path, store):
    store.append_events("r", [Event(agent="a", seq=0, ts_ms=1, type="started")])
    events = tmp_path / "store" / "events" / "r.jsonl"
    with open(events, "ab") as f:
        f.write(b'[{"agent":"a","seq":1,')
    other = FileStore(url_of(tmp_path))
    assert other.last_event_seq("r", "a") == 0
    assert other.append_events("r", [Event(agent="a", seq=1, ts_ms=2, type="log")]) == 1
    assert [e.seq for e in store.read_events("r", agent="a")] == [0, 1]
    assert all(json.loads(x) for x in events.read_bytes().split(b"\n")[:-1])
    other.close()


def test_corrupt_complete_line_names_the_file(tmp_path, store):
    with open(journal(tmp_path), "ab") as f:
        f.write(b"this is not json\n")
    with pytest.raises(StoreDamaged, match=r"journal\.jsonl: damaged: corrupt journal line at byte \d+"):
        FileStore(url_of(tmp_path)).get_run("r")


def test_journals_replaced_by_shorter_copies_are_reread(tmp_path, store):
    """Someone restores an older copy of the store under a running instance: it starts over."""
    store.add_graph("r", chain_graph())
    store.append_events("r", [Event(agent="a", seq=0, ts_ms=1, type="started")])
    main, events = journal(tmp_path), tmp_path / "store" / "events" / "r.jsonl"
    old_main, old_events = main.read_bytes(), events.read_bytes()
    store.claim_next("r", "w1")
    store.append_events("r", [Event(agent="a", seq=i, ts_ms=i, type="step") for i in (1, 2)])
    events.write_bytes(old_events)  # same inode, shorter content
    assert store.last_event_seq("r", "a") == 0
    assert store.get_task("r", "a").status == "assigned"
    main.write_bytes(old_main)
    assert store.get_task("r", "a").status == "pending"
    assert store.claim_next("r", "w2").owner == "w2"


def test_fsync_mode_writes_the_same_journal(tmp_path):
    with FileStore(url_of(tmp_path), fsync=True) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", chain_graph())
        assert s.claim_next("r", "w1").id == "a"
    with FileStore(url_of(tmp_path)) as again:
        assert again.get_task("r", "a").owner == "w1"


# ---------------------------------------------------------------- URLs and OS errors
@pytest.mark.parametrize("url", ["file://relative/dir", "file:relative", "file:///abs?x=1", "sqlite:///x.db"])
def test_bad_urls(url):
    with pytest.raises(StoreURLError, match="store URL"):
        FileStore(url)


def test_os_errors_become_store_errors(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="afile"):
        FileStore(f"file://{blocker / 'store'}")


def test_foreign_format_marker_is_refused(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "store.json").write_text('{"format": "something-else", "version": 7}')
    with pytest.raises(StoreError, match="unsupported store format"):
        FileStore(url_of(tmp_path))


def test_open_store_maps_the_scheme(tmp_path):
    with open_store(url_of(tmp_path)) as s:
        assert isinstance(s, FileStore) and s.list_runs() == []


def test_load_run_keeps_events_alongside_later_appends(tmp_path, store):
    store.add_graph("r", chain_graph())
    store.append_events("r", [Event(agent="a", seq=i, ts_ms=i, type="step") for i in range(3)])
    dump = store.dump_run("r")
    with FileStore(f"file://{tmp_path / 'copy'}") as copy:
        copy.load_run(dump)
        assert copy.append_events("r", [Event(agent="a", seq=i, ts_ms=i, type="step") for i in range(2, 5)]) == 2
    with FileStore(f"file://{tmp_path / 'copy'}") as again:
        assert [e.seq for e in again.read_events("r", agent="a")] == [0, 1, 2, 3, 4]
        assert again.dump_run("r").history == dump.history


# ---------------------------------------------------------------- state machine details
def test_wait_policy_container_reopens_when_its_failed_child_is_requeued(tmp_path):
    with FileStore(url_of(tmp_path)) as s:
        s.create_run(Run(id="r", on_blocker_failure="wait"))
        deps = [Dependency(from_id="p", to_id=k, type="contains") for k in ("k1", "k2")]
        deps.append(Dependency(from_id="p", to_id="after", type="blocks"))
        s.add_graph("r", TaskGraph(tasks=[Task(id=x) for x in ("p", "k1", "k2", "after")], dependencies=deps))
        for k in ("k1", "k2"):
            t = s.claim("r", k, "w")
            if k == "k1":
                s.fail("r", k, "w", t.attempt, "boom")
            else:
                s.complete("r", k, "w", t.attempt)
        assert s.get_task("r", "p").status == "failed"
        assert s.get_task("r", "after").status == "pending"  # waits, never unblocked
        s.requeue("r", "k1", "retry")
        assert s.get_task("r", "p").status == "pending"
        t = s.claim_next("r", "w")
        assert t.id == "k1" and t.attempt == 2
        s.complete("r", "k1", "w", 2)
        assert s.get_task("r", "p").status == "completed"
        assert [x.id for x in s.ready_tasks("r")] == ["after"]


def test_cancelling_a_container_cancels_its_subtree_and_dependents(tmp_path):
    with FileStore(url_of(tmp_path)) as s:
        s.create_run(Run(id="r"))
        deps = [Dependency(from_id="p", to_id="k", type="contains"), Dependency(from_id="p", to_id="z", type="blocks")]
        s.add_graph("r", TaskGraph(tasks=[Task(id=x) for x in ("p", "k", "z")], dependencies=deps))
        s.cancel("r", "p", "not needed", by="lead")
        assert {t.id: (t.status, t.reason) for t in s.list_tasks("r")} == {
            "p": ("cancelled", "not needed"),
            "k": ("cancelled", "container p cancelled"),
            "z": ("cancelled", "blocker p cancelled"),
        }


# ---------------------------------------------------------------- agreement with the sqlite backend
def _random_graph(rng) -> TaskGraph:
    ids = [f"t{i}" for i in range(rng.randint(3, 12))]
    deps, parented = [], set()
    for i in range(1, len(ids)):
        j, r = rng.randrange(i), rng.random()
        if r < 0.3:
            deps.append(Dependency(from_id=ids[j], to_id=ids[i], type="blocks"))
        elif r < 0.45:
            deps.append(Dependency(from_id=ids[i], to_id=ids[j], type="follows"))
        elif r < 0.65 and ids[i] not in parented:
            parented.add(ids[i])
            deps.append(Dependency(from_id=ids[j], to_id=ids[i], type="contains"))
    tasks = [
        Task(id=t, priority=rng.randint(0, 3), needed_tags=rng.choice([[], [], ["py"]]), wanted_tags=rng.choice([[], ["ui"]]))
        for t in ids
    ]
    return TaskGraph(tasks=tasks, dependencies=deps)


def _random_ops(store, rng, ids, clock) -> list:
    """Apply 60 random operations; return what each returned (or the error class it raised)."""
    from coordstore.errors import OrchError
    from coordstore.models import Transition

    out = []
    for _ in range(60):
        clock[0] += 7
        t, a, n = rng.choice(ids), rng.choice("abc"), rng.randint(0, 3)
        calls = {
            "claim_next": lambda: store.claim_next("r", a, rng.choice([None, ["py"], ["ui"]]),
                                                   rng.choice(["priority", "critical-path", "fifo"])),
            "within": lambda: store.claim_next("r", a, within=t),
            "claim": lambda: store.claim("r", t, a),
            "assign": lambda: store.assign("r", t, a, by="lead"),
            "start": lambda: store.start("r", t, a, n),
            "complete": lambda: store.complete("r", t, a, n, data={"sha": "x"}),
            "fail": lambda: store.fail("r", t, a, n, "boom"),
            "orch_fail": lambda: store.fail("r", t, None, None, "orch"),
            "requeue": lambda: store.requeue("r", t, "again", by="sup"),
            "cancel": lambda: store.cancel("r", t, "cut", by="lead"),
            "reap": lambda: store.reap_expired("r"),
            "heartbeat": lambda: store.heartbeat("r", a, 21, current_task=t),  # leases end on clock steps
            "register": lambda: store.register_agent("r", Agent(id=a, pid=n), lease_ms=28),
            "status": lambda: store.set_agent_status("r", a, ["active", "idle"][n % 2], reason="v"),
            "usage": lambda: store.add_usage("r", t, 1, 2, 3, 4, 0.5),
            "ready": lambda: [x.id for x in store.ready_tasks("r", rng.choice([None, ["py"]]))],
            "record": lambda: store.record(Transition(run_id="r", ts_ms=clock[0], entity="merge", entity_id=t,
                                                      to_state="merged", key=f"m-{t}")),
            "events": lambda: store.append_events("r", [Event(agent=a, seq=n, ts_ms=clock[0], type="step")]),
        }
        op = rng.choice(sorted(calls))
        try:
            r = calls[op]()
            out.append((op, r.model_dump() if hasattr(r, "model_dump") else r))
        except OrchError as e:
            out.append((op, type(e).__name__))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_random_operations_agree_with_the_sqlite_backend(tmp_path, seed):
    import random

    results = {}
    for url in (url_of(tmp_path), f"sqlite://{tmp_path / 'orch.db'}"):
        rng, clock = random.Random(seed), [1000]
        graph = _random_graph(rng)
        with open_store(url, clock=lambda: clock[0]) as s:
            s.create_run(Run(id="r", on_blocker_failure=rng.choice(["cancel", "wait"])))
            s.add_graph("r", graph)
            log = _random_ops(s, rng, [t.id for t in graph.tasks], clock)
            results[url.split(":")[0]] = (log, s.dump_run("r"))
    file_log, file_dump = results["file"]
    sql_log, sql_dump = results["sqlite"]
    for i, (f, q) in enumerate(zip(file_log, sql_log)):
        assert f == q, f"operation {i} differs"
    assert file_dump == sql_dump
    assert any(isinstance(r, dict) for _, r in file_log)  # the scenario did change state
