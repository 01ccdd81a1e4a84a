"""The sim kind: its seeded plan (pure), and real runs -- determinism across runs and agents,
and every injected fault visible in the history and the events."""

from __future__ import annotations

import math
import os
import statistics
import time

import pytest

from conftest import wait_for
from agents.harness import LocalRun
from agents.kinds import resolve_kind
from agents.kinds.sim import CRASH_EXIT, MAX_EDIT_BYTES, SimKind, editable
from agents.kinds.simplan import SimOptions, edit_targets, edit_text, make_plan, own_file
from coordstore.errors import AgentError, GitError
from coordstore.models import Dependency, Task, TaskGraph

SCALE = 0.003


pytestmark = pytest.mark.usefixtures("no_git_identity")


# ---------------------------------------------------------------------- the plan (pure)
T = Task(id="feat-1", title="Feature one", time_estimate_ms=600_000, file_scope=["src/a.py", "src/b.py"])


def test_plan_is_a_function_of_seed_task_and_attempt_only():
    opts = SimOptions()
    a, b = make_plan(T, 7, 1, 0.01, opts), make_plan(T.model_copy(), 7, 1, 0.01, opts)
    assert (a.agent_ms, a.duration_s, a.steps, a.fault, a.edits, a.digest) == (b.agent_ms, b.duration_s, b.steps, b.fault, b.edits, b.digest)
    assert make_plan(T, 8, 1, 0.01, opts).agent_ms != a.agent_ms
    assert make_plan(T, 7, 2, 0.01, opts).agent_ms != a.agent_ms  # a retry is a new draw
    assert make_plan(T, 7, 1, 0.01, opts).duration_s == pytest.approx(a.agent_ms * 0.01 / 1000)
    # knobs draw from their own streams: turning on faults does not move durations or tokens
    faulty = make_plan(T, 7, 1, 0.01, SimOptions(p_fail=1.0))
    assert faulty.fault == "fail" and (faulty.agent_ms, faulty.steps) == (a.agent_ms, a.steps)
    assert all(0 <= s.at_s < a.duration_s for s in a.steps)
    assert [s.at_s for s in a.steps] == sorted(s.at_s for s in a.steps)
    assert len({(s.name, str(s.args)) for s in a.steps}) == len(a.steps)  # normal steps never look like a loop


def test_durations_are_lognormal_around_the_estimate():
    sigma = 0.4
    logs = [math.log(make_plan(Task(id=f"t{i}", time_estimate_ms=100_000), 3, 1, 1.0, SimOptions(sigma=sigma)).agent_ms / 100_000)
            for i in range(3000)]
    assert abs(statistics.fmean(logs)) < 0.03
    assert statistics.stdev(logs) == pytest.approx(sigma, rel=0.06)
    assert make_plan(Task(id="t", time_estimate_ms=100_000), 3, 1, 1.0, SimOptions(sigma=0)).agent_ms == 100_000


def test_fault_probabilities_fire_at_their_rates():
    n = 2000
    plans = [make_plan(Task(id=f"t{i}"), 1, 1, 1.0, SimOptions(p_crash=0.1, p_fail=0.2, p_rate_limit=0.3)) for i in range(n)]
    crash = sum(p.fault == "crash" for p in plans) / n
    fail = sum(p.fault == "fail" for p in plans) / n
    rl = sum(p.rate_limit_step is not None for p in plans) / n
    assert crash == pytest.approx(0.1, abs=0.025)
    assert fail == pytest.approx(0.9 * 0.2, abs=0.03)  # crash is drawn first and wins
    assert rl == pytest.approx(0.3, abs=0.035)
    assert {p.fault for p in plans} == {None, "crash", "fail"}


def test_edits_fill_the_tasks_slot_or_append():
    text = "# src/a.py\n\n# orch-slot: feat-1\n\n# orch-slot: feat-10\n"
    new, change = edit_text(text, "src/a.py", T, "abc")
    assert change == "modified"
    assert new == "# src/a.py\n\n# task feat-1: Feature one [sim abc]\n\n# orch-slot: feat-10\n"
    appended, _ = edit_text("x = 1", "src/c.js", T, "abc")
    assert appended == "x = 1\n\n// task feat-1: Feature one [sim abc]\n"
    assert edit_text(None, "docs/n.md", T, "abc") == ("# task feat-1: Feature one [sim abc]\n", "added")
    assert edit_targets(Task(id="a/b c")) == [own_file("a/b c")] == ["orch-sim/a_b_c.md"]
    assert edit_targets(Task(id="t", file_scope=["src/", "lib/*.py", "x.py"])) == ["lib/t.md", "src/t.md", "x.py"]  # scope is kept sorted


