"""Test agent: emits started and a step, then dies mid-task with a non-zero exit (no done event).

usage: crash.py EVENTS_DIR AGENT [--task T] [--code C] [--delay S] [--signal]
"""

import argparse
import os
import signal
import sys
import time

from agents.events import EventWriter


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("events_dir")
    ap.add_argument("agent")
    ap.add_argument("--task", default=None)
    ap.add_argument("--code", type=int, default=3, help="exit code of the crash")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before crashing")
    ap.add_argument("--signal", action="store_true", help="die by SIGSEGV instead of exiting")
    a = ap.parse_args()
    w = EventWriter(a.events_dir, a.agent)
    w.started(task=a.task, kind="crash")
    w.step("edit", {"file": "main.py"}, task=a.task)
    time.sleep(a.delay)
    print(f"{a.agent}: simulated crash", file=sys.stderr, flush=True)
    if a.signal:
        os.kill(os.getpid(), signal.SIGSEGV)
    os._exit(a.code)  # no cleanup, no done event: like a real crash


if __name__ == "__main__":
    sys.exit(main())
