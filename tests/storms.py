"""Claim storms: N processes behind one barrier, each with its own store, reporting what they got."""

from __future__ import annotations

import multiprocessing as mp
import queue
import time

JOIN_TIMEOUT_S = 120  # a hung worker fails the test instead of hanging the suite
CTX = mp.get_context("fork")  # the parent has closed its store; each child opens its own


def storm(target, url, run, procs):
    """Start ``procs`` workers ``target(url, run, agent, barrier, out)`` behind a barrier, each
    putting ``(agent, a, b)`` on ``out``; return {agent: (a, b)}."""
    barrier, out = CTX.Barrier(procs), CTX.Queue()
    ps = [CTX.Process(target=target, args=(url, run, f"w{i:02d}", barrier, out)) for i in range(procs)]
    for p in ps:
        p.start()
    results, deadline = {}, time.monotonic() + JOIN_TIMEOUT_S
    try:
        while len(results) < procs:
            agent, calls, items = out.get(timeout=max(0.1, deadline - time.monotonic()))
            results[agent] = (calls, items)
    except queue.Empty:
        raise AssertionError(f"only {len(results)}/{procs} workers reported within {JOIN_TIMEOUT_S}s") from None
    finally:
        for p in ps:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in ps), [p.exitcode for p in ps]
    return results
