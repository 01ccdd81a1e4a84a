"""``wait_for_change``: an idle waiter wakes on a transition another process commits, well before its
timeout, sleeps through commits that are no transition (heartbeats), and a lost wake-up (PostgreSQL's
NOTIFY) costs one timeout, after which a look finds the change. Real stores, real processes."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from coordstore import open_store
from coordstore.models import Agent, Run

from conftest import make_graph, make_store_url

FORK = mp.get_context("fork")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    u = make_store_url(request.param, tmp_path / request.param)
    with open_store(u) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", make_graph(["a", "b"]))
        s.register_agent("r", Agent(id="w", kind="sim"), lease_ms=60_000)
    return u


def _later(url: str, delay_s: float, what: str) -> None:
    time.sleep(delay_s)
    with open_store(url) as s:
        if what == "cancel":
            s.cancel("r", "a", reason="test", by="test")
        else:
            for _ in range(5):
                s.heartbeat("r", "w", 60_000)


def _in_other_process(url: str, delay_s: float, what: str):
    p = FORK.Process(target=_later, args=(url, delay_s, what))
    p.start()
    return p


def test_a_waiter_wakes_on_another_process_commit_well_before_its_timeout(url):
    with open_store(url) as s:
        assert s.wait_for_change("r", 5_000) is True  # the first call: nothing seen yet
        t0 = time.monotonic()
        assert s.wait_for_change("r", 300) is False  # nothing happened: the whole timeout
        assert time.monotonic() - t0 >= 0.29
        p = _in_other_process(url, 0.3, "cancel")
        t0 = time.monotonic()
        woke = s.wait_for_change("r", 20_000)
        waited = time.monotonic() - t0
        p.join(10)
        assert woke is True and waited < 5.0, waited
        assert s.get_task("r", "a").status == "cancelled"  # the look after it sees the change


def test_commits_that_are_no_transition_do_not_wake_a_waiter(url):
    with open_store(url) as s:
        s.wait_for_change("r", 0)
        p = _in_other_process(url, 0.05, "heartbeats")
        t0 = time.monotonic()
        woke = s.wait_for_change("r", 1_500)
        p.join(10)
        assert woke is False and time.monotonic() - t0 >= 1.4


def test_a_change_committed_between_two_waits_ends_the_next_wait_at_once(url):
    with open_store(url) as s:
        s.wait_for_change("r", 0)
        with open_store(url) as other:
            other.cancel("r", "b", reason="test", by="test")
        t0 = time.monotonic()
        assert s.wait_for_change("r", 10_000) is True
        assert time.monotonic() - t0 < 2.0
        assert s.wait_for_change("r", 200) is False  # that one change is reported once


def test_a_lost_notification_costs_one_timeout_then_a_look_finds_the_change(tmp_path):
    url = make_store_url("postgresql", tmp_path / "pg")
    with open_store(url) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", make_graph(["a"]))
        s.wait_for_change("r", 0)  # LISTENs from now on
        from coordstore import pg_wake

        s._conn().raw.execute(f"UNLISTEN {pg_wake.channel(s.schema, 'r')}")  # the wake-up will be lost
        p = _in_other_process(url, 0.05, "cancel")
        t0 = time.monotonic()
        woke = s.wait_for_change("r", 800)
        p.join(10)
        assert woke is False and time.monotonic() - t0 >= 0.75  # polled at the timeout, not hung
        assert s.get_task("r", "a").status == "cancelled"


def test_a_rolled_back_change_sends_no_notification(tmp_path):
    url = make_store_url("postgresql", tmp_path / "pg")
    with open_store(url) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", make_graph(["a"]))
        s.wait_for_change("r", 0)
        with open_store(url) as other:
            with pytest.raises(Exception):
                other.cancel("r", "nope", reason="test", by="test")  # refused: nothing committed
        assert s.wait_for_change("r", 300) is False