def test_sim_options_are_checked():
    with pytest.raises(AgentError, match=r"p_fail=1.5: must be a number in \[0, 1\]"):
        SimKind({"p_fail": 1.5})
    with pytest.raises(AgentError, match="model='gpt'"):
        SimKind({"model": "gpt"})
    assert SimKind({"p_fial": 0.1}).unknown == ["p_fial"]  # reported by the runner as a warning
    assert resolve_kind("sim") is SimKind
    with pytest.raises(AgentError, match="agent kind 'simm' is unknown; known: .*sim"):
        resolve_kind("simm")
    with pytest.raises(AgentError, match="cannot import module 'no_such_mod'"):
        resolve_kind("no_such_mod:Kind")


# ---------------------------------------------------------------------- real runs
GRAPH = TaskGraph(
    tasks=[Task(id=f"t{i}", title=f"Task {i}", time_estimate_ms=25_000, file_scope=[f"src/m{i % 3}.py"]) for i in range(7)]
    + [Task(id="loose", title="No scope", time_estimate_ms=20_000)],
    dependencies=[Dependency(from_id=a, type="blocks", to_id=b) for a, b in [("t0", "t3"), ("t1", "t4"), ("t3", "t6")]],
)
P_FAIL = 0.25


def outcome(run: LocalRun) -> tuple[dict, dict, dict]:
    durations = {r.entity_id: r.data["sim"] for r in run.history(entity="task") if r.to_state == "completed"}
    statuses = {t.id: t.status for t in run.tasks().values()}
    files = {}
    for rel in ("src/m0.py", "src/m1.py", "src/m2.py", own_file("loose")):
        try:
            files[rel] = run.merged_text(rel)
        except GitError:  # not in the merged tree (its task failed)
            files[rel] = None
    return durations, statuses, files


def test_same_seed_same_durations_outcomes_and_edits_whoever_runs_it(local):
    # a seed under which some, not all, tasks fail -- found from the model, not hard-coded
    seed = next(s for s in range(100)
                if 1 <= sum(make_plan(t, s, 1, SCALE, SimOptions(p_fail=P_FAIL)).fault == "fail" for t in GRAPH.tasks) <= 2)
    expect_fail = {t.id for t in GRAPH.tasks if make_plan(t, seed, 1, SCALE, SimOptions(p_fail=P_FAIL)).fault == "fail"}
    a = local(GRAPH, name="a", seed=seed)
    for w in ("w1", "w2"):
        a.add_agent(w, kind_options={"p_fail": P_FAIL})
    b = local(GRAPH, name="b", seed=seed)  # other agents, another policy
    b.add_agent("coordinator", role="coordinator", policy="push")
    b.add_agent("x1", kind_options={"p_fail": P_FAIL}, policy="push")
    c = local(GRAPH, name="c", seed=seed + 1)
    c.add_agent("w1", kind_options={"p_fail": P_FAIL})
    for r in (a, b, c):
        r.start_all()
    for r in (a, b, c):
        assert set(r.wait(40).values()) == {0}, [r.log(x) for x in r.procs]
    da, sa, fa = outcome(a)
    db, sb, fb = outcome(b)
    dc, sc, fc = outcome(c)
    assert {t for t, s in sa.items() if s == "failed"} == expect_fail
    assert "cancelled" in sa.values() or not ({"t0", "t1", "t3"} & expect_fail)
    assert (da, sa, fa) == (db, sb, fb)
    assert {a.store.get_task(a.run_id, t).completed_by for t in da} - {"w1", "w2"} == set()
    assert {b.store.get_task(b.run_id, t).completed_by for t in db} == {"x1"}
    assert sum(1 for text in fa.values() if text and "[sim " in text) >= 2  # real edits landed
    common = set(da) & set(dc)
    assert common and all(da[t]["agent_ms"] != dc[t]["agent_ms"] for t in common)
    assert fa != fc


def single(local, name: str, **kind_options) -> LocalRun:
    g = TaskGraph(tasks=[Task(id="job", title="The job", time_estimate_ms=100_000, file_scope=["src/m.py"])])
    run = local(g, name=name, heartbeat_ms=100)
    run.add_agent("w1", kind_options={"step_every_s": 10, **kind_options})
    run.start_all()
    return run


def fault_events(run: LocalRun, fault: str) -> list[dict]:
    return [e for e in run.events("w1") if e["type"] == "log" and e["data"].get("fault") == fault]


