"""The file backend under real processes: eight processes claiming behind a barrier, an instance
inherited through fork, a writer SIGKILLed mid-run losing nothing it acknowledged."""

from __future__ import annotations

import os
import signal
import time

from coordstore.filestore import FileStore
from coordstore.models import Run

from filestore_helpers import FORK, flat_graph, url_of


def _claimer(url, barrier, out, agent):
    with FileStore(url) as s:
        barrier.wait()
        got, attempts = [], 0
        while True:
            attempts += 1
            t = s.claim_next("r", agent)
            if t is None:
                break
            got.append((t.id, t.owner, t.attempt))
        out.put((agent, got, attempts))


def _storm(url: str, procs: int, target=_claimer, ctx=FORK):
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=target, args=(url, barrier, out, f"w{i}")) for i in range(procs)]
    for p in ps:
        p.start()
    results = [out.get(timeout=60) for _ in ps]
    for p in ps:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results


def test_eight_processes_claim_500_tasks_each_exactly_once(tmp_path):
    url = url_of(tmp_path)
    with FileStore(url) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", flat_graph(500))
    results = _storm(url, 8)
    claimed = [tid for _, got, _ in results for tid, _, _ in got]
    assert len(claimed) == 500 and len(set(claimed)) == 500
    assert all(owner == agent and attempt == 1 for agent, got, _ in results for _, owner, attempt in got)
    with FileStore(url) as s:
        tasks = s.list_tasks("r")
        assert all(t.status == "assigned" and t.attempt == 1 for t in tasks)
        assert {t.id: t.owner for t in tasks} == {tid: a for a, got, _ in results for tid, _, _ in got}
        claims = s.history("r", entity="claim")
        won = [c for c in claims if c.to_state == "won"]
        assert len(won) == 500 and len({c.entity_id for c in won}) == 500
        assert len(claims) == sum(n for _, _, n in results)  # every attempt left a row (won or empty)
        seqs = [h.seq for h in s.history("r")]
        assert seqs == list(range(1, len(seqs) + 1))


_inherited: FileStore | None = None


def _claimer_with_inherited_instance(url, barrier, out, agent):
    barrier.wait()
    got, attempts = [], 0
    while (t := _inherited.claim_next("r", agent)) is not None:
        attempts += 1
        got.append((t.id, t.owner, t.attempt))
    out.put((agent, got, attempts + 1))


def test_instance_inherited_through_fork_still_excludes(tmp_path):
    """A forked child shares the parent's lock file description; it must reopen its own."""
    global _inherited
    _inherited = FileStore(url_of(tmp_path))
    _inherited.create_run(Run(id="r"))
    _inherited.add_graph("r", flat_graph(200))
    try:
        results = _storm(url_of(tmp_path), 4, target=_claimer_with_inherited_instance)
    finally:
        _inherited.close()
    claimed = [tid for _, got, _ in results for tid, _, _ in got]
    assert len(claimed) == 200 and len(set(claimed)) == 200


def _worker(url, conn, agent):
    """Claim, start, complete until nothing is left; report each completion once it returned. The
    short pause keeps the workers busy long enough for the victim to be killed mid-loop even when
    the reader is slow (a loaded machine)."""
    with FileStore(url) as s:
        while (t := s.claim_next("r", agent)) is not None:
            s.start("r", t.id, agent, t.attempt)
            s.complete("r", t.id, agent, t.attempt, data={"by": agent})
            conn.send(t.id)
            time.sleep(0.002)
    conn.send(None)


def _drain(conn, acked: set, limit: int | None = None) -> bool:
    """Add what ``conn`` reports to ``acked`` (up to ``limit`` items): False once the worker is done."""
    while limit is None or limit > 0:
        try:
            tid = conn.recv()
        except EOFError:
            return False
        if tid is None:
            return False
        acked.add(tid)
        if limit is not None:
            limit -= 1
    return True


def test_sigkilled_writer_loses_nothing_acknowledged(tmp_path):
    url = url_of(tmp_path)
    n = 600
    with FileStore(url) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", flat_graph(n))
    pipes, procs = [], []
    try:
        for i in range(3):
            recv, send = FORK.Pipe(duplex=False)
            p = FORK.Process(target=_worker, args=(url, send, f"w{i}"))
            p.start()
            send.close()
            pipes.append(recv)
            procs.append(p)
        acked: set = set()
        assert _drain(pipes[0], acked, 20), "the victim finished before it could be killed"
        os.kill(procs[0].pid, signal.SIGKILL)  # in the middle of its loop
        for r, p in zip(pipes, procs):
            _drain(r, acked)
            p.join(timeout=30)
    finally:  # a failed assertion must not leave the workers behind as zombies for later tests
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=30)
    assert procs[0].exitcode == -signal.SIGKILL
    with FileStore(url) as s:
        done = {t.id for t in s.list_tasks("r", status="completed")}
        assert acked <= done
        # the victim may have left one claimed task behind; nothing else is unaccounted for
        left = s.list_tasks("r", status=["assigned", "working", "pending"])
        assert all(t.owner == "w0" for t in left) and len(left) <= 1
        seqs = [h.seq for h in s.history("r")]
        assert seqs == list(range(1, len(seqs) + 1))
        for t in left:  # the store goes on: the orphan is requeued and finished by another agent
            s.requeue("r", t.id, "owner killed")
            c = s.claim("r", t.id, "w9")
            s.complete("r", c.id, "w9", c.attempt)
        assert len(s.list_tasks("r", status="completed")) == n
