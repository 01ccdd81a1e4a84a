"""A runner stops once its lease is lost (``agents.pulse.LeaseLost``, exit 3, one line on stderr):
not renewed for a whole lease (the store unreachable: its relay stopped), or renewed only after
the supervisor reaped the agent. Renewals on time, or late but before any reap, go on.

On the live PostgreSQL (a fresh schema per test, dropped at teardown). The pulse tests give the
store and the pulse one fake clock (nothing sleeps); the last test is a real runner process."""

from __future__ import annotations

import json
import signal
import socket
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

import tcprelay
from agents.events import EventWriter
from agents.pulse import LeaseLost, Pulse
from conftest import T0, make_store_url, wait_for
from coordstore import open_store
from coordstore.models import SETTLED, Agent, Run, Task, TaskGraph

LEASE, BEAT = 1000, 100


@pytest.fixture
def url(tmp_path, clock) -> str:
    """A fresh schema holding run ``r`` and agent ``w1``, its lease from T0."""
    u = make_store_url("postgresql", tmp_path / "pg")
    with open_store(u, clock=clock) as s:
        s.create_run(Run(id="r"))
        s.register_agent("r", Agent(id="w1"), lease_ms=LEASE)
    return u


def _pulse(store, tmp_path, clock) -> Pulse:
    return Pulse(store, "r", "w1", EventWriter(tmp_path / "ev", "w1", clock=clock), BEAT, LEASE, clock=clock)


def _events(tmp_path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "ev").iterdir())]


def test_renewals_on_time_or_late_before_a_reap_never_lose_the_lease(tmp_path, clock, url):
    with open_store(url, clock=clock) as store:
        pulse = _pulse(store, tmp_path, clock)
        pulse.sleep(30.0)  # thirty leases, renewed every beat
        assert clock.now == T0 + 30_000 and store.get_agent("r", "w1").lease_expires == clock.now + LEASE
        assert store.reap_expired("r") == [] and store.get_agent("r", "w1").status not in SETTLED
        clock.advance(5 * LEASE)  # a long step without beats; the supervisor has not reaped it: it goes on
        pulse.beat()
        a = store.get_agent("r", "w1")
        assert a.status not in SETTLED and a.lease_expires == clock.now + LEASE
        pulse.sleep(2.0)
    assert not [e for e in _events(tmp_path) if e["type"] == "error"]


def test_a_lease_not_renewed_for_a_whole_lease_is_lost(tmp_path, clock, url):
    pg = urlsplit(url)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    relay = tcprelay.start("127.0.0.1", port, pg.hostname, pg.port or 5432)
    user = pg.netloc.rsplit("@", 1)[0] + "@" if "@" in pg.netloc else ""
    try:
        with open_store(urlunsplit(pg._replace(netloc=f"{user}127.0.0.1:{port}")), clock=clock) as store:
            pulse = _pulse(store, tmp_path, clock)
            pulse.beat(force=True)
            assert store.get_agent("r", "w1").lease_expires == T0 + LEASE
            relay.kill()  # the store unreachable: every renewal fails from now on
            relay.wait()
            pulse.sleep((LEASE - BEAT) / 1000)  # failed renewals within the lease: it goes on
            failed = [e for e in _events(tmp_path) if e["type"] == "error"]
            assert len(failed) == LEASE // BEAT - 1 and all("heartbeat failed" in e["data"]["msg"] for e in failed)
            with pytest.raises(LeaseLost, match=rf"not renewed for {LEASE} ms \(lease {LEASE} ms\)"):
                pulse.sleep(10.0)
            assert clock.now == T0 + LEASE  # the first beat a whole lease after the last renewal
    finally:
        relay.kill()
        relay.wait()


def test_a_renewal_after_the_agent_was_reaped_is_a_lost_lease(tmp_path, clock, url):
    with open_store(url, clock=clock) as store:
        pulse = _pulse(store, tmp_path, clock)
        pulse.beat(force=True)
        clock.advance(LEASE)  # the lease's last ms: the reap leaves it
        assert store.reap_expired("r") == [] and store.get_agent("r", "w1").status not in SETTLED
        clock.advance(1)  # past it, without a beat: the supervisor reaps it
        store.reap_expired("r")
        assert store.get_agent("r", "w1").status == "dead"
        with pytest.raises(LeaseLost, match=rf"renewed after {LEASE + 1} ms, the agent is dead meanwhile"):
            pulse.beat()
        assert store.get_agent("r", "w1").status == "dead"  # the late renewal revived nothing


def test_a_reaped_runner_process_exits_3_with_one_line(local, tmp_path):
    """A real runner (push policy, no coordinator: it waits, beating) is stopped (SIGSTOP) for more
    than its lease and reaped meanwhile; continued, its next renewal finds it dead: exit 3."""
    run = local(TaskGraph(tasks=[Task(id="job")]), store=make_store_url("postgresql", tmp_path / "pg"),
                heartbeat_ms=200, lease_ms=LEASE)
    run.add_agent("w1", policy="push")
    p = run.start("w1")
    try:
        wait_for(lambda: any(e["type"] == "heartbeat" for e in run.events("w1")))
        p.send_signal(signal.SIGSTOP)
        time.sleep(LEASE / 1000 + 0.3)
        run.store.reap_expired("r1")  # the database's clock, as the runner's store has it
        assert run.store.get_agent("r1", "w1").status == "dead"
        p.send_signal(signal.SIGCONT)
        assert p.wait(timeout=10) == 3
    finally:
        p.send_signal(signal.SIGCONT)
    lines = run.log("w1").strip().splitlines()  # its stdout and stderr
    assert len(lines) == 1 and lines[0].startswith("orch runner w1: lease lost: renewed after "), lines
    assert lines[0].endswith("ms, the agent is dead meanwhile; exiting")
    last = run.events("w1")[-1]
    assert last["type"] == "error" and "lease lost" in last["data"]["msg"]
    assert run.tasks()["job"].status == "pending"