def test_fault_fail_fails_the_task_with_its_reason_and_drops_the_edits(local):
    run = single(local, "fail", p_fail=1.0)
    assert run.wait(30) == {"w1": 0}
    t = run.tasks()["job"]
    assert t.status == "failed" and t.reason.startswith("sim: injected failure at step")
    evs = run.events("w1")
    announced = fault_events(run, "fail")[0]["seq"]
    failed_log = next(e["seq"] for e in evs if e["type"] == "log" and e["data"]["msg"].startswith("task job failed"))
    assert announced < failed_log
    row = [r for r in run.history(entity="task", entity_id="job") if r.to_state == "failed"]
    assert row and row[0].reason == t.reason
    assert run.git("rev-parse", "orch/r1/w1").strip() == run.base  # nothing of the failed task was kept


def test_fault_crash_exits_nonzero_mid_task(local):
    run = single(local, "crash", p_crash=1.0)
    assert run.wait(30) == {"w1": CRASH_EXIT}
    t = run.tasks()["job"]
    assert (t.status, t.owner) == ("working", "w1")  # left for the supervisor to requeue
    evs = run.events("w1")
    assert evs[-1]["type"] == "log" and evs[-1]["data"]["fault"] == "crash"  # announced, then gone
    assert not any(e["type"] == "done" for e in evs)


def test_fault_loop_repeats_the_same_step_until_killed(local):
    run = single(local, "loop", p_loop=1.0)
    wait_for(lambda: fault_events(run, "loop"))

    def repeats():
        evs = run.events("w1")
        start = fault_events(run, "loop")[0]["seq"]
        return [(e["data"]["name"], e["data"]["digest"]) for e in evs if e["type"] == "step" and e["seq"] > start]

    wait_for(lambda: len(repeats()) >= 6)
    assert len(set(repeats())) == 1
    assert run.terminate("w1") == 143
    assert run.events("w1")[-1]["data"].get("signal") == "SIGTERM"
    assert run.tasks()["job"].status == "working"


def test_fault_stall_stays_alive_and_silent(local):
    run = single(local, "stall", p_stall=1.0)
    wait_for(lambda: fault_events(run, "stall"))
    time.sleep(0.2)  # let an event that was being written land
    seen = len(run.events("w1"))
    beat = run.store.get_agent(run.run_id, "w1").last_heartbeat
    time.sleep(1.0)  # ten heartbeat periods (heartbeat_ms=100)
    assert run.procs["w1"].poll() is None  # alive ...
    assert len(run.events("w1")) == seen  # ... silent ...
    assert run.store.get_agent(run.run_id, "w1").last_heartbeat == beat  # ... and no lease renewal
    assert run.terminate("w1") == 143  # SIGTERM still ends it promptly


def test_fault_rate_limit_pauses_then_goes_on(local):
    run = single(local, "rate", p_rate_limit=1.0, retry_after_s=60)
    assert run.wait(30) == {"w1": 0}
    assert run.tasks()["job"].status == "completed"
    evs = run.events("w1")
    announce = fault_events(run, "rate_limited")[0]
    limited = next(e for e in evs if e["type"] == "rate_limited")
    assert limited["data"]["retry_after"] == pytest.approx(60 * SCALE)
    assert announce["seq"] < limited["seq"]
    after = next(e for e in evs if e["seq"] > limited["seq"] and e["type"] == "step")
    assert after["ts_ms"] - limited["ts_ms"] >= 60 * SCALE * 1000 - 5  # it did wait
    # steps and tokens as planned, and the task row carries the same usage as the events
    t = run.tasks()["job"]
    plan = make_plan(t, run.seed, 1, SCALE, SimOptions(step_every_s=10, p_rate_limit=1.0, retry_after_s=60))
    steps = [e for e in evs if e["type"] == "step"]
    assert [e["data"]["name"] for e in steps] == [s.name for s in plan.steps] and len(steps) >= 2
    tokens = [e["data"] for e in evs if e["type"] == "tokens"]
    assert sum(d["in"] for d in tokens) == t.tokens_in == sum(s.tokens[0] for s in plan.steps)
    assert sum(d["cost_usd"] for d in tokens) == pytest.approx(t.cost_usd) and t.cost_usd > 0
    started = next(e for e in evs if e["type"] == "log" and e["data"]["msg"].startswith("task job started"))
    assert steps[-1]["ts_ms"] - started["ts_ms"] >= (plan.steps[-1].at_s + plan.retry_after_s) * 1000 - 5  # spread over the duration


