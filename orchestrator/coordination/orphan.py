"""A server whose orchestrator died stops once nobody needs it.

Runners outlive a killed orchestrator (a resume re-attaches them), so its coordination server must
serve them on; but when nobody resumes, nothing would ever stop it. It watches the orchestrator
that started it (``--parent-pid``) and stops itself (SIGTERM to itself: uvicorn's graceful stop)
once that process is gone and the run is over: every task ended, or the run no longer running.
"""

from __future__ import annotations

import os
import signal
import threading

import psutil

from coordstore.models import TERMINAL

CHECK_S = 2.0


def watch(ctx, parent_pid: int, check_s: float = CHECK_S) -> threading.Thread:
    """Start the watch in a daemon thread (it dies with the process)."""
    try:
        born = psutil.Process(parent_pid).create_time()
    except psutil.Error:
        born = None  # already gone: the run decides alone

    def parent_alive() -> bool:
        if born is None:
            return False
        try:
            return psutil.Process(parent_pid).create_time() == born  # not a reused pid
        except psutil.Error:
            return False

    def run_over() -> bool:
        if ctx.store.get_run(ctx.run_id).status != "running":
            return True
        _, status = ctx.look()
        return all(s in TERMINAL for s in status.values())

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(check_s):
            try:
                if not parent_alive() and run_over():
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
            except Exception:  # a store busy or briefly unreadable: look again next time
                continue

    t = threading.Thread(target=loop, name="orch-mcp-orphan-watch", daemon=True)
    t.start()
    return t
