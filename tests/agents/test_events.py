"""The event writer: Maildir delivery, monotonic per-agent sequence across restarts, cheap import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agents.events import EventWriter, args_digest, event_name, highest_seq, parse_event_name
from coordstore.models import USAGE_KEYS, Event
from fixtures_path import PROGS



def final_files(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if parse_event_name(n) is not None)


def test_emit_writes_one_complete_file_per_event(tmp_path: Path) -> None:
    w = EventWriter(tmp_path / "a1", "a1")
    assert w.emit("started", pid=1) == 0
    assert w.step("edit", {"file": "x.py"}, task="t1") == 1
    assert w.tokens(task="t1", tokens_in=5, tokens_out=2, cached=1, thinking=3, cost_usd=0.5) == 2
    assert final_files(tmp_path / "a1") == ["0000000000.json", "0000000001.json", "0000000002.json"]
    assert [n for n in os.listdir(tmp_path / "a1") if n.startswith(".")] == []  # no temp file left
    events = [Event(**json.loads((tmp_path / "a1" / n).read_text())) for n in final_files(tmp_path / "a1")]
    got = [(e.agent, e.seq, e.type, e.task) for e in events]
    assert got == [("a1", 0, "started", None), ("a1", 1, "step", "t1"), ("a1", 2, "tokens", "t1")]
    assert events[1].data == {"name": "edit", "digest": args_digest({"file": "x.py"})}
    assert events[2].data == {"in": 5, "out": 2, "cached": 1, "thinking": 3, "cost_usd": 0.5}  # slots 4-7 left out when 0
    assert w.tokens(task="t1", tokens_in=1, image=4, audio=5, slot6=6, slot7=7) == 3
    data = json.loads((tmp_path / "a1" / event_name(3)).read_text())["data"]
    assert data == {"in": 1, "out": 0, "cached": 0, "thinking": 0, "cost_usd": 0.0, "image": 4, "audio": 5, "slot6": 6, "slot7": 7}
    assert set(data) - {"cost_usd"} == set(USAGE_KEYS)  # the writer's keys are the store's slot names
    assert events[0].ts_ms <= events[1].ts_ms <= events[2].ts_ms


def test_names_and_digest() -> None:
    assert event_name(42) == "0000000042.json"
    assert parse_event_name("0000000042.json") == 42
    assert parse_event_name("12345678901.json") == 12345678901  # wider than the padding still counts
    for other in (".tmp-1-2-3", "42.json", "0000000042.json.tmp", "000000004x.json", "notes.txt"):
        assert parse_event_name(other) is None
    assert args_digest({"a": 1, "b": [2]}) == args_digest({"b": [2], "a": 1})
    assert args_digest({"a": 1}) != args_digest({"a": 2})


def test_sequence_survives_restarts_of_the_agent_process(tmp_path: Path) -> None:
    d = tmp_path / "ev" / "w1"
    for _ in range(2):  # two runs of a real agent process on the same directory
        subprocess.run([sys.executable, str(PROGS / "scripted.py"), str(d), "w1", "--steps", "2"], check=True, timeout=30)
    names = final_files(d)
    per_run = 1 + 2 + 3  # started, 2 steps, file_changed, tokens, done
    assert names == [event_name(i) for i in range(2 * per_run)]
    types = [json.loads((d / n).read_text())["type"] for n in names]
    assert types[per_run - 1] == "done" and types[per_run] == "started"
    # leftovers of a writer that died before linking do not disturb the count
    (d / ".tmp-999-1-12").write_text("{half")
    assert EventWriter(d, "w1").next_seq == 2 * per_run == highest_seq(d) + 1


def test_two_writers_on_one_directory_never_overwrite(tmp_path: Path) -> None:
    a, b = EventWriter(tmp_path, "x"), EventWriter(tmp_path, "x")  # both believe the next seq is 0
    assert a.emit("log", msg="from a") == 0
    assert b.emit("log", msg="from b") == 1  # the link refused 0, so b moved on
    assert a.emit("log", msg="a again") == 2
    msgs = [json.loads((tmp_path / n).read_text())["data"]["msg"] for n in final_files(tmp_path)]
    assert msgs == ["from a", "from b", "a again"]


def test_threads_share_a_writer_without_losing_or_duplicating(tmp_path: Path) -> None:
    w = EventWriter(tmp_path, "t")
    seqs: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            s = w.heartbeat()
            with lock:
                seqs.append(s)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(200))
    assert final_files(tmp_path) == [event_name(i) for i in range(200)]


def test_bad_payload_or_type_is_refused_without_burning_a_seq(tmp_path: Path) -> None:
    w = EventWriter(tmp_path, "b")
    with pytest.raises(TypeError):
        w.emit("log", msg=object())
    with pytest.raises(ValueError, match="event type"):
        w.emit("")
    with pytest.raises(ValueError, match="agent id"):
        EventWriter(tmp_path, "a/b")
    assert w.emit("log", msg="ok") == 0
    assert final_files(tmp_path) == ["0000000000.json"]


def test_import_is_cheap_no_pydantic() -> None:
    heavy = "('pydantic', 'psutil', 'watchdog', 'coordstore')"
    code = f"import sys, agents.events; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30).stdout
    assert out.strip() == "[]"
