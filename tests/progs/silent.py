"""Test agent: emits started, then sleeps forever (alive and silent: a stall).

usage: silent.py EVENTS_DIR AGENT [--task T] [--ignore-term]
"""

import argparse
import signal
import sys
import time

from agents.events import EventWriter


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("events_dir")
    ap.add_argument("agent")
    ap.add_argument("--task", default=None)
    ap.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM (only SIGKILL stops it)")
    a = ap.parse_args()
    if a.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    w = EventWriter(a.events_dir, a.agent)
    w.started(task=a.task, kind="silent")
    print(f"{a.agent}: started, now silent", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