# ---------------------------------------------------------------------- what a real repository holds
def png_bytes(width: int = 2, height: int = 2) -> bytes:
    """A real, valid PNG image (RGB, 8 bits): signature, IHDR, IDAT, IEND with their CRCs."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def blob(run: LocalRun, rev: str, rel: str) -> bytes:
    import subprocess

    return subprocess.run(["git", "-C", str(run.repo), "cat-file", "blob", f"{rev}:{rel}"], capture_output=True, check=True).stdout


def not_edited_logs(run: LocalRun) -> list[str]:
    return [e["data"]["msg"] for e in run.events("w1") if e["type"] == "log" and "not editing" in e["data"]["msg"]]


def test_binary_and_non_utf8_files_in_scope_do_not_crash_the_task(local):
    """A real repository's PNG once failed the task with UnicodeDecodeError. The image is left
    byte for byte (a text edit would corrupt it): the edit goes to the task's own file and a log
    line says why. Non-UTF-8 text (Latin-1) is edited, its other bytes kept as they were."""
    png = png_bytes()
    latin = "caf\u00e9 = 1\r\n".encode("latin-1")
    task = Task(id="art", title="Touch the art", time_estimate_ms=60_000, file_scope=["assets/logo.png", "legacy.py"])
    run = local(TaskGraph(tasks=[task]), name="bin", files={"assets/logo.png": png, "legacy.py": latin, "README.md": "r\n"})
    run.add_agent("w1")
    run.start_all()
    assert run.wait(30) == {"w1": 0}, run.log("w1")
    t = run.tasks()["art"]
    assert t.status == "completed", t.reason
    assert blob(run, run.merged_ref, "assets/logo.png") == png
    edited = blob(run, run.merged_ref, "legacy.py")
    assert edited.startswith(latin) and b"task art: Touch the art [sim " in edited
    assert "task art: Touch the art [sim " in run.merged_text(own_file("art"))
    assert not_edited_logs(run) == [f"sim: not editing assets/logo.png: it is a binary file; edited {own_file('art')} instead"]
    done = next(r for r in run.history(entity="task", entity_id="art") if r.to_state == "completed")
    assert done.data["sim"]["not_edited"] == {"assets/logo.png": "it is a binary file"}


def test_symlink_in_scope_pointing_outside_is_not_followed(local, tmp_path):
    canary = tmp_path / "outside" / "canary.txt"
    canary.parent.mkdir()
    canary.write_text("KEEP\n")
    task = Task(id="doc", title="Docs", time_estimate_ms=60_000, file_scope=["docs/guide.md", "docs/notes.md"])
    run = local(TaskGraph(tasks=[task]), name="link", files={"README.md": "r\n", "docs/notes.md": "# notes\n"},
                symlinks={"docs/guide.md": str(canary)})
    run.add_agent("w1")
    run.start_all()
    assert run.wait(30) == {"w1": 0}, run.log("w1")
    t = run.tasks()["doc"]
    assert t.status == "completed", t.reason
    assert canary.read_text() == "KEEP\n"
    assert run.git("cat-file", "-p", f"{run.merged_ref}:docs/guide.md") == str(canary)  # the link itself, unchanged
    assert "task doc: Docs [sim " in run.merged_text("docs/notes.md")
    assert not_edited_logs(run) == [f"sim: not editing docs/guide.md: it leads out through a symbolic link; edited {own_file('doc')} instead"]


def test_editable_judges_every_kind_of_file(tmp_path):
    """What a text edit would break is refused with the reason the log gives; a name that is not
    UTF-8 arrives C-quoted (as templates from history write it) and is the file with those bytes."""
    (tmp_path / "sub").mkdir()  # a submodule as a worktree has it: an empty directory
    (tmp_path / "model.bin").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    (tmp_path / "logo.png").write_bytes(png_bytes())
    (tmp_path / "notes.txt").write_text("notes\n")
    (tmp_path / "link").symlink_to("notes.txt")
    with open(tmp_path / "huge.txt", "wb") as f:  # sparse: the size without the disk
        f.truncate(MAX_EDIT_BYTES + 1)
    (tmp_path / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"caf\xe9\n")
    why = {rel: editable(tmp_path, rel)[1] for rel in ("sub", "model.bin", "logo.png", "link", "huge.txt", "notes.txt")}
    assert why == {"sub": "it is not a regular file", "model.bin": "it is a Git LFS pointer", "logo.png": "it is a binary file",
                   "link": "it is a symbolic link", "huge.txt": "it is larger than 16 MiB", "notes.txt": None}
    # a file the task would create: judged by its name (an SVG is text)
    assert [editable(tmp_path, rel)[1] for rel in ("new/icon.png", "new/icon.svg", "new/x.py")] == [
        "it would be a binary file (by its name)", None, None]
    path, problem = editable(tmp_path, '"caf\\351.txt"')
    assert problem is None and os.fsencode(path.name) == b"caf\xe9.txt"
